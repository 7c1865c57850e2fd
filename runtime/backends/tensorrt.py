"""TensorRT backend: runs a serialized engine (model.plan) with ``tensorrt`` or ``tensorrt_lean`` and cuda-python.

No torch and no polygraphy at run time. Device buffers are allocated once per optimization profile, sized for
its largest shapes, and one CUDA stream serves every run. Capability is checked before TensorRT is touched:
the TensorRT module, cuda-python, then a CUDA device (TensorRT's Runtime, created without a usable GPU, logs
an error and leaves an object that crashes the interpreter at exit).

TensorRT API used (the names-based I/O API of TensorRT 10, kept in 11; checked against the TensorRT 11 Python
API reference, see the notes in docs/tensorrt.md): Runtime, Runtime.engine_host_code_allowed,
Runtime.deserialize_cuda_engine, ICudaEngine.num_io_tensors / get_tensor_name / get_tensor_mode /
get_tensor_dtype / num_optimization_profiles / get_tensor_profile_shape / create_execution_context,
IExecutionContext.set_optimization_profile_async / set_input_shape / set_tensor_address / get_tensor_shape /
execute_async_v3, nptype.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from distilrt.backends import Closable
from distilrt.errors import BackendError, CapabilityError, UserInputError

RUNTIME_MODULES = ("tensorrt", "tensorrt_lean")
Shape = tuple[int, ...]
ProfileRange = tuple[Shape, Shape, Shape]  # min, opt, max


def import_tensorrt(module: str = "auto"):
    """(module, name): the full TensorRT runtime if present, else the lean one; or the one asked for."""
    names = RUNTIME_MODULES if module == "auto" else (module,)
    if module != "auto" and module not in RUNTIME_MODULES:
        raise UserInputError(f"TensorRT module must be one of {', '.join(RUNTIME_MODULES)} or 'auto', got {module!r}")
    for name in names:
        try:
            return importlib.import_module(name), name
        except ImportError:
            continue
    raise CapabilityError(f"the TensorRT backend needs {' or '.join(names)}: pip install tensorrt-lean cuda-python "
                          "(or distilrt[trt]); to run the bundle's ONNX instead, load it with fallback='onnx'")


def import_cudart():
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError as e:
            raise CapabilityError("the TensorRT backend needs cuda-python for device memory: pip install "
                                  "cuda-python (or distilrt[trt])") from e
    return cudart


def _cuda(cudart, result, what: str):
    """cuda-python returns (error, value...); turn an error into BackendError naming the call."""
    error, *values = result if isinstance(result, tuple) else (result,)
    if error != cudart.cudaError_t.cudaSuccess:
        _, text = cudart.cudaGetErrorString(error)
        raise BackendError(f"CUDA {what} failed: {error.name if hasattr(error, 'name') else error} "
                           f"({text.decode() if isinstance(text, bytes) else text})")
    return values[0] if len(values) == 1 else tuple(values)


def gpu_record(cudart, device: int = 0) -> dict:
    """Name and compute capability of CUDA device ``device``; CapabilityError when there is none."""
    error, count = cudart.cudaGetDeviceCount()
    if error != cudart.cudaError_t.cudaSuccess:
        raise CapabilityError(f"no usable CUDA GPU: cudaGetDeviceCount returned {getattr(error, 'name', error)} "
                              "(no GPU, or no NVIDIA driver recent enough for this CUDA runtime)")
    if not 0 <= device < count:
        raise CapabilityError(f"CUDA device {device} does not exist; this machine has {count} GPU(s)")
    properties = _cuda(cudart, cudart.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    name = properties.name.decode(errors="replace").rstrip("\x00") if isinstance(properties.name, bytes) \
        else str(properties.name)
    return {"name": name, "compute_capability": f"{properties.major}.{properties.minor}"}


def machine_record(module: str = "auto", device: int = 0) -> dict:
    """What this machine offers for running engines; never raises (compat.engine_problems reads it)."""
    record = {"runtime_module": None, "tensorrt_version": None, "gpu": None, "gpu_problem": None}
    try:
        trt, name = import_tensorrt(module)
    except CapabilityError:
        return record
    record.update(runtime_module=name, tensorrt_version=trt.__version__)
    try:
        record["gpu"] = gpu_record(import_cudart(), device)
    except (CapabilityError, BackendError) as e:
        record["gpu_problem"] = str(e)
    return record


def choose_profile(profiles: Sequence[Mapping[str, ProfileRange]], shapes: Mapping[str, Shape]) -> int:
    """The first optimization profile whose ranges hold every input's shape; UserInputError naming the ranges
    when none does."""
    for index, profile in enumerate(profiles):
        if all(_within(shapes[name], profile[name]) for name in shapes):
            return index
    ranges = "; ".join(
        f"profile {i}: " + ", ".join(f"{name} {list(low)}..{list(high)}" for name, (low, _, high) in p.items())
        for i, p in enumerate(profiles))
    given = ", ".join(f"{name} {list(shape)}" for name, shape in shapes.items())
    raise UserInputError(f"input shapes {given} are outside every optimization profile of this engine ({ranges}); "
                         "use a smaller batch_size or rebuild the engine with a larger profile")


def _within(shape: Shape, profile_range: ProfileRange) -> bool:
    low, _, high = profile_range
    return len(shape) == len(low) and all(lo <= n <= hi for n, lo, hi in zip(shape, low, high))


@dataclass
class _ProfileState:
    context: object
    buffers: dict  # tensor name -> device pointer (int)
    capacity: dict  # tensor name -> bytes allocated


class TensorRTModel(Closable):
    def __init__(self, trt, cudart, engine, module_name: str):
        self.name = module_name
        self._trt, self._cudart, self._engine = trt, cudart, engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        is_input = {n: engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self.input_names = tuple(n for n in names if is_input[n])
        self.output_names = tuple(n for n in names if not is_input[n])
        self._dtypes = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in names}
        self.profiles = tuple(
            {n: tuple(tuple(int(d) for d in dims) for dims in engine.get_tensor_profile_shape(n, index))
             for n in self.input_names}
            for index in range(engine.num_optimization_profiles))
        self._stream = _cuda(cudart, cudart.cudaStreamCreate(), "cudaStreamCreate")
        self._states: dict[int, _ProfileState] = {}

    def run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = set(self.input_names) - set(feed)
        if missing:
            raise UserInputError(
                f"model inputs {sorted(missing)} were not given; the model takes {list(self.input_names)}")
        arrays = {n: np.ascontiguousarray(feed[n], dtype=self._dtypes[n]) for n in self.input_names}
        state = self._profile_state(choose_profile(self.profiles, {n: a.shape for n, a in arrays.items()}))
        for name, array in arrays.items():
            if not state.context.set_input_shape(name, array.shape):
                raise BackendError(f"TensorRT refused input shape {array.shape} for {name}")
            self._copy(state.buffers[name], array.ctypes.data, array.nbytes, "HostToDevice")
        if not state.context.execute_async_v3(self._stream_handle):
            raise BackendError(f"TensorRT failed to run the engine on inputs of shapes "
                               f"{ {n: a.shape for n, a in arrays.items()} }")
        outputs = {}
        for name in self.output_names:
            host = np.empty(tuple(state.context.get_tensor_shape(name)), dtype=self._dtypes[name])
            self._copy(host.ctypes.data, state.buffers[name], host.nbytes, "DeviceToHost")
            outputs[name] = host
        _cuda(self._cudart, self._cudart.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
        return {name: outputs[name].astype(np.float32, copy=False) for name in self.output_names}

    @property
    def _stream_handle(self) -> int:
        return int(self._stream)

    def _copy(self, destination: int, source: int, nbytes: int, direction: str) -> None:
        kind = getattr(self._cudart.cudaMemcpyKind, f"cudaMemcpy{direction}")
        _cuda(self._cudart, self._cudart.cudaMemcpyAsync(destination, source, nbytes, kind, self._stream),
              f"cudaMemcpyAsync ({direction})")

    def _profile_state(self, index: int) -> _ProfileState:
        """One execution context per optimization profile, with device buffers for the profile's largest shapes,
        made on first use and kept."""
        if index in self._states:
            return self._states[index]
        context = self._engine.create_execution_context()
        if context is None:
            raise BackendError("TensorRT could not create an execution context (out of GPU memory?)")
        if not context.set_optimization_profile_async(index, self._stream_handle):
            raise BackendError(f"TensorRT could not select optimization profile {index}")
        largest = {n: self.profiles[index][n][2] for n in self.input_names}
        for name, shape in largest.items():
            context.set_input_shape(name, shape)
        sizes = {n: int(np.prod(largest[n])) * self._dtypes[n].itemsize for n in self.input_names}
        sizes.update({n: int(np.prod(tuple(context.get_tensor_shape(n)))) * self._dtypes[n].itemsize
                      for n in self.output_names})
        state = _ProfileState(context, {}, sizes)
        self._states[index] = state  # registered first, so close() frees whatever was allocated
        for name, nbytes in sizes.items():
            state.buffers[name] = _cuda(self._cudart, self._cudart.cudaMalloc(nbytes), f"cudaMalloc({nbytes})")
            context.set_tensor_address(name, int(state.buffers[name]))
        return state

    def close(self) -> None:
        """Free the device buffers and the stream (also done when the model is garbage collected)."""
        cudart = self._cudart
        for state in self._states.values():
            for pointer in state.buffers.values():
                cudart.cudaFree(pointer)
        self._states.clear()
        if self._stream is not None:
            cudart.cudaStreamDestroy(self._stream)
            self._stream = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: the CUDA module may already be gone
            pass


def open_model(path: Path, *, module: str = "auto", device: int = 0,
               engine_host_code_allowed: bool = False) -> TensorRTModel:
    """Deserialize the engine at ``path``. ``engine_host_code_allowed`` is needed for version-compatible plans,
    which carry the lean runtime as host code (distilrt.load sets it from the manifest)."""
    trt, module_name = import_tensorrt(module)
    cudart = import_cudart()
    gpu_record(cudart, device)  # before any TensorRT object: without a GPU, TensorRT's Runtime is unusable
    _cuda(cudart, cudart.cudaSetDevice(device), f"cudaSetDevice({device})")
    logger = error_collecting_logger(trt)
    runtime = trt.Runtime(logger)
    runtime.engine_host_code_allowed = engine_host_code_allowed
    engine = runtime.deserialize_cuda_engine(Path(path).read_bytes())
    if engine is None:
        raise BackendError(f"{module_name} {trt.__version__} could not deserialize {path}: "
                           f"{'; '.join(logger.errors) or 'no error was logged'}")
    model = TensorRTModel(trt, cudart, engine, module_name)
    model._keep_alive = (runtime, logger)  # the engine must not outlive its runtime
    return model


def error_collecting_logger(trt):
    """A TensorRT logger that keeps error messages, so a failure can say why."""

    class ErrorCollectingLogger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity, message):
            if severity in (trt.ILogger.Severity.ERROR, trt.ILogger.Severity.INTERNAL_ERROR):
                self.errors.append(message)

    return ErrorCollectingLogger()
