"""Inference backends. Each is imported lazily, so only the one a bundle is loaded with must be installed."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import numpy as np

from distilrt.errors import CapabilityError, IncompatibleEngineError, UnsupportedError, UserInputError
from distilrt.manifest import ENGINE_FORMAT


class Backend(Protocol):
    """What the task heads need from a backend: named numpy arrays in, named numpy arrays out."""

    name: str
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]

    def run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def close(self) -> None: ...


class Closable:
    """``with`` support for backends and the heads that own them: ``close()`` frees the session or the GPU
    buffers when the caller is done, instead of whenever the garbage collector gets to them."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


# backend name -> (module under distilrt.backends, its opening function, the model format it runs)
_BACKENDS = {
    "onnxruntime": ("onnxruntime", "open_model", "onnx"),
    "onnxruntime-gpu": ("onnxruntime", "open_gpu_model", "onnx"),
    "tensorrt": ("tensorrt", "open_model", "tensorrt-plan"),  # full TensorRT if installed, else tensorrt_lean
    "tensorrt_lean": ("tensorrt", "open_model", "tensorrt-plan"),
}


def supported_backends() -> tuple[str, ...]:
    return tuple(_BACKENDS)


def open_backend(name: str, model_path: Path, **options) -> Backend:
    """Open a model file with the named backend (no manifest, so no engine compatibility check)."""
    module_name, opener, _ = _backend(name)
    if name == "tensorrt_lean":
        options = {**options, "module": "tensorrt_lean"}
    module = importlib.import_module(f"distilrt.backends.{module_name}")
    return getattr(module, opener)(Path(model_path), **options)


def open_bundle_model(bundle, name: str, **options) -> Backend:
    """Open the bundle's model file that backend ``name`` runs: the engine for TensorRT, the ONNX (an engine
    bundle keeps the ONNX it was built from) for ONNX Runtime. Engines are checked against this machine
    first; an engine it cannot run raises IncompatibleEngineError saying what each side has."""
    _, _, model_format = _backend(name)
    if model_format == ENGINE_FORMAT:
        if not bundle.manifest.is_engine:
            raise UserInputError(f"{bundle.path} holds an ONNX model and backend {name!r} runs TensorRT engines; "
                                 "build an engine bundle with `distilrt engine`, or use backend='onnxruntime'")
        _check_engine_runs_here(bundle, name, options)
        options = {**options, "engine_host_code_allowed": bool(bundle.manifest.engine["version_compatible"])}
        return open_backend(name, bundle.model_path, **options)
    if bundle.onnx_path is None:
        raise UserInputError(f"{bundle.path} holds a {bundle.manifest.model_file.format} model and no ONNX to run "
                             "with ONNX Runtime")
    return open_backend(name, bundle.onnx_path, **options)


def _check_engine_runs_here(bundle, name: str, options) -> None:
    from distilrt.backends.tensorrt import machine_record
    from distilrt.compat import engine_problems

    module = "tensorrt_lean" if name == "tensorrt_lean" else options.get("module", "auto")
    machine = machine_record(module, options.get("device", 0))
    problems = engine_problems(bundle.manifest.engine, machine)
    if problems:
        raise IncompatibleEngineError(
            f"the engine in {bundle.path} cannot run on this machine: {'; '.join(problems)}. Rebuild it here with "
            "`distilrt engine`, or load with fallback='onnx' to run the bundle's ONNX", machine=machine)


def run_settings(model: Backend) -> dict:
    """What a backend model runs with (ONNX Runtime: its intra-op threads and where the count came from), for
    the manifest's ``stages.run`` and benchmark records; a backend without CPU settings gives its name only."""
    settings = getattr(model, "run_settings", None)
    return dict(settings) if settings else {"backend": model.name}


def open_onnx_fallback(bundle) -> Backend:
    """The bundle's ONNX on onnxruntime-gpu's CUDA provider where it is available, else on the CPU."""
    try:
        return open_bundle_model(bundle, "onnxruntime-gpu")
    except CapabilityError:
        return open_bundle_model(bundle, "onnxruntime")


def _backend(name: str):
    if name not in _BACKENDS:
        raise UnsupportedError(f"unknown backend {name!r}; supported backends: {', '.join(supported_backends())}")
    return _BACKENDS[name]
