"""Local and s3:// storage through pyarrow filesystems (``pyarrow.fs``: LocalFileSystem, S3FileSystem).

Credentials come only from the standard AWS environment variables (or an instance role); the
endpoint from the spec's `storage.endpoint_url`, else ``$AWS_ENDPOINT_URL``.
"""

from __future__ import annotations

import os
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator
from urllib.parse import urlparse

import pyarrow.fs as pafs

from batchlabel.config import StorageSpec


def is_remote(url: str) -> bool:
    return url.startswith("s3://")


def join(base: str, *parts: str) -> str:
    """Join path parts for both local paths and URLs."""
    out = base.rstrip("/")
    for part in parts:
        out = f"{out}/{part.strip('/')}"
    return out


@dataclass(frozen=True)
class StorageSettings:
    """Picklable settings from which each process builds its own filesystem."""

    endpoint_url: str | None = None
    region: str | None = None

    @classmethod
    def from_spec(cls, spec: StorageSpec | None) -> "StorageSettings":
        spec = spec or StorageSpec()
        return cls(endpoint_url=spec.endpoint_url, region=spec.region)

    def resolved_endpoint(self) -> str | None:
        return self.endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")

    def s3(self) -> pafs.S3FileSystem:
        kwargs: dict = {
            "region": self.region or os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION") or "us-east-1",
            "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=8),
            "connect_timeout": 10,
            "request_timeout": 60,
        }
        endpoint = self.resolved_endpoint()
        if endpoint:
            parsed = urlparse(endpoint)
            kwargs["endpoint_override"] = parsed.netloc or parsed.path
            kwargs["scheme"] = parsed.scheme or "https"
            kwargs["allow_bucket_creation"] = False
        return pafs.S3FileSystem(**kwargs)

    def resolve(self, url: str) -> tuple[pafs.FileSystem, str]:
        """Return (filesystem, path inside it) for a local path or s3:// URL."""
        if is_remote(url):
            return self.s3(), url[len("s3://") :].rstrip("/")
        return pafs.LocalFileSystem(), str(Path(url).expanduser().absolute())

    # --- small helpers used by the sink, the report and the model store ---

    def exists(self, url: str) -> bool:
        fs, path = self.resolve(url)
        return fs.get_file_info(path).type != pafs.FileType.NotFound

    def is_dir(self, url: str) -> bool:
        fs, path = self.resolve(url)
        return fs.get_file_info(path).type == pafs.FileType.Directory

    def read_bytes(self, url: str, attempts: int = 4) -> bytes:
        """Read a whole object; a read shorter than the object's size is retried, never returned."""
        fs, path = self.resolve(url)
        got = size = 0
        for attempt in range(attempts):
            with fs.open_input_file(path) as handle:
                size = handle.size()
                data = handle.read()
            got = len(data)
            if got == size:
                return data
            time.sleep(0.2 * 2**attempt)
        raise OSError(f"short read of {url}: got {got} of {size} bytes after {attempts} attempts")

    def write_bytes(self, url: str, data: bytes) -> None:
        """Write a whole object atomically: a single PUT on S3, write-then-rename locally."""
        fs, path = self.resolve(url)
        if is_remote(url):
            # verify the stored size: a write that "succeeds" with missing data must not pass silently
            for attempt in range(4):
                with fs.open_output_stream(path) as stream:
                    stream.write(data)
                if fs.get_file_info(path).size == len(data):
                    return
                time.sleep(0.2 * 2**attempt)
            raise OSError(f"write of {url} did not persist {len(data)} bytes (size check failed 4 times)")
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, target)

    def list_files(self, url: str, recursive: bool = False) -> list[str]:
        """Files directly (or recursively) under a directory URL, as URLs, sorted."""
        fs, path = self.resolve(url)
        info = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True, recursive=recursive))
        prefix = "s3://" if is_remote(url) else ""
        return sorted(prefix + item.path for item in info if item.type == pafs.FileType.File)

    def delete(self, url: str) -> None:
        fs, path = self.resolve(url)
        kind = fs.get_file_info(path).type
        if kind == pafs.FileType.Directory:
            fs.delete_dir(path)
        elif kind == pafs.FileType.File:
            fs.delete_file(path)

    def download_dir(self, url: str, local_dir: Path) -> Path:
        """Copy every object under an s3:// prefix into ``local_dir`` (skipping files already there)."""
        fs, path = self.resolve(url)
        info = fs.get_file_info(pafs.FileSelector(path, allow_not_found=False, recursive=True))
        for item in info:
            if item.type != pafs.FileType.File:
                continue
            rel = item.path[len(path) :].lstrip("/")
            target = local_dir / rel
            if target.exists() and target.stat().st_size == item.size:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
            with fs.open_input_stream(item.path) as src, open(tmp, "wb") as dst:
                while chunk := src.read(1 << 22):
                    dst.write(chunk)
            os.replace(tmp, target)
        return local_dir

    def upload_dir(self, local_dir: Path, url: str) -> None:
        """Copy a local directory tree to a URL (local or s3://)."""
        for file in sorted(local_dir.rglob("*")):
            if file.is_file():
                self.write_bytes(join(url, file.relative_to(local_dir).as_posix()), file.read_bytes())


@contextmanager
def node_lock(target: Path) -> Iterator[None]:
    """Hold the exclusive lock of ``target`` (``<target>.lock`` beside it): one process of this node at a time."""
    import fcntl

    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f"{target.name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def local_model_dir(reference: str, settings: StorageSettings, cache_root: Path | None = None) -> str:
    """Turn a model reference into something ``from_pretrained`` can load.

    s3:// prefixes are downloaded into a local cache (``$BATCHLABEL_CACHE`` or ~/.cache/batchlabel), once per
    node: the download holds the directory's lock (``node_lock``, as encoder_cache.build_once), so actors that start
    together wait for the first one and then find every file there (same size: skipped, nothing fetched).
    Local paths and hub ids are returned unchanged.
    """
    if not is_remote(reference):
        return reference
    import hashlib

    root = cache_root or Path(os.environ.get("BATCHLABEL_CACHE", Path.home() / ".cache" / "batchlabel"))
    target = root / "models" / hashlib.sha256(reference.encode()).hexdigest()[:16]
    with node_lock(target):
        settings.download_dir(reference, target)
    return str(target)
