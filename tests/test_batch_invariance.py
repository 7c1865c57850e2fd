"""Batch invariance: every published bundle answers the same alone and in mixed-length batches; the per-token
int8 rewrite is what makes int8-dynamic so; a variant that is not invariant is not published by default."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import MLM_NAME, QA_NAME, small_variant_options

from distilrt.backends import open_backend
from distilrt.export.config import InvarianceConfig, PrecisionConfig

_QUIET = lambda message: None  # noqa: E731


def _fused_int8_graphs(bundle, tmp_path):
    """The bundle's fused graph converted to int8-dynamic with per-tensor and with per-token scales."""
    from distilrt.export.fuse import fuse
    from distilrt.export.precision import convert
    from distilrt.export.specs import get_spec

    spec = get_spec(bundle.manifest.architecture)
    fused = tmp_path / "fused.onnx"
    fuse(bundle.onnx_path, fused, spec, dict(zip(spec.shape_keys, bundle.manifest.layers_heads_hidden)),
         small_variant_options().fuse)
    graphs = {}
    for scales in ("tensor", "token"):
        graphs[scales] = tmp_path / f"int8-{scales}.onnx"
        convert(PrecisionConfig.int8_dynamic(spec.int8.keep_float, scales), fused, graphs[scales])
    return graphs


def _mixed_batch(input_names, lengths, seed=0, width=None):
    rng = np.random.default_rng(seed)
    width = width or max(lengths)
    feed = {"input_ids": rng.integers(1000, 5000, (len(lengths), width)),
            "attention_mask": np.zeros((len(lengths), width), np.int64),
            "token_type_ids": np.zeros((len(lengths), width), np.int64),
            "mask_positions": np.tile(np.array([[1, 2]]), (len(lengths), 1))}
    for row, length in enumerate(lengths):
        feed["attention_mask"][row, :length] = 1
    return {name: feed[name] for name in input_names}


def _row(outputs, row, length, width):
    return [o[row:row + 1, :length] if o.ndim >= 2 and o.shape[1] == width else o[row:row + 1] for o in outputs]


@pytest.mark.parametrize("name", [QA_NAME, MLM_NAME, "distilroberta-base"])
def test_per_token_rows_are_bit_identical_alone_and_batched(tiny_bundles, tmp_path, name):
    """Rows of lengths 40/13/27/5 in one padded batch: per-token int8 gives each row exactly its alone outputs;
    ONNX Runtime's per-tensor scales do not (which is what the build's check catches)."""
    graphs = _fused_int8_graphs(tiny_bundles[name], tmp_path)
    lengths = [40, 13, 27, 5]
    largest = {}
    for scales, path in graphs.items():
        model = open_backend("onnxruntime", path)
        feed = _mixed_batch(model.input_names, lengths)
        batched = [model.run(feed)[n] for n in model.output_names]
        largest[scales] = 0.0
        for row, length in enumerate(lengths):
            alone_feed = {k: v[row:row + 1, :length] if k != "mask_positions" else v[row:row + 1]
                          for k, v in feed.items()}
            alone = [model.run(alone_feed)[n] for n in model.output_names]
            largest[scales] = max(largest[scales], *(float(np.abs(a - b).max())
                                                     for a, b in zip(alone, _row(batched, row, length, 40))))
    assert largest["token"] == 0.0
    assert largest["tensor"] > 0.0


def test_per_token_graph_has_no_per_tensor_quantizer_left(tiny_bundles, tmp_path):
    import onnx

    graphs = _fused_int8_graphs(tiny_bundles[QA_NAME], tmp_path)
    ops = [n.op_type for n in onnx.load(str(graphs["token"])).graph.node]
    assert "DynamicQuantizeLinear" not in ops and "QAttention" not in ops
    assert ops.count("MultiHeadAttention") == tiny_bundles[QA_NAME].manifest.layers_heads_hidden[0]
    # Every int8 product reads per-row codes: one QuantizeLinear per quantized activation.
    assert ops.count("MatMulIntegerToFloat") >= ops.count("QuantizeLinear") > 0


def test_the_fp32_build_records_its_invariance(tiny_bundles):
    for bundle in tiny_bundles.values():
        assert bundle.manifest.batch_invariant is True
        record = bundle.manifest.stage("invariance")
        assert record["fp32_items"] == InvarianceConfig().fp32_items


