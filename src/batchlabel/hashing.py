"""Stable short hashes of what decides a labeler's results."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def stable_hash(value: Any, length: int = 16) -> str:
    """SHA-256 of a JSON-serialisable value with sorted keys, hex, truncated."""
    blob = json.dumps(value, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def text_hash(text: str | None) -> str | None:
    """Hash of an input text (used by nightly runs to find changed articles)."""
    if text is None:
        return None
    return hashlib.blake2b(text.encode("utf-8", errors="replace"), digest_size=12).hexdigest()
