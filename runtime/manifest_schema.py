"""Type and range checks of a manifest's fields, so that a malformed manifest of any shape is a BundleError
naming the field, never a TypeError, KeyError or AttributeError somewhere in a reader.

``check_manifest`` walks every field the runtime, lint, eval, inspect, rebuild and serve read (schema 1, see
distilrt.manifest); ``Manifest.checked`` runs it, so accessors can trust what they return. Fields no reader
needs stay free (a stage record's contents are checked by its config class when a rebuild reads it). Written by
hand rather than with a schema library: the runtime stays stdlib + numpy + tokenizers.
"""

from __future__ import annotations

import re
import reprlib
from collections.abc import Mapping
from typing import Any

from distilrt.bundle_paths import REBUILD_HINT, confined_name
from distilrt.errors import BundleError

# Token ids, lengths and sizes: positive and small enough for any numpy int dtype the runtime feeds.
MAX_INT = 2**31 - 1
DTYPES = ("int64", "int32", "float32", "float16")  # what backends and serve's Triton configs map
SHAPE_PROFILE_KEYS = ("min_batch", "opt_batch", "max_batch", "min_sequence", "opt_sequence", "max_sequence")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_shown = reprlib.Repr()
_shown.maxstring = _shown.maxother = 60


def fail(field: str, expected: str, value: Any, where: str = "manifest.json") -> BundleError:
    return BundleError(f"{where}: {field} must be {expected}, got {_shown.repr(value)}; {REBUILD_HINT}")


class Fields:
    """Typed reads of one JSON object of a manifest; ``prefix`` names it in errors (``tokenizer.settings``)."""

    def __init__(self, data: Any, prefix: str, where: str = "manifest.json"):
        self.prefix, self.where = prefix, where
        if not isinstance(data, Mapping):
            raise fail(prefix or "the manifest", "a JSON object", data, where)
        self.data = data

    def name(self, key: str) -> str:
        return f"{self.prefix}.{key}" if self.prefix else key

    def value(self, key: str, optional: bool):
        if key not in self.data:
            if optional:
                return None
            raise BundleError(f"{self.where}: {self.name(key)} is missing; {REBUILD_HINT}")
        return self.data[key]

    def str(self, key: str, *, optional: bool = False, nullable: bool = False, choices=None) -> str | None:
        value = self.value(key, optional)
        if value is None and (optional or nullable):
            return None
        if not isinstance(value, str) or not value:
            raise fail(self.name(key), "a non-empty string", value, self.where)
        if choices is not None and value not in choices:
            raise fail(self.name(key), f"one of {list(choices)}", value, self.where)
        return value

    def int(self, key: str, *, minimum: int, maximum: int = MAX_INT, optional: bool = False,
            nullable: bool = False) -> int | None:
        value = self.value(key, optional)
        if value is None and (optional or nullable):
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail(self.name(key), "an integer", value, self.where)
        if not minimum <= value <= maximum:
            raise fail(self.name(key), f"an integer from {minimum} to {maximum}", value, self.where)
        return value

    def bool(self, key: str, *, optional: bool = False) -> bool | None:
        value = self.value(key, optional)
        if value is None and optional:
            return None
        if not isinstance(value, bool):
            raise fail(self.name(key), "true or false", value, self.where)
        return value

    def number(self, key: str, *, optional: bool = False):
        value = self.value(key, optional)
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise fail(self.name(key), "a number", value, self.where)
        return value

    def object(self, key: str, *, optional: bool = False) -> Fields | None:
        value = self.value(key, optional)
        if value is None and optional:
            return None
        return Fields(value, self.name(key), self.where)

    def list(self, key: str, *, optional: bool = False, nonempty: bool = False) -> list | None:
        value = self.value(key, optional)
        if value is None and optional:
            return None
        if not isinstance(value, list) or (nonempty and not value):
            raise fail(self.name(key), "a non-empty JSON list" if nonempty else "a JSON list", value, self.where)
        return value

    def file(self, key: str) -> str:
        return confined_name(self.value(key, optional=False), self.name(key), self.where)