@pytest.mark.parametrize("name", [QA_NAME, MLM_NAME])
def test_a_batch_dependent_variant_is_refused_unless_allowed(tiny_checkpoints, tmp_path, name):
    """Per-tensor int8-dynamic misses the invariance check and is not published; with required=False it is
    published, its manifest says it failed, and `distilrt serve` flags it."""
    from dataclasses import replace

    from distilrt.bundle import read_bundle
    from distilrt.export.build import BuildOptions, build_fp32
    from distilrt.export.specs import get_spec
    from distilrt.export.variants import build_variants
    from distilrt.serve.server import batch_dependent

    fp32 = build_fp32(str(tiny_checkpoints[name]), BuildOptions(out_dir=tmp_path), progress=_QUIET)
    per_tensor = PrecisionConfig.int8_dynamic(get_spec(fp32.manifest.architecture).int8.keep_float, "tensor")
    options = replace(small_variant_options(), precision={"int8-dynamic": per_tensor},
                      gates={**small_variant_options().gates, "int8": _open_gate()})
    [refused] = build_variants(fp32, ("int8-dynamic",), options, progress=_QUIET)
    assert not refused.published and "answers differently in a batch" in refused.reason
    assert refused.invariance["differing"] > 0 and not refused.invariance["passed"]
    assert not (fp32.path.parent / "int8-dynamic").exists()

    allowed = replace(options, invariance=InvarianceConfig(required=False))
    [published] = build_variants(fp32, ("int8-dynamic",), allowed, progress=_QUIET)
    assert published.published and not published.invariance["passed"]
    bundle = read_bundle(published.bundle)
    assert bundle.manifest.batch_invariant is False and batch_dependent(bundle)


def _open_gate():
    """A gate every int8 graph passes on agreement, so that only the invariance check decides here."""
    from distilrt.export.config import Gate

    return Gate(None, qa_f1_vs_fp32=0.0, mlm_top1_vs_fp32=0.0)


def test_every_published_variant_of_every_seed_is_batch_invariant(tiny_variant_builds):
    """The whole variant matrix (five seeds' stand-ins): each published bundle's check passed on its whole gate
    split, and the report holds the figures."""
    for name, (fp32, outcomes) in tiny_variant_builds.items():
        assert fp32.manifest.batch_invariant is True, name
        for outcome in outcomes:
            if not outcome.published:
                continue
            assert outcome.invariance["passed"] and outcome.invariance["differing"] == 0, (name, outcome.variant)
            assert outcome.invariance["items"] > 0
            manifest = json.loads((outcome.bundle / "manifest.json").read_text())
            assert manifest["stages"]["invariance"]["passed"] is True
            report = json.loads((outcome.bundle / "report.json").read_text())
            assert report["batch_invariance"]["worst_score_difference"] <= report["batch_invariance"]["score_atol"]


def test_the_mlm_check_fails_a_model_whose_rows_see_the_batch(tiny_bundles):
    """A model whose logits move with the batch size fails the fill-mask check; the same model batched one row at a
    time would pass: the check can fail, and names the first differing sentence."""
    import distilrt
    from distilrt.calib.sets import EvalConfig, mlm_evaluation_set
    from distilrt.export.invariance import check_mlm

    bundle = tiny_bundles[MLM_NAME]
    model = open_backend("onnxruntime", bundle.onnx_path)
    split = mlm_evaluation_set(distilrt.head_for(bundle, model), EvalConfig(masked_positions=60), model.input_names)

    def leaky(feed):
        outputs = model.run(feed)
        batch = feed["input_ids"].shape[0]
        logits = outputs["logits"].copy()
        logits[..., 0] += 10.0 * (batch - 1)  # a token that wins only in batches
        return {**outputs, "logits": logits}

    result = check_mlm(leaky, split, bundle.tokenizer_settings.pad_token_id, InvarianceConfig())
    assert not result.passed and result.differing > 0 and result.first_difference.startswith("sentence")
    assert check_mlm(model.run, split, bundle.tokenizer_settings.pad_token_id, InvarianceConfig()).passed


def test_invariance_config_refuses_bad_values():
    from distilrt.errors import UserInputError

    for bad in ({"items": 0}, {"batch_size": 1}, {"score_atol": -1.0}, {"fp32_items": 0}):
        with pytest.raises(UserInputError):
            InvarianceConfig(**bad)
    with pytest.raises(UserInputError, match="activation_scales"):
        PrecisionConfig("int8-qdq", "fp32", activation_scales="token", calibration_method="MinMax")


def test_manifests_without_activation_scales_rebuild_per_tensor():
    """Bundles built before per-token scales existed record no activation_scales: they read back as 'tensor', so
    `distilrt rebuild` makes the graph they were gated with."""
    recorded = PrecisionConfig.int8_dynamic(()).to_dict()
    del recorded["activation_scales"]
    assert PrecisionConfig.from_dict(recorded).activation_scales == "tensor"
    assert PrecisionConfig.int8_dynamic(()).activation_scales == "token"
