"""Write a bundle so that it is whole or absent: stage it in a temp dir beside its destination, rename it in."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from distilrt.bundle import MANIFEST_NAME, read_bundle, sha256_file


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


def bundle_files(manifest: dict) -> list[str]:
    """The files a manifest names: the model, the ONNX kept beside an engine (its fallback), the tokenizer."""
    fallback = manifest.get("fallback")
    return [manifest["model"]["file"], *([fallback["file"]] if fallback else []), manifest["tokenizer"]["file"]]


def write_manifest(bundle_dir: Path, manifest: dict, files: list[str]) -> dict:
    """Record every file's sha256 and write manifest.json (itself via a temp file and rename).

    Returns the manifest as read back, i.e. exactly what a reader of the bundle sees."""
    manifest = {**manifest, "files": {name: sha256_file(bundle_dir / name) for name in files}}
    write_json(bundle_dir / MANIFEST_NAME, manifest)
    return json.loads((bundle_dir / MANIFEST_NAME).read_text(encoding="utf-8"))


def write_json(path: Path, data) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=_jsonable) + "\n", encoding="utf-8")
    tmp.replace(path)


def _jsonable(value):
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def publish(staging: Path, destination: Path) -> Path:
    """Check the staged bundle reads back, then move it into place, replacing an older bundle there."""
    read_bundle(staging)
    return replace_dir(staging, destination)


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
