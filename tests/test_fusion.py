"""Fused-op counts at the real layer counts: full-size graphs of the five checkpoints' configs (random weights).

A transformers, torch or onnxruntime upgrade can silently change the exported attention pattern and turn
fusion off (docs/design.md#fusion); these counts are the alarm.
"""

from __future__ import annotations

import json

import pytest

from distilrt.errors import VerificationError
from distilrt.export.assets import SEED_CHECKPOINTS, config_path
from distilrt.export.config import ExportConfig, FuseConfig
from distilrt.export.fuse import check_fused_counts, fuse
from distilrt.export.onnx_export import export_onnx, resolve_attn_implementation
from distilrt.export.specs import get_spec

pytestmark = pytest.mark.slow  # full-size graphs: ~80 s on 2 cores

# What each full-size graph reaches today (measured with transformers 4.57 sdpa export, onnxruntime 1.31).
EXPECTED = {
    "distilbert": {"Attention": 6, "EmbedLayerNormalization": 1, "SkipLayerNormalization": 12, "BiasGelu": 6},
    "roberta": {"Attention": 6, "SkipLayerNormalization": 12, "BiasGelu": 6},
    "albert": {"Attention": 11, "SkipLayerNormalization": 24, "FastGelu": 12},
}


@pytest.mark.parametrize("name", list(SEED_CHECKPOINTS))
def test_full_size_graph_fuses_as_its_spec_requires(name, tmp_path):
    import torch
    import transformers

    config_dict = json.loads(config_path(name).read_text())
    spec = get_spec(config_dict["model_type"])
    task = spec.task("question-answering" if "QuestionAnswering" in config_dict["architectures"][0] else "fill-mask")
    config = transformers.AutoConfig.for_model(**config_dict)
    torch.manual_seed(0)
    auto_class = getattr(transformers, task.auto_class)
    model = auto_class.from_config(config, attn_implementation=resolve_attn_implementation(ExportConfig())).eval()
    export_onnx(model, spec, task, ExportConfig(), tmp_path / "model.onnx", config.vocab_size, config.pad_token_id or 0)

    counts = fuse(tmp_path / "model.onnx", tmp_path / "fused.onnx", spec, config_dict, FuseConfig())
    layers = spec.layers_heads_hidden(config_dict)[0]
    assert spec.fusion.expected_counts(layers) == EXPECTED[spec.model_type]
    for op, n in EXPECTED[spec.model_type].items():
        assert counts.get(op, 0) >= n, f"{op}: {counts.get(op, 0)} < {n}"
    assert (tmp_path / "fused.onnx").stat().st_size > 0


def test_missing_fusions_fail_naming_what_is_missing():
    spec = get_spec("albert")
    with pytest.raises(VerificationError, match=r"Attention 5/11 fused") as caught:
        check_fused_counts({"Attention": 5, "SkipLayerNormalization": 24, "FastGelu": 13}, spec, layers=12)
    assert caught.value.result["expected_at_least"]["Attention"] == 11


def test_unfusable_patterns_are_recorded_with_reasons():
    assert "padding_idx" in get_spec("roberta").fusion.not_fused["EmbedLayerNormalization"]
    assert set(get_spec("albert").fusion.not_fused) == {"Attention (first layer)", "EmbedLayerNormalization"}
