"""The bundle manifest, the contract between build and run, as a typed read-only record.

manifest.json is plain JSON so that any tool can read it; inside distilrt it is read only through ``Manifest``,
whose accessors name what each part means (the model file, the ONNX the bundle holds, the engine record, the
source, the settings of each stage). A bundle made from another one (a variant from fp32, an engine from its
ONNX) gets its manifest from ``Manifest.derive``, the one place that says what a child inherits.

Schema 1 (the layout every key below reads):

    schema_version, variant, task, architecture,
    source      {id, revision, config_sha256, random_weights, stand_in?}
    model       {file, format, backend, precision, layers, attention_heads, hidden_size, vocab_size, inputs, outputs}
    fallback?   {file, format, backend}: the ONNX an engine bundle keeps beside its plan
    engine?     what a TensorRT plan was built with (distilrt.compat reads it)
    shape_profile, tokenizer {file, settings}, stages {<stage>: config; run?: what verification ran with},
    fused_ops?, calibration?,
    tools, verification, files {name: sha256}
"""

from __future__ import annotations

import copy
import json
import reprlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distilrt.bundle_paths import REBUILD_HINT
from distilrt.errors import BundleError
from distilrt.manifest_schema import check_manifest
from distilrt.tokenization import TokenizerSettings

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
TASKS = ("question-answering", "fill-mask")
ONNX_FORMAT = "onnx"
ENGINE_FORMAT = "tensorrt-plan"
REQUIRED_KEYS = ("schema_version", "task", "architecture", "variant", "source", "model", "tokenizer", "files")
# What a derived bundle does not inherit from its parent: it has its own files and its own verification.
_NOT_INHERITED = ("files", "verification")


@dataclass(frozen=True)
class ModelFile:
    """A model file of the bundle and what runs it."""

    file: str
    format: str  # "onnx" or "tensorrt-plan"
    backend: str  # the backend that runs it by default


@dataclass(frozen=True)
class Source:
    """The checkpoint a bundle was built from."""

    id: str
    revision: str | None
    config_sha256: str | None
    random_weights: bool
    stand_in: Mapping[str, Any] | None  # a RANDOM-weight stand-in's recipe (checkpoint, tiny, seed, head_scale)

    @property
    def name(self) -> str:
        """The checkpoint's name wherever it was: the last part of a hub id or a local path."""
        return Path(self.id.rstrip("/")).name


