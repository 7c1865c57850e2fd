"""The engine stage on a machine without TensorRT: what it plans, what it refuses and why, what it records,
and how export/engines/builder.py applies builder settings (through a recording double of the builder that uses
TensorRT's real enums from tensorrt_lean)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import onnx_bundle_manifest

from distilrt.errors import CapabilityError
from distilrt.export.config import ENGINE_SOURCES, VARIANTS, EngineConfig, ShapeProfile
from distilrt.export.engines import builder as engine_module
from distilrt.export.engines.settings import builder_settings
from distilrt.export.engines.stage import build_engines, reduce_commands
from distilrt.export.pipeline import write_build_summary


def _has_full_tensorrt() -> bool:
    try:
        engine_module.build_machine()
    except CapabilityError:
        return False
    return True


@pytest.mark.skipif(_has_full_tensorrt(), reason="full TensorRT and a GPU are here: tests/test_gpu.py builds engines")
@pytest.mark.parametrize("name", ["distilbert-base-cased-distilled-squad", "distilroberta-base", "albert-base-v2"])
def test_without_tensorrt_engines_are_reported_not_built_and_nothing_is_written(tiny_variant_builds, name, tmp_path):
    fp32, variant_outcomes = tiny_variant_builds[name]
    published = {o.variant for o in variant_outcomes if o.published} | {"fp32"}
    outcomes = build_engines(fp32, VARIANTS, EngineConfig(), timing_cache_dir=tmp_path / "cache",
                             progress=lambda message: None)
    by_variant = {o.variant: o for o in outcomes}
    assert set(by_variant) == {f"{v}-engine" for v in VARIANTS}
    for source in VARIANTS:
        outcome = by_variant[f"{source}-engine"]
        assert not outcome.published and outcome.bundle is None and outcome.reason
        assert not (fp32.bundle.parent / f"{source}-engine").exists()
        if source not in published:
            assert "does not exist" in outcome.reason  # its source bundle missed its gate
        elif source in ENGINE_SOURCES:
            assert outcome.skipped and "not built: building engines needs" in outcome.reason
        else:
            assert not outcome.skipped and f"from the {source} variant" in outcome.reason
    assert not (tmp_path / "cache").exists()

    summary = json.loads(write_build_summary(fp32, variant_outcomes + outcomes).read_text())
    recorded = {v["variant"]: v for v in summary["variants"]}
    assert recorded["fp16-engine"]["skipped"] is ("fp16" in published)
    assert "TensorRT" in recorded["fp16-engine"]["reason"] or "fp16" not in published


def test_the_reduce_commands_freeze_the_profiles_opt_shapes_then_bisect():
    manifest = onnx_bundle_manifest("fp16", ("input_ids", "attention_mask"),
                                    shape_profile=ShapeProfile(opt_batch=4, opt_sequence=256))
    sanitize, reduce = reduce_commands(Path("a/model.onnx"), builder_settings(EngineConfig(), manifest))
    assert sanitize[:4] == ["polygraphy", "surgeon", "sanitize", "a/model.onnx"]
    assert sanitize[sanitize.index("--override-input-shapes") + 1:] == ["input_ids:[4,256]", "attention_mask:[4,256]"]
    assert reduce[:4] == ["polygraphy", "debug", "reduce", "folded.onnx"] and "--mode=bisect" in reduce
    assert reduce[reduce.index("--check") + 1:] == ["polygraphy", "run", "polygraphy_debug.onnx", "--trt", "--onnxrt"]


# --- how build_plan applies the settings ----------------------------------------------------------------------

class _Recorder:
    """Stands in for TensorRT's Builder, network, parser and builder config; records every call made."""

    def __init__(self, calls, parse_ok=True, plan=b"plan-bytes", cache_ok=True):
        self.calls, self.parse_ok, self.plan, self.cache_ok = calls, parse_ok, plan, cache_ok
        self.num_errors, self.errors = (0 if parse_ok else 1), []

    def __call__(self, *args):  # Builder(logger), OnnxParser(network, logger)
        self.calls.append(("construct", len(args)))
        return self

    def create_network(self, flags):
        self.calls.append(("create_network", flags))
        return self

    def parse_from_file(self, path):
        self.calls.append(("parse_from_file", path))
        return self.parse_ok

    def get_error(self, index):
        return "node 3 (MatMulInteger): unsupported"

    def create_builder_config(self):
        return self

    def create_optimization_profile(self):
        return self

    def set_shape(self, name, low, opt, high):
        self.calls.append(("set_shape", name, low, opt, high))

    def add_optimization_profile(self, profile):
        self.calls.append(("add_optimization_profile",))
        return 0

    def set_flag(self, flag):
        self.calls.append(("set_flag", flag.name))

    def clear_flag(self, flag):
        self.calls.append(("clear_flag", flag.name))

    def set_memory_pool_limit(self, pool, limit):
        self.calls.append(("set_memory_pool_limit", pool.name, limit))

    def create_timing_cache(self, data):
        self.calls.append(("create_timing_cache", bytes(data)))
        return SimpleNamespace(serialize=lambda: b"timings")

    def set_timing_cache(self, cache, ignore_mismatch):
        self.calls.append(("set_timing_cache", ignore_mismatch))
        return self.cache_ok

    def get_timing_cache(self):
        return SimpleNamespace(serialize=lambda: b"timings")

    def build_serialized_network(self, network, config):
        self.calls.append(("build_serialized_network",))
        return self.plan

    def __setattr__(self, name, value):
        if name in ("hardware_compatibility_level", "builder_optimization_level"):
            self.calls.append((name, getattr(value, "name", value)))
        object.__setattr__(self, name, value)


