"""Build → bundle for the five seed checkpoints' shapes, and what a failed or impossible build leaves behind."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import QA_CHECKPOINTS

from distilrt.errors import CheckpointError, UnsupportedError, VerificationError
from distilrt.export.assets import SEED_CHECKPOINTS
from distilrt.export.build import BuildOptions, build_fp32
from distilrt.export.checkpoint import resolve_checkpoint
from distilrt.host import default_threads

EXPECTED_INPUTS = {
    "distilbert": ["input_ids", "attention_mask"],
    "roberta": ["input_ids", "attention_mask"],
    "albert": ["input_ids", "attention_mask", "token_type_ids"],
}


@pytest.mark.parametrize("name", list(SEED_CHECKPOINTS))
def test_bundle_layout_and_manifest(tiny_bundles, name):
    result = tiny_bundles[name]
    bundle = result.bundle
    assert bundle.name == "fp32" and bundle.parent.name == name
    assert sorted(p.name for p in bundle.iterdir()) == ["manifest.json", "model.onnx", "report.json", "tokenizer.json"]
    # nothing staged is left beside the bundle
    assert [p.name for p in bundle.parent.iterdir()] == ["fp32"]

    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest == result.manifest
    assert manifest["schema_version"] == 1
    expected_task = "question-answering" if name in QA_CHECKPOINTS else "fill-mask"
    assert manifest["task"] == expected_task
    # Fill-mask graphs also take the positions to predict, and give logits at those positions only.
    masked = ["mask_positions"] if expected_task == "fill-mask" else []
    assert [i["name"] for i in manifest["model"]["inputs"]] == EXPECTED_INPUTS[manifest["architecture"]] + masked
    assert all(i["shape"] == (["batch", "masks"] if i["name"] == "mask_positions" else ["batch", "sequence"])
               for i in manifest["model"]["inputs"])
    output_axes = ["batch", "masks"] if masked else ["batch", "sequence"]
    assert all(o["shape"][:2] == output_axes for o in manifest["model"]["outputs"])
    assert manifest["source"]["random_weights"] is True
    assert manifest["source"]["stand_in"] == {"checkpoint": name, "tiny": True, "seed": 0, "head_scale": 20.0}
    assert len(manifest["source"]["config_sha256"]) == 64
    assert set(manifest["files"]) == {"model.onnx", "tokenizer.json", "report.json"}
    assert manifest["stages"]["export"]["opset"] >= 17
    assert manifest["stages"]["export"]["attn_implementation"] in ("sdpa", "eager")
    threads = default_threads()  # the verification ran with the backend's default: one thread per physical core
    assert manifest["stages"]["run"] == {"backend": "onnxruntime", "intra_op_num_threads": threads.count,
                                         "threads_source": threads.source}
    assert manifest["tools"]["torch"] and manifest["tools"]["onnxruntime"]
    assert manifest["shape_profile"]["max_sequence"] == 512

    verification = manifest["verification"]
    assert verification["passed"] is True
    for worst in verification["tensors"]["worst"].values():
        assert worst["max_abs_diff"] <= 1e-4
        assert worst["min_passing_atol"] <= worst["max_abs_diff"]  # the default rtol covers part of it
    task = verification["task"]
    assert task["matched"] == task["inputs"] == 24
    assert task["max_score_diff"] <= 1e-4


def test_onnx_axes_are_dynamic(tiny_bundles):
    import onnx

    model = onnx.load(str(tiny_bundles["albert-base-v2"].bundle / "model.onnx"), load_external_data=False)
    assert model.opset_import[0].version >= 17
    axes = {"input_ids": "sequence", "attention_mask": "sequence", "token_type_ids": "sequence",
            "mask_positions": "masks", "logits": "masks"}
    for value in list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        assert dims[0].dim_param == "batch" and dims[1].dim_param == axes[value.name], value.name


def test_report_has_per_case_comparisons(tiny_bundles):
    report = json.loads((tiny_bundles["distilroberta-base"].bundle / "report.json").read_text())
    assert report["passed"] is True
    cases = report["tensors"]["cases"]
    assert [(c["batch"], c["sequence"]) for c in cases] == [(1, 8), (2, 33), (4, 128)]
    assert all(o["passed"] and o["output"] == "logits" for c in cases for o in c["outputs"])


def test_rebuild_replaces_the_bundle_whole(tiny_checkpoints, tmp_path):
    directory = tiny_checkpoints["distilbert-base-uncased"]
    first = build_fp32(str(directory), BuildOptions(out_dir=tmp_path, verify=_quick()), progress=lambda m: None)
    (first.bundle / "stale-file").write_text("from an older build")
    second = build_fp32(str(directory), BuildOptions(out_dir=tmp_path, verify=_quick()), progress=lambda m: None)
    assert second.bundle == first.bundle
    assert not (second.bundle / "stale-file").exists()
    assert [p.name for p in second.bundle.parent.iterdir()] == ["fp32"]


def test_failed_verification_publishes_nothing(tiny_checkpoints, tmp_path, monkeypatch):
    """An export that drifts from PyTorch must raise and leave no bundle (nor staging dir) behind."""
    import torch

    import distilrt.export.build as build_module

    original_export = build_module.export_onnx

    def export_with_drift(model, *args, **kwargs):
        weight = model.qa_outputs.bias
        with torch.no_grad():
            weight.add_(0.5)
            try:
                original_export(model, *args, **kwargs)
            finally:
                weight.sub_(0.5)

    monkeypatch.setattr(build_module, "export_onnx", export_with_drift)
    directory = tiny_checkpoints["distilbert-base-cased-distilled-squad"]
    with pytest.raises(VerificationError) as caught:
        build_fp32(str(directory), BuildOptions(out_dir=tmp_path, verify=_quick()), progress=lambda m: None)
    assert "start_logits" in str(caught.value) and "needs atol" in str(caught.value)
    assert caught.value.result["passed"] is False
    assert list((tmp_path / directory.name).iterdir()) == []


def test_checkpoint_without_weights_is_refused(tiny_checkpoints, tmp_path):
    directory = tmp_path / "no-weights"
    shutil.copytree(tiny_checkpoints["distilroberta-base"], directory)
    (directory / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="has no weights: expected one of model.safetensors"):
        build_fp32(str(directory), BuildOptions(out_dir=tmp_path / "out"), progress=lambda m: None)
    assert not (tmp_path / "out").exists()


def test_checkpoint_without_tokenizer_is_refused(tiny_checkpoints, tmp_path):
    directory = tmp_path / "no-tokenizer"
    shutil.copytree(tiny_checkpoints["albert-base-v2"], directory)
    (directory / "spiece.model").unlink()
    with pytest.raises(CheckpointError, match="has no tokenizer files"):
        resolve_checkpoint(str(directory))


def test_unknown_architecture_lists_supported(tiny_checkpoints, tmp_path):
    directory = tmp_path / "gpt2-like"
    shutil.copytree(tiny_checkpoints["distilroberta-base"], directory)
    config = json.loads((directory / "config.json").read_text())
    config["model_type"] = "gpt2"
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnsupportedError, match="supported: albert, bert, distilbert, roberta"):
        resolve_checkpoint(str(directory))


def test_task_without_head_is_refused(tiny_checkpoints):
    with pytest.raises(UnsupportedError, match="has no question-answering head"):
        resolve_checkpoint(str(tiny_checkpoints["distilbert-base-uncased"]), task="question-answering")


def test_hub_id_offline_names_the_fix():
    with pytest.raises(CheckpointError, match="Pass a local checkpoint directory"):
        resolve_checkpoint("distilbert-base-uncased-distilled-squad")


def _quick():
    from distilrt.export.config import VerifyConfig

    return VerifyConfig(shapes=((2, 16),), task_samples=4)


@pytest.mark.slow  # builds twice
def test_rebuild_from_manifest_alone(tiny_bundles, tmp_path, capsys):
    """The manifest holds everything needed to build the bundle again; the export is deterministic."""
    from distilrt.cli import main

    original = tiny_bundles["albert-base-v2"].bundle
    assert main(["rebuild", str(original), "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "identical to the original: model.onnx yes, tokenizer.json yes" in out
    rebuilt = json.loads((tmp_path / "albert-base-v2" / "fp32" / "manifest.json").read_text())
    original_manifest = tiny_bundles["albert-base-v2"].manifest
    assert rebuilt["stages"] == original_manifest["stages"]
    assert rebuilt["shape_profile"] == original_manifest["shape_profile"]
