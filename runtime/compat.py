"""Can this machine run that engine? The rules, as a pure function of two records.

An engine bundle's manifest records what the engine was built with (``Manifest.engine``); the TensorRT
backend reports what this machine has (``distilrt.backends.tensorrt.machine_record()``). Loading refuses an
engine this machine cannot run, with both sides named, instead of letting TensorRT fail to deserialize it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Compute capability from which HardwareCompatibilityLevel.AMPERE_PLUS engines run.
_AMPERE = (8, 0)


def engine_problems(engine: Mapping[str, Any], machine: Mapping[str, Any]) -> list[str]:
    """Why this machine cannot run the engine; empty when it can.

    ``engine``: the manifest's engine record (tensorrt_version, gpu {name, compute_capability},
    version_compatible, exclude_lean_runtime, hardware_compatibility).
    ``machine``: {tensorrt_version, runtime_module, gpu {name, compute_capability} or None, gpu_problem}.
    """
    if machine.get("runtime_module") is None:
        return ["TensorRT is not installed: pip install tensorrt-lean (runs engines) with cuda-python, "
                "or use fallback='onnx'"]
    problems = []
    built, running = engine["tensorrt_version"], machine["tensorrt_version"]
    module = machine["runtime_module"]
    if not _version_runs(built, running, engine["version_compatible"]):
        rule = ("a version-compatible engine runs with the TensorRT that built it or a later release of the same "
                "major version (and 10.x engines on 11.x)" if engine["version_compatible"] else
                "an engine runs only with the exact TensorRT version that built it (build it with "
                "version_compatible=True to run it on later versions)")
        problems.append(f"it was built with TensorRT {built} and this machine has {module} {running}; {rule}")
    if module == "tensorrt_lean" and not engine["version_compatible"]:
        problems.append("the lean runtime (tensorrt_lean) runs only version-compatible engines; rebuild it with "
                        "version_compatible=True, or install full TensorRT and load with backend='tensorrt'")
    if engine.get("exclude_lean_runtime") and module != "tensorrt_lean":
        # Full TensorRT would need IRuntime.load_runtime(path to libnvinfer_lean) for such a plan; the lean
        # module is the runtime itself.
        problems.append("its plan leaves the lean runtime out, so it runs with the lean runtime: pip install "
                        "tensorrt-lean and load with backend='tensorrt_lean'")
    gpu = machine.get("gpu")
    if gpu is None:
        problems.append(f"this machine has no usable CUDA GPU ({machine.get('gpu_problem') or 'none found'})")
        return problems
    built_gpu = engine["gpu"]
    if not _gpu_runs(engine["hardware_compatibility"], built_gpu["compute_capability"], gpu["compute_capability"]):
        rule = ("hardware_compatibility 'ampere_plus' engines run on compute capability 8.0 and newer"
                if engine["hardware_compatibility"] == "ampere_plus"
                else "an engine runs only on GPUs of the compute capability it was built on")
        problems.append(f"it was built on {built_gpu['name']} (compute capability {built_gpu['compute_capability']}) "
                        f"and this GPU is {gpu['name']} (compute capability {gpu['compute_capability']}); {rule}")
    return problems


def _release(version: str) -> tuple[int, ...]:
    """The numeric parts of a TensorRT version string ("11.4.0.106" → (11, 4, 0, 106)); () if unreadable."""
    try:
        return tuple(int(part) for part in str(version).split("."))
    except ValueError:
        return ()


def _version_runs(built: str, running: str, version_compatible: bool) -> bool:
    """TensorRT 11 engine compatibility: by default the same version down to the build number; a
    version-compatible plan runs on the same or a later release of its major version, and 10.x plans on 11.x."""
    built_release, running_release = _release(built), _release(running)
    if not built_release or not running_release:
        return False
    if not version_compatible:
        return running_release == built_release
    same_major = running_release[0] == built_release[0] and running_release >= built_release
    return same_major or (built_release[0], running_release[0]) == (10, 11)


def _capability(text: str) -> tuple[int, int]:
    major, _, minor = str(text).partition(".")
    return int(major), int(minor or 0)


def _gpu_runs(hardware_compatibility: str, built: str, running: str) -> bool:
    if hardware_compatibility == "ampere_plus":
        return _capability(running) >= _AMPERE
    return _capability(running) == _capability(built)