def _recording_machine(recorder):
    trt = pytest.importorskip("tensorrt_lean", reason="tensorrt-lean is not installed (its enums are TensorRT's)")

    class Logger:
        def __init__(self):
            self.errors = []

    module = SimpleNamespace(__version__="11.4.0.106", Builder=recorder, OnnxParser=recorder, ILogger=object,
                             BuilderFlag=trt.BuilderFlag, HardwareCompatibilityLevel=trt.HardwareCompatibilityLevel,
                             MemoryPoolType=trt.MemoryPoolType)
    machine = engine_module.BuildMachine(module, {"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"})
    return machine, Logger


def test_build_plan_applies_every_setting_once(monkeypatch, tmp_path):
    calls = []
    machine, logger = _recording_machine(_Recorder(calls))
    monkeypatch.setattr(engine_module, "error_collecting_logger", lambda trt: logger())
    manifest = onnx_bundle_manifest("int8-qdq-trt")
    config = EngineConfig(profiles=(ShapeProfile(max_batch=8), ShapeProfile(min_batch=9, opt_batch=16, max_batch=64)),
                          version_compatible=True, exclude_lean_runtime=True, hardware_compatibility="ampere_plus",
                          builder_optimization_level=5, workspace_mb=2048)
    cache = tmp_path / "cache" / "timing.cache"
    plan, info = engine_module.build_plan(machine, tmp_path / "model.onnx", builder_settings(config, manifest), cache)
    assert plan == b"plan-bytes" and info == {"timing_cache_reused": False}
    assert ("create_network", 0) in calls  # TensorRT 11: no NetworkDefinitionCreationFlag needed
    assert [c for c in calls if c[0] in ("set_flag", "clear_flag")] == [
        ("set_flag", "VERSION_COMPATIBLE"), ("set_flag", "EXCLUDE_LEAN_RUNTIME"), ("clear_flag", "TF32")]
    assert ("hardware_compatibility_level", "AMPERE_PLUS") in calls
    assert ("builder_optimization_level", 5) in calls
    assert ("set_memory_pool_limit", "WORKSPACE", 2048 * 2**20) in calls
    assert [c for c in calls if c[0] == "set_shape"] == [
        ("set_shape", "input_ids", (1, 1), (1, 128), (8, 512)),
        ("set_shape", "input_ids", (9, 1), (16, 128), (64, 512))]
    assert calls.count(("add_optimization_profile",)) == 2
    assert cache.read_bytes() == b"timings"  # written after the build, for the next one

    calls.clear()
    engine_module.build_plan(machine, tmp_path / "model.onnx", builder_settings(config, manifest), cache)
    assert ("create_timing_cache", b"timings") in calls  # reused


def test_a_refused_timing_cache_is_replaced_by_an_empty_one(monkeypatch, tmp_path):
    calls = []
    machine, logger = _recording_machine(_Recorder(calls, cache_ok=False))
    monkeypatch.setattr(engine_module, "error_collecting_logger", lambda trt: logger())
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"from another GPU")
    manifest = onnx_bundle_manifest("fp16")
    _, info = engine_module.build_plan(machine, tmp_path / "m.onnx", builder_settings(EngineConfig(), manifest), cache)
    assert info == {"timing_cache_reused": False}
    assert [c for c in calls if c[0] == "create_timing_cache"] == [("create_timing_cache", b"from another GPU"),
                                                                   ("create_timing_cache", b"")]


@pytest.mark.parametrize("failure, message", [({"parse_ok": False}, "ONNX parser rejected .*MatMulInteger"),
                                              ({"plan": None}, "failed to build an engine")])
def test_parser_and_builder_failures_are_export_errors(monkeypatch, tmp_path, failure, message):
    from distilrt.errors import ExportError

    machine, logger = _recording_machine(_Recorder([], **failure))
    monkeypatch.setattr(engine_module, "error_collecting_logger", lambda trt: logger())
    manifest = onnx_bundle_manifest("fp16")
    with pytest.raises(ExportError, match=message):
        engine_module.build_plan(machine, tmp_path / "m.onnx", builder_settings(EngineConfig(), manifest), None)
