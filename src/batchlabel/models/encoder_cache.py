"""Derived encoder files (ONNX exports, int8 quantisations, static distillations) built once and cached.

A derived model is keyed by the digest of the files of the model it comes from (plus the recipe), and lives
beside that model (``<model dir>/.batchlabel/<kind>-<digest>``) when the directory is writable, else under
``$BATCHLABEL_CACHE`` (default ~/.cache/batchlabel). Several actors may ask at once: one builds under an
exclusive file lock into a temporary directory that is renamed into place when complete, so a reader never
sees a half-written model, and the others wait and reuse it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from batchlabel.io.storage import node_lock

CACHE_DIR_NAME = ".batchlabel"


def model_digest(model_dir: str | Path) -> str:
    """sha256 over the model's files (relative path + content), the derived-model cache excluded."""
    root = Path(model_dir)
    sha = hashlib.sha256()
    for file in sorted(root.rglob("*")):
        relative = file.relative_to(root)
        if not file.is_file() or relative.parts[0] == CACHE_DIR_NAME:
            continue
        sha.update(relative.as_posix().encode() + b"\0")
        with open(file, "rb") as handle:
            while chunk := handle.read(1 << 22):
                sha.update(chunk)
    return sha.hexdigest()[:16]


def cache_dir_for(model_dir: str | Path) -> Path:
    """Where derived models of ``model_dir`` go: beside it if writable, else the user cache."""
    beside = Path(model_dir) / CACHE_DIR_NAME
    if os.access(beside if beside.exists() else Path(model_dir), os.W_OK):
        return beside
    return Path(os.environ.get("BATCHLABEL_CACHE", Path.home() / ".cache" / "batchlabel")) / "derived"


def build_once(target: Path, build: Callable[[Path], None]) -> Path:
    """``target`` if it exists; else ``build(tmp_dir)`` under an exclusive lock, then rename tmp_dir -> target."""
    if target.is_dir():
        return target
    with node_lock(target):
        if target.is_dir():  # built by another process while we waited
            return target
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f"{target.name}.tmp-"))
        try:
            build(tmp)
            tmp.chmod(0o755)  # mkdtemp makes it private; the model is for every user of the encoder
            os.rename(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target
