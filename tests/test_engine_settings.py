"""The builder-settings seam (EngineConfig + manifest → TensorRT builder settings), tested exhaustively on the
five checkpoints' real shapes. Flag and enum names are checked against the real tensorrt_lean enums, which are
TensorRT's own."""

from __future__ import annotations

import itertools
import json

import pytest
from conftest import MLM_CHECKPOINTS, onnx_bundle_manifest

from distilrt.errors import UserInputError
from distilrt.export.assets import SEED_CHECKPOINTS, config_path
from distilrt.export.config import ENGINE_SOURCES, HARDWARE_COMPATIBILITY, VARIANTS, EngineConfig, ShapeProfile, gate_for
from distilrt.export.engines.settings import builder_settings, timing_cache_key
from distilrt.export.specs import get_spec, get_task


def seed_manifest(checkpoint: str, variant: str) -> dict:
    """The parts of a bundle manifest the settings read, for a seed checkpoint's real config."""
    config = json.loads(config_path(checkpoint).read_text())
    spec = get_spec(config["model_type"])
    max_sequence = spec.max_sequence(config)
    task = get_task("fill-mask" if checkpoint in MLM_CHECKPOINTS else "question-answering")
    return onnx_bundle_manifest(variant, spec.model_input_names(task),
                                shape_profile=ShapeProfile(max_sequence=max_sequence), model_max_length=max_sequence)


def _configs():
    """Every valid EngineConfig over the settings' axes (invalid combinations are checked separately)."""
    profile_sets = ((), (ShapeProfile(max_batch=8, opt_sequence=384, max_sequence=384),),
                    (ShapeProfile(max_batch=1, opt_sequence=64, max_sequence=128),
                     ShapeProfile(min_batch=2, opt_batch=8, max_batch=64, min_sequence=16, max_sequence=512)))
    for vc, lean, hardware, level, tf32, workspace, profiles in itertools.product(
            (False, True), (False, True), HARDWARE_COMPATIBILITY, range(6), (False, True), (None, 1024), profile_sets):
        if lean and not vc:
            continue
        yield EngineConfig(profiles=profiles, version_compatible=vc, exclude_lean_runtime=lean,
                           hardware_compatibility=hardware, builder_optimization_level=level, tf32=tf32,
                           workspace_mb=workspace)


CONFIGS = list(_configs())


@pytest.mark.parametrize("checkpoint", list(SEED_CHECKPOINTS))
def test_settings_for_every_config_and_engine_source(checkpoint):
    assert len(CONFIGS) == 3 * 3 * 6 * 2 * 2 * 3  # (vc, lean) pairs x hardware x level x tf32 x workspace x profiles
    for variant, config in itertools.product(ENGINE_SOURCES, CONFIGS):
        manifest = seed_manifest(checkpoint, variant)
        settings = builder_settings(config, manifest)
        assert settings.precision == ENGINE_SOURCES[variant]
        assert ("VERSION_COMPATIBLE" in settings.builder_flags) == config.version_compatible
        assert ("EXCLUDE_LEAN_RUNTIME" in settings.builder_flags) == config.exclude_lean_runtime
        assert ("TF32" in settings.builder_flags) == config.tf32
        assert ("TF32" in settings.cleared_builder_flags) == (not config.tf32)
        assert not set(settings.builder_flags) & set(settings.cleared_builder_flags)
        assert settings.hardware_compatibility_level == config.hardware_compatibility.upper()
        assert settings.builder_optimization_level == config.builder_optimization_level
        assert settings.memory_pool_limits == ({} if config.workspace_mb is None
                                               else {"WORKSPACE": config.workspace_mb * 2**20})
        profiles = config.profiles or (ShapeProfile.from_dict(manifest["shape_profile"]),)
        assert len(settings.profiles) == len(profiles)
        inputs = [i["name"] for i in manifest["model"]["inputs"]]
        for shapes, profile in zip(settings.profiles, profiles):
            assert list(shapes) == inputs  # every input, in the model's order
            for name, (low, opt, high) in shapes.items():
                if name == "mask_positions":  # [batch, masks]: one mask up to one per token
                    assert (low, opt, high) == ((profile.min_batch, 1), (profile.opt_batch, 1),
                                                (profile.max_batch, profile.max_sequence))
                    continue
                assert low == (profile.min_batch, profile.min_sequence)
                assert opt == (profile.opt_batch, profile.opt_sequence)
                assert high == (profile.max_batch, profile.max_sequence)
        assert ("mask_positions" in inputs) == (checkpoint in MLM_CHECKPOINTS)
        assert json.loads(json.dumps(settings.to_dict())) == settings.to_dict()


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v not in ENGINE_SOURCES])
def test_variants_tensorrt_cannot_parse_are_refused_with_the_reason(variant):
    reasons = {"fused": "com.microsoft", "int8-dynamic": "MatMulInteger", "int8-qdq": "uint8"}
    with pytest.raises(UserInputError, match=rf"from the {variant} variant: .*{reasons[variant]}.*int8-qdq-trt"):
        builder_settings(EngineConfig(), seed_manifest("distilroberta-base", variant))


