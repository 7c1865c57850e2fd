"""Files and directories that are whole or absent: staged in a temp dir or file beside their destination,
then renamed into place (a rename on one filesystem is atomic). Bundles, reports and JSON results use these."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextmanager
def staging_dir(destination: Path) -> Iterator[Path]:
    """A temp dir on the destination's filesystem (so the final rename is atomic), removed unless published."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}-staging-", dir=destination.parent))
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)  # mkdtemp makes it private; what is published is an ordinary directory
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def replace_dir(staging: Path, destination: Path) -> Path:
    """Move a staged directory into place; an older one there is moved aside first and removed after."""
    retired = None
    if destination.exists():
        retired = destination.with_name(f".{destination.name}-retired-{staging.name}")
        destination.rename(retired)
    staging.rename(destination)
    if retired is not None:
        shutil.rmtree(retired, ignore_errors=True)
    return destination


def write_json(path: Path, data) -> None:
    """Write JSON via a temp file and a rename, so a reader never sees half of it."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=_jsonable) + "\n", encoding="utf-8")
    tmp.replace(path)


def _jsonable(value):
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Mapping):  # a Manifest, or another read-only mapping
        return dict(value)
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def cache_dir(*parts: str) -> Path:
    """distilrt's cache (timing caches, fetched real weights): $DISTILRT_CACHE_DIR, else ~/.cache/distilrt."""
    return Path(os.environ.get("DISTILRT_CACHE_DIR", Path.home() / ".cache" / "distilrt")).joinpath(*parts)
