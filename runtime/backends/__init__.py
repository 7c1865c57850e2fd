"""Inference backends. Each is imported lazily, so only the one a bundle is loaded with must be installed."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Mapping, Protocol

import numpy as np

from distilrt.errors import UnsupportedError


class Backend(Protocol):
    """What the task heads need from a backend: named numpy arrays in, named numpy arrays out."""

    name: str
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]

    def run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...


# backend name -> module under distilrt.backends that defines ``open_model(path, **options)``
_BACKEND_MODULES = {"onnxruntime": "onnxruntime"}


def supported_backends() -> tuple[str, ...]:
    return tuple(_BACKEND_MODULES)


def open_backend(name: str, model_path: Path, **options) -> Backend:
    if name not in _BACKEND_MODULES:
        raise UnsupportedError(
            f"unknown backend {name!r}; supported backends: {', '.join(supported_backends())}"
        )
    module = importlib.import_module(f"distilrt.backends.{_BACKEND_MODULES[name]}")
    return module.open_model(Path(model_path), **options)
