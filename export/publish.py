"""Write a bundle so that it is whole or absent: stage it in a temp dir beside its destination, hash its files
into the manifest, check that it reads back, rename it into place."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from distilrt.bundle import MANIFEST_NAME, read_bundle
from distilrt.files import replace_dir, sha256_file, write_json
from distilrt.manifest import Manifest


def write_manifest(bundle_dir: Path, manifest: Mapping[str, Any], files: list[str] | None = None) -> Manifest:
    """Record the sha256 of ``files`` (default: the files the manifest names) and write manifest.json (itself via
    a temp file and rename). Returns the manifest as read back, i.e. exactly what a reader of the bundle sees."""
    files = Manifest(manifest).listed_files if files is None else files
    data = {**manifest, "files": {name: sha256_file(bundle_dir / name) for name in files}}
    write_json(bundle_dir / MANIFEST_NAME, data)
    return Manifest(json.loads((bundle_dir / MANIFEST_NAME).read_text(encoding="utf-8")))


def finish_bundle(staging: Path, destination: Path, manifest: Mapping[str, Any], report: dict,
                  summary: dict) -> Manifest:
    """Write report.json and the final manifest (with every file's hash), then publish; return the manifest."""
    draft = Manifest(manifest)
    write_json(staging / "report.json", {"checkpoint": draft.source.id, "variant": draft.variant, "passed": True,
                                         **report})
    final = write_manifest(staging, {**manifest, "verification": summary}, draft.listed_files + ["report.json"])
    publish(staging, destination)
    return final


def publish(staging: Path, destination: Path) -> Path:
    """Check the staged bundle reads back, then move it into place, replacing an older bundle there."""
    read_bundle(staging)
    return replace_dir(staging, destination)
