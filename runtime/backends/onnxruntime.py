"""ONNX Runtime backend (CPU provider by default)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from distilrt.errors import BackendError, CapabilityError, UserInputError


class OnnxRuntimeModel:
    name = "onnxruntime"

    def __init__(self, session):
        self._session = session
        self.input_names = tuple(i.name for i in session.get_inputs())
        self.output_names = tuple(o.name for o in session.get_outputs())

    def run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = set(self.input_names) - set(feed)
        if missing:
            raise UserInputError(
                f"model inputs {sorted(missing)} were not given; the model takes {list(self.input_names)}"
            )
        inputs = {name: np.ascontiguousarray(feed[name], dtype=np.int64) for name in self.input_names}
        try:
            outputs = self._session.run(list(self.output_names), inputs)
        except Exception as e:  # onnxruntime raises its own untyped exceptions
            shapes = {k: v.shape for k, v in inputs.items()}
            raise BackendError(f"onnxruntime failed to run the model on inputs of shapes {shapes}: {e}") from e
        return dict(zip(self.output_names, outputs))


def open_model(
    path: Path,
    *,
    providers: Sequence[str] = ("CPUExecutionProvider",),
    intra_op_num_threads: int | None = None,
) -> OnnxRuntimeModel:
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise CapabilityError(
            "the onnxruntime backend needs onnxruntime: pip install onnxruntime (or distilrt[ort])"
        ) from e
    options = ort.SessionOptions()
    if intra_op_num_threads is not None:
        options.intra_op_num_threads = intra_op_num_threads
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=list(providers))
    except Exception as e:
        raise BackendError(f"onnxruntime could not load {path}: {e}") from e
    return OnnxRuntimeModel(session)
