"""ONNX Runtime backends: ``onnxruntime`` (CPU provider by default) and ``onnxruntime-gpu`` (CUDA provider).

onnxruntime and onnxruntime-gpu install the same ``onnxruntime`` module and cannot share an environment; the
GPU backend checks that the module it finds has the CUDA provider and that the session really uses it.

Threads: ``intra_op_num_threads`` not given means one per physical core this process may use
(``distilrt.host.default_threads``), set explicitly, so that the count is known and recorded (``run_settings``);
ONNX Runtime's own default (0) sizes the pool by its own rules and reports 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from distilrt.backends import Closable
from distilrt.errors import BackendError, CapabilityError, UserInputError
from distilrt.host import Threads, resolve_threads

CUDA_PROVIDER = "CUDAExecutionProvider"


class OnnxRuntimeModel(Closable):
    def __init__(self, session, name: str = "onnxruntime", threads: Threads | None = None):
        self.name = name
        self._session = session
        self.threads = threads  # the intra-op thread count the session was opened with, and where it came from
        self.input_names = tuple(i.name for i in session.get_inputs())
        self.output_names = tuple(o.name for o in session.get_outputs())

    def run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = set(self.input_names) - set(feed)
        if missing:
            raise UserInputError(
                f"model inputs {sorted(missing)} were not given; the model takes {list(self.input_names)}"
            )
        if self._session is None:
            raise BackendError(f"this {self.name} model was closed; load the bundle again to run it")
        inputs = {name: np.ascontiguousarray(feed[name], dtype=np.int64) for name in self.input_names}
        try:
            outputs = self._session.run(list(self.output_names), inputs)
        except Exception as e:  # onnxruntime raises its own untyped exceptions
            shapes = {k: v.shape for k, v in inputs.items()}
            raise BackendError(f"onnxruntime failed to run the model on inputs of shapes {shapes}: {e}") from e
        return dict(zip(self.output_names, outputs))

    @property
    def run_settings(self) -> dict:
        """What this model runs with, for manifests and benchmark records."""
        return {"backend": self.name, **({} if self.threads is None else
                                        {"intra_op_num_threads": self.threads.count,
                                         "threads_source": self.threads.source})}

    def close(self) -> None:
        """Release the session (ONNX Runtime frees its memory when the last reference goes)."""
        self._session = None


def open_model(
    path: Path,
    *,
    providers: Sequence[str] = ("CPUExecutionProvider",),
    intra_op_num_threads: int | None = None,
) -> OnnxRuntimeModel:
    """The model on ONNX Runtime; ``intra_op_num_threads`` None: one per physical core (module docstring)."""
    ort = _import_onnxruntime("pip install onnxruntime (or distilrt[ort])")
    threads = resolve_threads(intra_op_num_threads, name="intra_op_num_threads")
    return OnnxRuntimeModel(_session(ort, path, list(providers), threads), threads=threads)


def open_gpu_model(path: Path, *, device_id: int = 0, intra_op_num_threads: int | None = None) -> OnnxRuntimeModel:
    """The model on onnxruntime-gpu's CUDA provider (ONNX Runtime places the few ops CUDA lacks on the CPU)."""
    ort = _import_onnxruntime("pip install onnxruntime-gpu (or distilrt[gpu]) in an environment without onnxruntime")
    if CUDA_PROVIDER not in ort.get_available_providers():
        raise CapabilityError(
            f"the onnxruntime-gpu backend needs ONNX Runtime's {CUDA_PROVIDER}, and the installed onnxruntime "
            f"{ort.__version__} offers {ort.get_available_providers()}: pip uninstall onnxruntime, then pip install "
            "onnxruntime-gpu")
    threads = resolve_threads(intra_op_num_threads, name="intra_op_num_threads")  # for the ops left on the CPU
    session = _session(ort, path, [(CUDA_PROVIDER, {"device_id": device_id}), "CPUExecutionProvider"], threads)
    if session.get_providers()[0] != CUDA_PROVIDER:
        # ONNX Runtime falls back to the CPU with only a logged warning when CUDA or cuDNN fails to load.
        raise CapabilityError(f"onnxruntime could not start its {CUDA_PROVIDER} on device {device_id} (no GPU, or "
                              "CUDA/cuDNN libraries missing); the session would run on the CPU")
    return OnnxRuntimeModel(session, name="onnxruntime-gpu", threads=threads)



def _import_onnxruntime(install_hint: str):
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise CapabilityError(f"this backend needs ONNX Runtime: {install_hint}") from e
    return ort


def _session(ort, path: Path, providers: list, threads: Threads):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads.count
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as e:  # onnxruntime raises its own untyped exceptions
        raise BackendError(f"onnxruntime could not load {path}: {e}") from e
