"""Read a bundle and check it against its manifest: schema, files and their sha256.

A bundle is a directory: manifest.json (the contract between build and run), the model file, tokenizer.json
and report.json. Everything the runtime needs to run it correctly is in the manifest.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distilrt.errors import BundleError
from distilrt.tokenize import TokenizerSettings

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
TASKS = ("question-answering", "fill-mask")
_REQUIRED_KEYS = ("schema_version", "task", "architecture", "variant", "source", "model", "tokenizer", "files")
_REBUILD = "rebuild it with `distilrt build`"


@dataclass(frozen=True)
class Bundle:
    path: Path
    manifest: dict[str, Any]

    @property
    def task(self) -> str:
        return self.manifest["task"]

    @property
    def variant(self) -> str:
        return self.manifest["variant"]

    @property
    def model_path(self) -> Path:
        return self.path / self.manifest["model"]["file"]

    @property
    def tokenizer_path(self) -> Path:
        return self.path / self.manifest["tokenizer"]["file"]

    @property
    def tokenizer_settings(self) -> TokenizerSettings:
        return TokenizerSettings.from_dict(self.manifest["tokenizer"]["settings"])

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(i["name"] for i in self.manifest["model"]["inputs"])

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(o["name"] for o in self.manifest["model"]["outputs"])


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_bundle(path: str | Path, *, check_hashes: bool = True) -> Bundle:
    """Open a bundle directory; raise BundleError naming exactly what is missing, altered or unreadable."""
    path = Path(path)
    if not path.is_dir():
        raise BundleError(f"bundle {path} does not exist or is not a directory; build one with `distilrt build`")
    manifest = _read_manifest(path / MANIFEST_NAME)
    _check_manifest(path, manifest)
    for name, expected in manifest["files"].items():
        _check_file(path, name, expected, check_hashes)
    return Bundle(path, manifest)


def _read_manifest(manifest_path: Path) -> dict[str, Any]:
    if not manifest_path.is_file():
        raise BundleError(f"{manifest_path} is missing: {manifest_path.parent} is not a complete bundle; {_REBUILD}")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleError(f"{manifest_path} is not valid JSON ({e}); {_REBUILD}") from e
    if not isinstance(manifest, dict):
        raise BundleError(f"{manifest_path} must hold a JSON object; {_REBUILD}")
    return manifest


def _check_manifest(path: Path, manifest: dict[str, Any]) -> None:
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise BundleError(
            f"bundle {path} has manifest schema {version!r} but this distilrt reads schema {SCHEMA_VERSION}; "
            f"{_REBUILD} with this version of distilrt"
        )
    missing = [k for k in _REQUIRED_KEYS if k not in manifest]
    if missing:
        raise BundleError(f"manifest of {path} lacks {missing}; {_REBUILD}")
    if manifest["task"] not in TASKS:
        raise BundleError(f"manifest of {path} names task {manifest['task']!r}; this runtime runs {list(TASKS)}")
    for role in ("model", "tokenizer"):
        name = manifest[role].get("file")
        if name not in manifest["files"]:
            raise BundleError(f"manifest of {path} names {role} file {name!r} but lists no hash for it; {_REBUILD}")


def _check_file(path: Path, name: str, expected_sha256: str, check_hashes: bool) -> None:
    file_path = path / name
    if not file_path.is_file():
        raise BundleError(f"bundle {path} is missing {name} (listed in its manifest); {_REBUILD}")
    if check_hashes:
        actual = sha256_file(file_path)
        if actual != expected_sha256:
            raise BundleError(
                f"{file_path} was altered after the bundle was built: sha256 {actual[:12]}… but the manifest "
                f"records {expected_sha256[:12]}…; restore the file or {_REBUILD}"
            )