def test_an_engine_bundle_is_not_an_engine_source():
    manifest = onnx_bundle_manifest("fp16", model_format="tensorrt-plan")
    with pytest.raises(UserInputError, match="not ONNX"):
        builder_settings(EngineConfig(), manifest)


@pytest.mark.parametrize("checkpoint", list(SEED_CHECKPOINTS))
def test_a_profile_longer_than_the_model_is_refused(checkpoint):
    manifest = seed_manifest(checkpoint, "fp16")
    limit = manifest["tokenizer"]["settings"]["model_max_length"]
    config = EngineConfig(profiles=(ShapeProfile(max_sequence=limit), ShapeProfile(max_sequence=limit + 1)))
    with pytest.raises(UserInputError, match=rf"profile 1 asks for sequences up to {limit + 1} .* {limit} positions"):
        builder_settings(config, manifest)


def test_invalid_engine_configs_say_what_to_change():
    with pytest.raises(UserInputError, match="version_compatible"):
        EngineConfig(exclude_lean_runtime=True)
    with pytest.raises(UserInputError, match="hardware_compatibility"):
        EngineConfig(hardware_compatibility="turing_plus")
    with pytest.raises(UserInputError, match="0-5"):
        EngineConfig(builder_optimization_level=6)
    with pytest.raises(UserInputError, match="workspace_mb"):
        EngineConfig(workspace_mb=0)


def test_engine_config_round_trips_through_the_manifest():
    for config in CONFIGS[::17]:
        assert EngineConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_timing_cache_key_changes_with_what_the_timings_depend_on():
    key = timing_cache_key("11.4.0.106", "NVIDIA H100 80GB HBM3", "9.0")
    assert key == timing_cache_key("11.4.0.106", "NVIDIA H100 80GB HBM3", "9.0")
    assert key != timing_cache_key("11.4.1.2", "NVIDIA H100 80GB HBM3", "9.0")
    assert key != timing_cache_key("11.4.0.106", "NVIDIA A100-SXM4-80GB", "8.0")


def test_engines_are_gated_like_their_source_precision():
    assert gate_for("fp16-engine") == gate_for("fp16")
    assert gate_for("int8-qdq-trt-engine") == gate_for("int8-qdq-trt")
    assert gate_for("fp32-engine").tensor.for_output("logits") == (1e-3, 1e-4)


def test_flag_and_enum_names_are_tensorrts_own():
    trt = pytest.importorskip("tensorrt_lean", reason="tensorrt-lean is not installed (pip install tensorrt-lean)")
    used_flags = {flag for config in CONFIGS for variant in ENGINE_SOURCES
                  for settings in [builder_settings(config, seed_manifest("distilbert-base-uncased", variant))]
                  for flag in settings.builder_flags + settings.cleared_builder_flags}
    assert used_flags == {"VERSION_COMPATIBLE", "EXCLUDE_LEAN_RUNTIME", "TF32"}
    assert used_flags <= set(trt.BuilderFlag.__members__)
    assert {h.upper() for h in HARDWARE_COMPATIBILITY} == set(trt.HardwareCompatibilityLevel.__members__)
    assert "WORKSPACE" in trt.MemoryPoolType.__members__
    # TensorRT 11 has no precision flags: every precision comes from the strongly typed ONNX.
    assert not {"FP16", "INT8", "BF16", "STRICT_TYPES"} & set(trt.BuilderFlag.__members__)