def check_manifest(data: Any, where: str = "manifest.json") -> None:
    """BundleError naming the first field of ``data`` (a parsed manifest.json) of the wrong type or range."""
    from distilrt.manifest import ENGINE_FORMAT, ONNX_FORMAT, TASKS
    from distilrt.tokenization import TokenizerSettings

    top = Fields(data, "", where)
    top.str("variant")
    top.str("task", choices=TASKS)
    top.str("architecture")
    _check_source(top.object("source"))
    formats = (ONNX_FORMAT, ENGINE_FORMAT)
    model = top.object("model")
    _check_model_file(model, formats)
    model.str("precision", optional=True)
    for key in ("layers", "attention_heads", "hidden_size", "vocab_size"):
        model.int(key, minimum=1)  # Manifest.vocab_size and layers_heads_hidden read them
    for key in ("inputs", "outputs"):
        _check_tensors(model, key)
    fallback = top.object("fallback", optional=True)
    if fallback is not None and fallback.data:
        _check_model_file(fallback, formats)
    _check_engine(top.object("engine", optional=True))
    _check_shape_profile(top.object("shape_profile", optional=True))
    tokenizer = top.object("tokenizer")
    tokenizer.file("file")
    TokenizerSettings.from_dict(tokenizer.value("settings", optional=False), where=where)
    stages = top.object("stages", optional=True)
    for name in ({} if stages is None else stages.data):
        stages.object(name, optional=True)
    if stages is not None and stages.data.get("engine_source") is not None:
        stages.object("engine_source").str("variant")
    if stages is not None and stages.data.get("invariance") is not None:
        stages.object("invariance").bool("passed")  # Manifest.batch_invariant reads it
    for key in ("tools", "verification", "calibration", "fused_ops"):
        top.object(key, optional=True)
    files = top.object("files")
    for name, sha256 in files.data.items():
        confined_name(name, f"files[{name!r}]", where)
        if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
            raise fail(f"files[{name!r}]", "a sha256 (64 lowercase hex digits)", sha256, where)


def _check_source(source: Fields) -> None:
    source.str("id")
    source.str("revision", optional=True)
    source.str("config_sha256", optional=True)
    random_weights = source.bool("random_weights", optional=True)
    stand_in = source.object("stand_in", optional=True)
    if stand_in is not None:
        stand_in.str("checkpoint")
        stand_in.bool("tiny")
        stand_in.int("seed", minimum=0, maximum=2**32 - 1)
        stand_in.number("head_scale")
    elif random_weights:
        raise BundleError(f"{source.where}: source.random_weights is true but source.stand_in gives no recipe; "
                          f"{REBUILD_HINT}")


def _check_model_file(record: Fields, formats) -> None:
    record.file("file")
    record.str("format", choices=formats)
    record.str("backend")


def _check_tensors(model: Fields, key: str) -> None:
    names = set()
    for i, record in enumerate(model.list(key, nonempty=True)):
        tensor = Fields(record, f"{model.name(key)}[{i}]", model.where)
        name = tensor.str("name")
        if name in names:
            raise BundleError(f"{model.where}: {model.name(key)} lists {name!r} twice; {REBUILD_HINT}")
        names.add(name)
        tensor.str("dtype", choices=DTYPES)
        shape = tensor.list("shape", nonempty=True)
        if not all((isinstance(d, str) and d) or (isinstance(d, int) and not isinstance(d, bool) and 1 <= d <= MAX_INT)
                   for d in shape):
            raise fail(tensor.name("shape"), "a list of axis names and positive sizes", shape, model.where)


def _check_engine(engine: Fields | None) -> None:
    if engine is None:
        return
    engine.str("tensorrt_version")
    engine.bool("version_compatible")
    engine.bool("exclude_lean_runtime", optional=True)
    engine.str("hardware_compatibility", nullable=True)
    gpu = engine.object("gpu")
    gpu.str("name")
    capability = gpu.str("compute_capability")
    if not re.fullmatch(r"\d{1,3}(\.\d{1,3})?", capability):
        raise fail(gpu.name("compute_capability"), "a compute capability such as '9.0'", capability, engine.where)


def _check_shape_profile(profile: Fields | None) -> None:
    if profile is None:
        return
    sizes = [profile.int(key, minimum=1) for key in SHAPE_PROFILE_KEYS]
    for axis, (low, opt, high) in (("batch", sizes[:3]), ("sequence", sizes[3:])):
        if not low <= opt <= high:
            raise BundleError(f"{profile.where}: shape_profile must have min_{axis} <= opt_{axis} <= max_{axis}, "
                              f"got {low}, {opt}, {high}; {REBUILD_HINT}")