class Manifest(Mapping[str, Any]):
    """A bundle's manifest.json: read-only, with typed accessors. ``to_dict()`` gives a plain JSON copy."""

    def __init__(self, data: Mapping[str, Any]):
        self._data = dict(data)

    @classmethod
    def checked(cls, data: Any, bundle_path: Path) -> Manifest:
        """The manifest of the bundle at ``bundle_path`` after checking its schema and every field's type and range
        (distilrt.manifest_schema); BundleError naming the field and the fix."""
        where = str(Path(bundle_path) / MANIFEST_NAME)
        if not isinstance(data, Mapping):
            raise BundleError(f"{where} must hold a JSON object; {REBUILD_HINT}")
        version = data.get("schema_version")
        if isinstance(version, bool) or version != SCHEMA_VERSION:
            raise BundleError(
                f"bundle {bundle_path} has manifest schema {reprlib.repr(version)} but this distilrt reads schema "
                f"{SCHEMA_VERSION}; {REBUILD_HINT} with this version of distilrt"
            )
        missing = [k for k in REQUIRED_KEYS if k not in data]
        if missing:
            raise BundleError(f"manifest of {bundle_path} lacks {missing}; {REBUILD_HINT}")
        check_manifest(data, where)
        manifest = cls(data)
        for role, name in [("model", manifest.model_file.file), ("tokenizer", manifest.tokenizer_file)] + (
                [("fallback", manifest.fallback.file)] if manifest.fallback else []):
            if name not in manifest.files:
                raise BundleError(f"manifest of {bundle_path} names {role} file {name!r} but lists no hash for it; "
                                  f"{REBUILD_HINT}")
        return manifest

    # The Mapping protocol, so that a manifest prints, compares and serialises like the JSON it came from.
    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"Manifest(variant={self.get('variant')!r}, task={self.get('task')!r}, source={self.get('source')!r})"

    def to_dict(self) -> dict[str, Any]:
        return copy.deepcopy(self._data)

    def to_json(self) -> str:
        return json.dumps(self._data, indent=2, ensure_ascii=False)

    # What the bundle is.
    @property
    def schema_version(self):
        return self._data.get("schema_version")

    @property
    def variant(self) -> str:
        return self._data["variant"]

    @property
    def task(self) -> str:
        return self._data["task"]

    @property
    def architecture(self) -> str:
        return self._data["architecture"]

    @property
    def source(self) -> Source:
        source = self._data["source"]
        return Source(source["id"], source.get("revision"), source.get("config_sha256"),
                      bool(source.get("random_weights")), source.get("stand_in"))

    # The model and its files.
    @property
    def model(self) -> Mapping[str, Any]:
        """The model record: file, format, backend, precision, sizes, inputs and outputs."""
        return self._data["model"]

    @property
    def model_file(self) -> ModelFile:
        model = self._data["model"]
        return ModelFile(model["file"], model["format"], model["backend"])

    @property
    def fallback(self) -> ModelFile | None:
        """The ONNX an engine bundle keeps beside its plan, for machines that cannot run the engine."""
        fallback = self._data.get("fallback")
        return None if not fallback else ModelFile(fallback["file"], fallback["format"], fallback["backend"])

    @property
    def onnx_file(self) -> str | None:
        """The ONNX file this bundle holds: its model, or an engine bundle's fallback; None if it holds none."""
        if self.model_file.format == ONNX_FORMAT:
            return self.model_file.file
        fallback = self.fallback
        return fallback.file if fallback is not None and fallback.format == ONNX_FORMAT else None

    @property
    def is_engine(self) -> bool:
        return self.model_file.format == ENGINE_FORMAT

    @property
    def vocab_size(self) -> int:
        return self._data["model"]["vocab_size"]

    @property
    def layers_heads_hidden(self) -> tuple[int, int, int]:
        model = self._data["model"]
        return model["layers"], model["attention_heads"], model["hidden_size"]

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(i["name"] for i in self._data["model"]["inputs"])

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(o["name"] for o in self._data["model"]["outputs"])

    @property
    def listed_files(self) -> list[str]:
        """The files the manifest names: the model, an engine bundle's ONNX fallback, the tokenizer."""
        fallback = self.fallback
        return [self.model_file.file, *([fallback.file] if fallback else []), self.tokenizer_file]

    @property
    def files(self) -> Mapping[str, str]:
        """sha256 of every file of the bundle, by name (empty before the bundle is written)."""
        return self._data.get("files", {})

    @property
    def onnx_sha256(self) -> str:
        return self.files[self.onnx_file]

    @property
    def engine(self) -> Mapping[str, Any] | None:
        """What a TensorRT plan was built with (version, GPU, compatibility); None for ONNX bundles."""
        return self._data.get("engine")

    # Tokenizer and shapes.
    @property
    def tokenizer_file(self) -> str:
        return self._data["tokenizer"]["file"]

    @property
    def tokenizer_settings(self) -> TokenizerSettings:
        return TokenizerSettings.from_dict(self._data["tokenizer"]["settings"])

    @property
    def shape_profile(self) -> Mapping[str, int] | None:
        """min/opt/max batch and sequence (export.config.ShapeProfile's fields); None in a manifest without one."""
        return self._data.get("shape_profile")

    # How it was made and checked.
    @property
    def stages(self) -> Mapping[str, Any]:
        return self._data.get("stages", {})

    def stage(self, name: str) -> Mapping[str, Any] | None:
        """One stage's recorded config (export, verify, tolerances, fuse, precision, calibration, gate, ...)."""
        return self.stages.get(name)

    @property
    def engine_source_variant(self) -> str | None:
        """The ONNX variant an engine bundle was built from; None for ONNX bundles."""
        record = self.stage("engine_source")
        return None if record is None else record["variant"]

    @property
    def batch_invariant(self) -> bool | None:
        """Whether the build found that this bundle answers the same alone and in mixed-length batches; None in
        bundles made before it was checked (docs/design.md#batch-invariance)."""
        record = self.stage("invariance")
        return None if record is None else record["passed"]

    @property
    def run_settings(self) -> Mapping[str, Any] | None:
        """What the build's verification ran with (backend; ONNX Runtime: intra-op threads and where the count came
        from); None in bundles made before it was recorded."""
        return self.stage("run")

    @property
    def tools(self) -> Mapping[str, Any]:
        return self._data.get("tools", {})

    @property
    def verification(self) -> Mapping[str, Any] | None:
        return self._data.get("verification")

    @property
    def calibration(self) -> Mapping[str, Any] | None:
        return self._data.get("calibration")

    @property
    def fused_ops(self) -> Mapping[str, Any] | None:
        return self._data.get("fused_ops")

    def derive(self, variant: str, *, model: Mapping[str, Any] | None = None,
               stages: Mapping[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
        """The manifest of a bundle made from this one, before its files are hashed: everything but this bundle's
        files and verification, with ``variant``, the model record updated by ``model``, the stages extended by
        ``stages`` and any other top-level ``fields`` set."""
        data = {key: value for key, value in self.to_dict().items() if key not in _NOT_INHERITED}
        data["variant"] = variant
        data["model"] = {**data["model"], **(model or {})}
        data["stages"] = {**data.get("stages", {}), **(stages or {})}
        data.update(copy.deepcopy(fields))
        return data
