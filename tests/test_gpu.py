"""Tests that need a GPU. Each checks up front what it needs and skips, saying what is missing, elsewhere:
- CUDA memory handling with cuda-python, as the TensorRT backend does it (a CUDA GPU and cuda-python);
- the onnxruntime-gpu backend against the CPU backend (onnxruntime-gpu's CUDA provider);
- the engine stage end to end: build, verify, gate, publish, load (full TensorRT and a GPU).
"""

from __future__ import annotations

import numpy as np
import pytest

import distilrt
from distilrt.errors import BackendError, CapabilityError

pytestmark = pytest.mark.gpu  # each test also skips with the reason where no GPU (or TensorRT) is present


def _cudart_with_gpu():
    try:
        from distilrt.backends.tensorrt import gpu_record, import_cudart

        cudart = import_cudart()
        gpu_record(cudart)
    except (CapabilityError, BackendError) as e:
        pytest.skip(f"needs a CUDA GPU and cuda-python: {e}")
    return cudart


def _ort_cuda_provider():
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        pytest.skip(f"needs onnxruntime-gpu's CUDAExecutionProvider; onnxruntime {onnxruntime.__version__} offers "
                    f"{onnxruntime.get_available_providers()}")


def _full_tensorrt():
    from distilrt.export.engines.builder import build_machine

    try:
        return build_machine()
    except CapabilityError as e:
        pytest.skip(f"needs full TensorRT and a GPU: {e}")


def test_machine_record_names_the_gpu():
    _cudart_with_gpu()
    from distilrt.backends.tensorrt import machine_record

    record = machine_record()
    if record["runtime_module"] is None:
        pytest.skip("needs tensorrt or tensorrt-lean")
    assert record["gpu"]["name"] and record["gpu"]["compute_capability"].count(".") == 1


def test_device_buffers_round_trip_on_one_stream():
    """The backend's CUDA path: cudaMalloc, async copies on its stream from and to numpy memory, cudaFree."""
    cudart = _cudart_with_gpu()
    from distilrt.backends.tensorrt import _cuda

    stream = _cuda(cudart, cudart.cudaStreamCreate(), "cudaStreamCreate")
    host = np.arange(2 * 384, dtype=np.int64).reshape(2, 384)
    back = np.zeros_like(host)
    pointer = _cuda(cudart, cudart.cudaMalloc(host.nbytes), "cudaMalloc")
    try:
        _cuda(cudart, cudart.cudaMemcpyAsync(pointer, host.ctypes.data, host.nbytes,
                                             cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, stream), "H2D")
        _cuda(cudart, cudart.cudaMemcpyAsync(back.ctypes.data, pointer, back.nbytes,
                                             cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream), "D2H")
        _cuda(cudart, cudart.cudaStreamSynchronize(stream), "cudaStreamSynchronize")
    finally:
        cudart.cudaFree(pointer)
        cudart.cudaStreamDestroy(stream)
    np.testing.assert_array_equal(back, host)
    assert int(stream) != 0  # the handle TensorRT's execute_async_v3 takes


def test_onnxruntime_gpu_backend_matches_the_cpu_backend(tiny_bundles):
    _ort_cuda_provider()
    for name, build in tiny_bundles.items():
        gpu = distilrt.load(build.bundle, backend="onnxruntime-gpu")
        cpu = distilrt.load(build.bundle)
        assert gpu.backend == "onnxruntime-gpu"
        if build.manifest.task == "question-answering":
            kwargs = {"question": "Who wrote it?", "context": "It was written by Ada Lovelace in 1843."}
            got, expected = gpu(**kwargs), cpu(**kwargs)
            assert got["answer"] == expected["answer"], name
            assert abs(got["score"] - expected["score"]) < 1e-3, name
        else:
            text = f"Paris is the {build.manifest.tokenizer_settings.mask_token} of France."
            assert [p["token"] for p in gpu(text)] == [p["token"] for p in cpu(text)], name


def test_engines_are_built_verified_published_and_run(tiny_variant_builds, tmp_path):
    _full_tensorrt()
    from conftest import small_variant_options

    from distilrt.export.config import ENGINE_SOURCES, EngineConfig
    from distilrt.export.engines.stage import build_engines

    fp32, _ = tiny_variant_builds["distilbert-base-uncased-distilled-squad"]
    outcomes = build_engines(fp32, tuple(ENGINE_SOURCES), EngineConfig(version_compatible=True),
                             small_variant_options(), timing_cache_dir=tmp_path, progress=print)
    for outcome in outcomes:
        assert outcome.published, outcome.reason
        head = distilrt.load(outcome.bundle)
        assert head.backend in ("tensorrt", "tensorrt_lean")
        answer = head(question="Who wrote it?", context="It was written by Ada Lovelace in 1843.")
        assert set(answer) == {"score", "start", "end", "answer"}
        assert distilrt.read_bundle(outcome.bundle).manifest.engine["timing_cache"]["key"]
    assert list(tmp_path.glob("timing-*.cache")), "the timing cache was not kept"
