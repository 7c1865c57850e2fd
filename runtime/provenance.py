"""What a result was made with and on: package versions and the machine, recorded in manifests and benchmarks."""

from __future__ import annotations

import os
import platform
from pathlib import Path

_BUILD_TOOLS = ("distilrt", "torch", "transformers", "onnx", "onnxruntime", "tokenizers", "numpy")


def package_version(package: str) -> str | None:
    """The installed version of a distribution, or None where it is not installed."""
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def tool_versions() -> dict[str, str | None]:
    """Python and the versions of the packages a build or a benchmark depends on."""
    return {"python": platform.python_version(), **{package: package_version(package) for package in _BUILD_TOOLS}}


def host_record() -> dict:
    """The CPU machine a benchmark ran on (the GPU and TensorRT side: ``distilrt.backends.tensorrt``)."""
    return {"platform": platform.platform(), "python": platform.python_version(), "cpu": _cpu_model(),
            "cpu_isa": cpu_isa(),
            "cores": os.cpu_count(),
            "cores_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "memory_gb": _total_memory_gb(),
            # Other work on the machine changes latencies; the load at the start says whether there was some.
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}


# The x86 instruction-set levels ONNX Runtime's MLAS picks its GEMM kernels by, best first: floating-point
# results differ in the last bits between them, and int8 results more (u8 x s8 without VNNI saturates in int16).
_X86_KERNEL_LEVELS = (("amx", {"amx_int8", "amx_tile"}), ("avx512_vnni", {"avx512f", "avx512bw", "avx512_vnni"}),
                      ("avx512", {"avx512f", "avx512bw", "avx512dq", "avx512vl"}), ("avx_vnni", {"avx2", "avx_vnni"}),
                      ("avx2", {"avx2", "fma"}))


def cpu_isa() -> str:
    """The CPU kernel family a build computed with: an x86 level from ``_X86_KERNEL_LEVELS``, else the machine."""
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    for level, needed in _X86_KERNEL_LEVELS:
        if needed <= flags:
            return level
    return platform.machine() or "unknown"


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _total_memory_gb() -> float | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (AttributeError, ValueError, OSError):
        return None
