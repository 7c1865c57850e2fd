"""Read a bundle and check it against its manifest: schema, files and their sha256.

A bundle is a directory: manifest.json (the contract between build and run), the model file, tokenizer.json
and report.json. Everything the runtime needs to run it correctly is in the manifest.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distilrt.errors import BundleError
from distilrt.files import sha256_file
from distilrt.manifest import MANIFEST_NAME, REBUILD_HINT, SCHEMA_VERSION, TASKS, Manifest
from distilrt.tokenization import TokenizerSettings

__all__ = ["Bundle", "read_bundle", "sha256_file", "MANIFEST_NAME", "SCHEMA_VERSION", "TASKS"]


@dataclass(frozen=True)
class Bundle:
    path: Path
    manifest: Manifest

    @property
    def task(self) -> str:
        return self.manifest.task

    @property
    def variant(self) -> str:
        return self.manifest.variant

    @property
    def model_path(self) -> Path:
        return self.path / self.manifest.model_file.file

    @property
    def onnx_path(self) -> Path | None:
        """The ONNX the bundle holds (an engine bundle's fallback); None if it holds none."""
        name = self.manifest.onnx_file
        return None if name is None else self.path / name

    @property
    def tokenizer_path(self) -> Path:
        return self.path / self.manifest.tokenizer_file

    @property
    def tokenizer_settings(self) -> TokenizerSettings:
        return self.manifest.tokenizer_settings

    @property
    def input_names(self) -> tuple[str, ...]:
        return self.manifest.input_names

    @property
    def output_names(self) -> tuple[str, ...]:
        return self.manifest.output_names


def read_bundle(path: str | Path, *, check_hashes: bool = True) -> Bundle:
    """Open a bundle directory; raise BundleError naming exactly what is missing, altered or unreadable."""
    path = Path(path)
    if not path.is_dir():
        raise BundleError(f"bundle {path} does not exist or is not a directory; build one with `distilrt build`")
    manifest = _read_manifest(path / MANIFEST_NAME)
    manifest = Manifest.checked(manifest, path)
    for name, expected in manifest.files.items():
        _check_file(path, name, expected, check_hashes)
    return Bundle(path, manifest)


def _read_manifest(manifest_path: Path) -> dict[str, Any]:
    if not manifest_path.is_file():
        raise BundleError(f"{manifest_path} is missing: {manifest_path.parent} is not a complete bundle; {REBUILD_HINT}")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleError(f"{manifest_path} is not valid JSON ({e}); {REBUILD_HINT}") from e
    if not isinstance(manifest, dict):
        raise BundleError(f"{manifest_path} must hold a JSON object; {REBUILD_HINT}")
    return manifest


def _check_file(path: Path, name: str, expected_sha256: str, check_hashes: bool) -> None:
    file_path = path / name
    if not file_path.is_file():
        raise BundleError(f"bundle {path} is missing {name} (listed in its manifest); {REBUILD_HINT}")
    if check_hashes:
        actual = sha256_file(file_path)
        if actual != expected_sha256:
            raise BundleError(
                f"{file_path} was altered after the bundle was built: sha256 {actual[:12]}… but the manifest "
                f"records {expected_sha256[:12]}…; restore the file or {REBUILD_HINT}"
            )
