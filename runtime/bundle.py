"""Read a bundle and check it against its manifest: schema, files and their sha256.

A bundle is a directory: manifest.json (the contract between build and run), the model file, tokenizer.json
and report.json. Everything the runtime needs to run it correctly is in the manifest.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distilrt.bundle_paths import member_path, open_member
from distilrt.errors import BundleError
from distilrt.files import sha256_file
from distilrt.manifest import MANIFEST_NAME, REBUILD_HINT, SCHEMA_VERSION, TASKS, Manifest
from distilrt.tokenization import TokenizerSettings

# A manifest is a few KiB (an engine bundle's, with its builder settings, some tens): far below these bounds.
MAX_MANIFEST_BYTES = 1 << 20
MAX_MANIFEST_DEPTH = 32
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACKETS = re.compile(r"[\[\]{}]")

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
    """Open a bundle directory; raise BundleError naming exactly what is missing, altered, unreadable or outside it.

    The bundle is untrusted data: manifest.json is bounded in size and nesting before it is parsed, every field is
    checked for type and range, and every file it lists must resolve inside the bundle and be a regular file
    (distilrt.bundle_paths) before any of them is opened or hashed."""
    path = Path(path)
    if not path.is_dir():
        raise BundleError(f"bundle {path} does not exist or is not a directory; build one with `distilrt build`")
    manifest = Manifest.checked(_read_manifest(path), path)
    checked = {name: member_path(path, name, f"files[{name!r}]", str(path / MANIFEST_NAME))
               for name in manifest.files}
    if check_hashes:
        for name, file_path in checked.items():
            _check_hash(file_path, path / name, manifest.files[name])
    return Bundle(path, manifest)


def _read_manifest(path: Path) -> Any:
    manifest_path = path / MANIFEST_NAME
    if not manifest_path.exists():
        raise BundleError(f"{manifest_path} is missing: {path} is not a complete bundle; {REBUILD_HINT}")
    checked = member_path(path, MANIFEST_NAME, "the manifest", str(manifest_path))
    with open_member(checked) as f:
        raw = f.read(MAX_MANIFEST_BYTES + 1)
    if len(raw) > MAX_MANIFEST_BYTES:
        raise BundleError(f"{manifest_path} is larger than {MAX_MANIFEST_BYTES} bytes, far more than a manifest "
                          f"holds; {REBUILD_HINT}")
    try:
        text = raw.decode("utf-8")
        _check_nesting(text, manifest_path)
        return json.loads(text)
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError, and ints too long to convert, are ValueErrors
        raise BundleError(f"{manifest_path} is not valid JSON ({e}); {REBUILD_HINT}") from e


def _check_nesting(text: str, manifest_path: Path) -> None:
    """Refuse JSON nested deeper than MAX_MANIFEST_DEPTH before parsing it: the json module recurses per level
    (RecursionError), and schema 1 nests 6 deep."""
    depth = 0
    for bracket in _BRACKETS.findall(_STRINGS.sub('""', text)):
        depth += 1 if bracket in "[{" else -1
        if depth > MAX_MANIFEST_DEPTH:
            raise BundleError(f"{manifest_path} nests more than {MAX_MANIFEST_DEPTH} levels deep; {REBUILD_HINT}")


def _check_hash(file_path: Path, shown: Path, expected_sha256: str) -> None:
    with open_member(file_path) as f:
        actual = sha256_file(f)
    if actual != expected_sha256:
        raise BundleError(
            f"{shown} was altered after the bundle was built: sha256 {actual[:12]}… but the manifest "
            f"records {expected_sha256[:12]}…; restore the file or {REBUILD_HINT}"
        )
