"""Build a TensorRT engine from an ONNX file: the only module that touches TensorRT's builder.

Thin on purpose. Full TensorRT cannot be installed where distilrt is built and tested, so nothing here can run
in CI: every decision is made in settings.builder_settings (plain data, tested exhaustively) and this
module turns each field into one builder call. The calls were checked against the TensorRT 11 Python API
documentation; docs/tensorrt.md lists the pages.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from distilrt.backends.tensorrt import error_collecting_logger, gpu_record, import_cudart
from distilrt.errors import BackendError, CapabilityError, ExportError
from distilrt.export.engines.settings import BuilderSettings, timing_cache_key
from distilrt.files import cache_dir

DEFAULT_TIMING_CACHE_DIR = cache_dir("tensorrt")


@dataclass(frozen=True)
class BuildMachine:
    """Full TensorRT and the GPU an engine is built on."""

    tensorrt: object  # the tensorrt module
    gpu: dict  # {"name", "compute_capability"}

    @property
    def version(self) -> str:
        return self.tensorrt.__version__

    def timing_cache_path(self, cache_dir: Path) -> Path:
        key = timing_cache_key(self.version, self.gpu["name"], self.gpu["compute_capability"])
        return Path(cache_dir) / f"timing-{key}.cache"


def build_machine(device: int = 0) -> BuildMachine:
    """Full TensorRT (tensorrt_lean has no builder and no ONNX parser) and a CUDA GPU, or CapabilityError
    saying which is missing."""
    try:
        import tensorrt as trt
    except ImportError as e:
        raise CapabilityError("building engines needs full TensorRT (the `tensorrt` module with its builder and ONNX "
                              "parser), which is not installed; tensorrt_lean only runs engines. Install TensorRT "
                              "from NVIDIA on a GPU machine and run `distilrt engine` there") from e
    if not hasattr(trt, "Builder"):
        raise CapabilityError(f"the installed tensorrt module ({getattr(trt, '__file__', '?')}) has no Builder; "
                              "building engines needs full TensorRT")
    try:
        gpu = gpu_record(import_cudart(), device)
    except BackendError as e:
        raise CapabilityError(f"building engines needs a CUDA GPU: {e}") from e
    return BuildMachine(trt, gpu)


def build_plan(machine: BuildMachine, onnx_path: Path, settings: BuilderSettings,
               timing_cache: Path | None) -> tuple[bytes, dict]:
    """Parse ``onnx_path`` as a strongly typed network, build it with ``settings``; return the serialized plan
    and what the build used (timing cache reuse). ExportError with TensorRT's own messages on failure."""
    trt = machine.tensorrt
    logger = error_collecting_logger(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(_strongly_typed_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise ExportError(f"TensorRT {machine.version}'s ONNX parser rejected {onnx_path}: {'; '.join(errors)}")

    config = builder.create_builder_config()
    for flag in settings.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    for flag in settings.cleared_builder_flags:
        config.clear_flag(getattr(trt.BuilderFlag, flag))
    config.hardware_compatibility_level = getattr(trt.HardwareCompatibilityLevel,
                                                  settings.hardware_compatibility_level)
    config.builder_optimization_level = settings.builder_optimization_level
    for pool, limit in settings.memory_pool_limits.items():
        config.set_memory_pool_limit(getattr(trt.MemoryPoolType, pool), limit)
    for index, shapes in enumerate(settings.profiles):
        profile = builder.create_optimization_profile()
        for name, (low, opt, high) in shapes.items():
            profile.set_shape(name, low, opt, high)
        if config.add_optimization_profile(profile) < 0:  # -1: TensorRT found the profile invalid
            raise ExportError(f"TensorRT rejected optimization profile {index} {dict(shapes)}: "
                              f"{'; '.join(logger.errors) or 'no error was logged'}")

    reused = timing_cache is not None and timing_cache.is_file()
    if timing_cache is not None:
        cache = config.create_timing_cache(timing_cache.read_bytes() if reused else b"")
        if not config.set_timing_cache(cache, ignore_mismatch=False):
            # A cache from another GPU or TensorRT version is refused (its timings would mislead the
            # builder): start an empty one, which replaces the file after the build.
            reused = False
            cache = config.create_timing_cache(b"")
            config.set_timing_cache(cache, ignore_mismatch=False)

    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise ExportError(f"TensorRT {machine.version} failed to build an engine from {onnx_path}: "
                          f"{'; '.join(logger.errors) or 'no error was logged'}")
    if timing_cache is not None:
        _write_atomically(timing_cache, bytes(config.get_timing_cache().serialize()))
    return bytes(plan), {"timing_cache_reused": reused}


def _strongly_typed_flags(trt) -> int:
    """Network creation flags for a strongly typed network: the ONNX's own types decide every precision.

    TensorRT 11 networks are always strongly typed and STRONGLY_TYPED is deprecated and ignored (Builder page,
    https://docs.nvidia.com/deeplearning/tensorrt/11.0.0/_static/python-api/infer/Core/Builder.html);
    EXPLICIT_BATCH no longer exists. TensorRT 10 needs the flag, so it is set where the enum has it.
    """
    flag = getattr(getattr(trt, "NetworkDefinitionCreationFlag", None), "STRONGLY_TYPED", None)
    return 0 if flag is None else 1 << int(flag)


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
