"""The trained-classifier artifact: model or adapter + tokenizer + label mapping + eval report + curves.

Layout of ``train.output`` (local directory or s3:// prefix)::

    config.json, model.safetensors            (full fine-tune)   | adapter_config.json,
    tokenizer files                                               | adapter_model.safetensors (lora)
    training_log.json, training_curves.png, eval/report.{json,md,html}, eval/confusion_matrix.png
    batchlabel_classifier.json                (written last: labels, kind, base model, file digests)

A reader trusts the artifact only when the marker exists; it is deleted first when a model is rewritten.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from batchlabel.errors import BatchlabelError
from batchlabel.io.storage import StorageSettings, join
from batchlabel.models.encoder_cache import CACHE_DIR_NAME

MARKER_FILE = "batchlabel_classifier.json"
FORMAT_VERSION = 1


def file_digests(local_dir: Path) -> dict[str, str]:
    """sha256 of every file under a directory (the marker and cached ONNX exports excluded), by relative path."""
    digests = {}
    for file in sorted(local_dir.rglob("*")):
        if file.is_file() and file.name != MARKER_FILE and file.relative_to(local_dir).parts[0] != CACHE_DIR_NAME:
            sha = hashlib.sha256()
            with open(file, "rb") as handle:
                while chunk := handle.read(1 << 22):
                    sha.update(chunk)
            digests[file.relative_to(local_dir).as_posix()] = sha.hexdigest()
    return digests


def publish(local_dir: Path, output: str, storage: StorageSettings, marker: dict[str, Any]) -> None:
    """Copy ``local_dir`` to ``output`` (local or s3://), the marker (with file digests) last."""
    storage.delete(join(output, MARKER_FILE))
    marker = {**marker, "format": FORMAT_VERSION, "files": file_digests(local_dir)}
    for file in sorted(local_dir.rglob("*")):
        if file.is_file() and file.name != MARKER_FILE:
            storage.write_bytes(join(output, file.relative_to(local_dir).as_posix()), file.read_bytes())
    storage.write_bytes(join(output, MARKER_FILE), json.dumps(marker, indent=2, sort_keys=True).encode())


def read_marker(output: str, storage: StorageSettings) -> dict[str, Any]:
    """The artifact's marker, or a clear error when the directory holds no finished training run."""
    url = join(output, MARKER_FILE)
    if not storage.exists(url):
        raise BatchlabelError(
            f"No trained classifier at {output} (missing {MARKER_FILE}). Run `batchlabel train JOB.yaml` first "
            "(train.method lora or full), or set train.inline: true."
        )
    marker = json.loads(storage.read_bytes(url))
    if marker.get("format") != FORMAT_VERSION:
        raise BatchlabelError(f"The classifier at {output} has format {marker.get('format')}; retrain it.")
    return marker
