"""Engine bundles on load, on CPU: the compatibility rules, the refusal and the ONNX fallback, the TensorRT
backend's capability checks and profile choice, and the tensorrt_lean / cuda-python API surface it uses."""

from __future__ import annotations

import ast
import inspect
import json
import shutil
import subprocess
import sys

import pytest

import distilrt
from distilrt import compat
from distilrt.backends import tensorrt as trt_backend
from distilrt.errors import CapabilityError, IncompatibleEngineError, UserInputError
from distilrt.export.publish import write_manifest
from distilrt.manifest import Manifest

H100 = {"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}
A100 = {"name": "NVIDIA A100-SXM4-80GB", "compute_capability": "8.0"}
T4 = {"name": "Tesla T4", "compute_capability": "7.5"}


def engine_record(version="11.4.0.106", gpu=H100, version_compatible=True, exclude_lean_runtime=False,
                  hardware_compatibility="none"):
    return {"tensorrt_version": version, "gpu": gpu, "version_compatible": version_compatible,
            "exclude_lean_runtime": exclude_lean_runtime, "hardware_compatibility": hardware_compatibility}


def machine(version="11.4.0.106", gpu=H100, module="tensorrt_lean", gpu_problem=None):
    return {"runtime_module": module, "tensorrt_version": version, "gpu": gpu, "gpu_problem": gpu_problem}


# --- the rules -------------------------------------------------------------------------------------------------

def test_the_machine_an_engine_was_built_for_runs_it():
    assert compat.engine_problems(engine_record(), machine()) == []
    assert compat.engine_problems(engine_record(version_compatible=False), machine(module="tensorrt")) == []


@pytest.mark.parametrize("running", ["11.4.0.107", "11.4.1.2", "11.3.0.1", "10.14.0.1"])
def test_an_engine_runs_only_with_the_exact_tensorrt_that_built_it(running):
    record = engine_record(version_compatible=False)
    (problem,) = compat.engine_problems(record, machine(version=running, module="tensorrt"))
    assert f"built with TensorRT 11.4.0.106 and this machine has tensorrt {running}" in problem
    assert "version_compatible=True" in problem


@pytest.mark.parametrize("built, running, runs", [
    ("11.4.0.106", "11.4.0.1", False), ("11.4.0.106", "11.9.2.3", True), ("11.4.0.106", "11.3.0.1", False),
    ("11.4.0.106", "12.0.0.1", False), ("10.14.1.48", "11.4.0.106", True), ("8.6.1.6", "11.4.0.106", False)])
def test_a_version_compatible_engine_runs_on_later_releases_of_its_major(built, running, runs):
    problems = compat.engine_problems(engine_record(version=built), machine(version=running))
    assert (problems == []) == runs


def test_the_lean_runtime_runs_only_version_compatible_engines():
    (problem,) = compat.engine_problems(engine_record(version_compatible=False), machine(module="tensorrt_lean"))
    assert "tensorrt_lean) runs only version-compatible engines" in problem


def test_another_compute_capability_is_refused_naming_both_gpus():
    (problem,) = compat.engine_problems(engine_record(gpu=H100), machine(gpu=A100))
    assert "built on NVIDIA H100 80GB HBM3 (compute capability 9.0)" in problem
    assert "this GPU is NVIDIA A100-SXM4-80GB (compute capability 8.0)" in problem


@pytest.mark.parametrize("gpu, runs", [(A100, True), (H100, True), (T4, False)])
def test_ampere_plus_engines_run_from_compute_capability_8(gpu, runs):
    problems = compat.engine_problems(engine_record(gpu=H100, hardware_compatibility="ampere_plus"), machine(gpu=gpu))
    assert (problems == []) == runs


def test_no_tensorrt_and_no_gpu_are_named():
    (problem,) = compat.engine_problems(engine_record(), machine(module=None, version=None))
    assert "pip install tensorrt-lean" in problem
    (problem,) = compat.engine_problems(engine_record(), machine(gpu=None, gpu_problem="cudaErrorNoDevice"))
    assert "no usable CUDA GPU (cudaErrorNoDevice)" in problem


def test_a_plan_without_the_lean_runtime_needs_it_on_other_versions():
    record = engine_record(exclude_lean_runtime=True)
    assert compat.engine_problems(record, machine(version="11.6.0.1", module="tensorrt_lean")) == []
    (problem,) = compat.engine_problems(record, machine(module="tensorrt"))
    assert "backend='tensorrt_lean'" in problem


# --- refusal and fallback on load -----------------------------------------------------------------------------

@pytest.fixture
def engine_bundle(tiny_bundles, tmp_path):
    """An engine bundle's manifest and files around a tiny fp32 bundle's ONNX. Its model.plan is never read:
    every test here stops at the compatibility check or runs the ONNX fallback."""
    source = tiny_bundles["distilbert-base-uncased-distilled-squad"].bundle
    bundle = tmp_path / "fp32-engine"
    shutil.copytree(source, bundle)
    (bundle / "model.plan").write_bytes(b"stands for a plan built on an H100; the check refuses it before reading")
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest.update(variant="fp32-engine", fallback={"file": "model.onnx", "format": "onnx", "backend": "onnxruntime"},
                    model={**manifest["model"], "file": "model.plan", "format": "tensorrt-plan", "backend": "tensorrt"},
                    engine=engine_record())
    write_manifest(bundle, manifest, Manifest(manifest).listed_files + ["report.json"])
    return source, bundle


def test_an_engine_for_another_gpu_is_refused_on_load(engine_bundle, monkeypatch):
    _, bundle = engine_bundle
    monkeypatch.setattr(trt_backend, "machine_record", lambda module="auto", device=0: machine(gpu=A100))
    with pytest.raises(IncompatibleEngineError, match=r"cannot run on this machine: it was built on NVIDIA H100") as e:
        distilrt.load(bundle)
    assert "fallback='onnx'" in str(e.value) and e.value.machine["gpu"] == A100


def test_an_engine_for_another_tensorrt_is_refused_on_load(engine_bundle, monkeypatch):
    _, bundle = engine_bundle
    monkeypatch.setattr(trt_backend, "machine_record", lambda module="auto", device=0: machine(version="11.3.0.1"))
    with pytest.raises(IncompatibleEngineError, match=r"built with TensorRT 11.4.0.106 and this machine has "
                                                      r"tensorrt_lean 11.3.0.1"):
        distilrt.load(bundle)


def test_this_machine_cannot_run_engines_and_says_why(engine_bundle):
    _, bundle = engine_bundle
    with pytest.raises(CapabilityError,
                       match="cannot run on this machine: .*(TensorRT is not installed|no usable CUDA GPU)"):
        distilrt.load(bundle)


def test_fallback_runs_the_bundles_onnx_with_the_same_answers(engine_bundle, caplog):
    source, bundle = engine_bundle
    head = distilrt.load(bundle, fallback="onnx")
    assert head.backend in ("onnxruntime", "onnxruntime-gpu")
    assert "fallback='onnx'" in caplog.text
    question, context = "Who wrote the report?", "The report was written by Ada Lovelace in 1843."
    assert head(question=question, context=context, top_k=3) == \
        distilrt.load(source)(question=question, context=context, top_k=3)


def test_the_tensorrt_backend_refuses_an_onnx_bundle(tiny_bundles):
    with pytest.raises(UserInputError, match="holds an ONNX model .* `distilrt engine`"):
        distilrt.load(tiny_bundles["albert-base-v2"].bundle, backend="tensorrt")


def test_fallback_must_be_onnx(tiny_bundles):
    with pytest.raises(UserInputError, match="fallback must be None or 'onnx'"):
        distilrt.load(tiny_bundles["albert-base-v2"].bundle, fallback="cpu")


def test_onnxruntime_gpu_backend_needs_the_cuda_provider(tiny_bundles):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("onnxruntime-gpu is installed here; tests/test_gpu.py runs it")
    with pytest.raises(CapabilityError, match="CUDAExecutionProvider.*pip install onnxruntime-gpu"):
        distilrt.load(tiny_bundles["albert-base-v2"].bundle, backend="onnxruntime-gpu")


# --- the backend before CUDA ----------------------------------------------------------------------------------

PROFILES = ({"input_ids": ((1, 1), (1, 128), (8, 384))},
            {"input_ids": ((1, 1), (16, 128), (64, 512))})


def test_the_first_profile_that_holds_the_shapes_is_chosen():
    assert trt_backend.choose_profile(PROFILES, {"input_ids": (8, 384)}) == 0
    assert trt_backend.choose_profile(PROFILES, {"input_ids": (9, 12)}) == 1
    assert trt_backend.choose_profile(PROFILES, {"input_ids": (2, 500)}) == 1


def test_shapes_outside_every_profile_are_a_clear_error():
    with pytest.raises(UserInputError, match=r"input_ids \[65, 8\] are outside every optimization profile .*"
                                             r"profile 0: input_ids \[1, 1\]..\[8, 384\]; profile 1: input_ids "
                                             r"\[1, 1\]..\[64, 512\].*smaller batch_size"):
        trt_backend.choose_profile(PROFILES, {"input_ids": (65, 8)})
    with pytest.raises(UserInputError):
        trt_backend.choose_profile(PROFILES, {"input_ids": (4,)})  # wrong rank


def test_without_tensorrt_the_backend_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    monkeypatch.setitem(sys.modules, "tensorrt_lean", None)
    with pytest.raises(CapabilityError, match="pip install tensorrt-lean cuda-python .* fallback='onnx'"):
        trt_backend.open_model("model.plan")
    assert trt_backend.machine_record()["runtime_module"] is None


def test_without_a_gpu_the_lean_runtime_stops_before_tensorrt(tmp_path):
    pytest.importorskip("tensorrt_lean", reason="tensorrt-lean is not installed (pip install tensorrt-lean)")
    pytest.importorskip("cuda.bindings.runtime", reason="cuda-python is not installed (pip install cuda-python)")
    # In a subprocess: a TensorRT Runtime made without a GPU crashes the interpreter at exit, so this also
    # proves none is made.
    code = ("import distilrt.backends.tensorrt as b, distilrt.errors as e\n"
            "print(b.machine_record('tensorrt_lean'))\n"
            "try:\n    b.open_model('missing.plan', module='tensorrt_lean')\n"
            "except e.CapabilityError as x:\n    print('CapabilityError:', x)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    if "CapabilityError" not in done.stdout and done.returncode == 0:
        pytest.skip("a CUDA GPU is present here; tests/test_gpu.py covers it")
    assert done.returncode == 0, done.stderr
    assert "'runtime_module': 'tensorrt_lean'" in done.stdout
    assert "CapabilityError: no usable CUDA GPU: cudaGetDeviceCount returned cudaError" in done.stdout


# The objects the backend calls, by the name it holds them under, and where tensorrt_lean defines them.
_HOLDERS = {"trt": None, "engine": "ICudaEngine", "_engine": "ICudaEngine", "context": "IExecutionContext",
            "runtime": "Runtime"}


def _attributes_used(source: str) -> dict[str, set[str]]:
    used: dict[str, set[str]] = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute):
            holder = node.value.id if isinstance(node.value, ast.Name) else getattr(node.value, "attr", None)
            if holder in _HOLDERS or holder in ("cudart", "_cudart"):
                used.setdefault(holder.lstrip("_"), set()).add(node.attr)
    return used


def test_every_tensorrt_and_cuda_call_of_the_backend_exists_in_tensorrt_lean_and_cuda_python():
    trt = pytest.importorskip("tensorrt_lean", reason="tensorrt-lean is not installed (pip install tensorrt-lean)")
    cudart = pytest.importorskip("cuda.bindings.runtime", reason="cuda-python is not installed")
    used = _attributes_used(inspect.getsource(trt_backend))
    assert {"engine", "context", "runtime", "trt", "cudart"} <= set(used)
    for holder, names in used.items():
        owner = {"trt": trt, "cudart": cudart}.get(holder) or getattr(trt, _HOLDERS[holder])
        missing = sorted(n for n in names if not hasattr(owner, n))
        assert not missing, f"{holder}: {missing} are not in {owner}"
    assert hasattr(trt.ILogger.Severity, "INTERNAL_ERROR") and hasattr(trt.TensorIOMode, "INPUT")
    assert hasattr(cudart.cudaMemcpyKind, "cudaMemcpyHostToDevice")
    assert hasattr(cudart.cudaMemcpyKind, "cudaMemcpyDeviceToHost")
