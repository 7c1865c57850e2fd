"""The typed manifest, the shared config helpers, and closing backends and heads."""

from __future__ import annotations

import json

import pytest
from conftest import QA_NAME

import distilrt
from distilrt.backends import open_backend
from distilrt.config import check_int, default_of
from distilrt.errors import BackendError, UserInputError
from distilrt.export.config import EngineConfig, ExportConfig
from distilrt.manifest import Manifest


def _manifest(tiny_bundles) -> Manifest:
    return distilrt.read_bundle(tiny_bundles[QA_NAME].bundle).manifest


def test_accessors_read_what_the_json_says(tiny_bundles):
    bundle = tiny_bundles[QA_NAME]
    manifest = _manifest(tiny_bundles)
    on_disk = json.loads((bundle.path / "manifest.json").read_text())
    assert manifest == on_disk and manifest.to_dict() == on_disk
    assert (manifest.variant, manifest.task, manifest.architecture) == ("fp32", "question-answering", "distilbert")
    assert manifest.source.name == QA_NAME and manifest.source.random_weights
    assert manifest.model_file.file == manifest.onnx_file == "model.onnx" and not manifest.is_engine
    assert manifest.fallback is None and manifest.engine is None
    assert manifest.listed_files == ["model.onnx", "tokenizer.json"]
    assert manifest.onnx_sha256 == on_disk["files"]["model.onnx"]
    assert manifest.input_names == ("input_ids", "attention_mask")
    assert manifest.stage("export")["opset"] == default_of(ExportConfig, "opset")
    assert manifest.stage("no-such-stage") is None
    with pytest.raises(TypeError):
        manifest["variant"] = "changed"  # read-only


def test_derive_inherits_all_but_files_and_verification(tiny_bundles):
    parent = _manifest(tiny_bundles)
    before = parent.to_dict()
    child = parent.derive("int8-qdq", model={"precision": "int8"}, stages={"gate": {"x": 1}}, calibration={"size": 8})
    assert "files" not in child and "verification" not in child
    assert child["variant"] == "int8-qdq" and child["calibration"] == {"size": 8}
    assert child["model"] == {**before["model"], "precision": "int8"}
    assert child["stages"] == {**before["stages"], "gate": {"x": 1}}
    assert child["source"] == before["source"] and child["tokenizer"] == before["tokenizer"]
    child["model"]["inputs"].append("mutated")
    assert parent.to_dict() == before  # the child is a deep copy


def test_an_engine_manifest_names_its_onnx_fallback(tiny_bundles):
    parent = _manifest(tiny_bundles)
    engine = Manifest(parent.derive("fp32-engine", model={"file": "model.plan", "format": "tensorrt-plan",
                                                          "backend": "tensorrt"},
                                    fallback={"file": "model.onnx", "format": "onnx", "backend": "onnxruntime"},
                                    stages={"engine_source": {"variant": "fp32", "sha256": "0" * 64}}))
    assert engine.is_engine and engine.onnx_file == "model.onnx" and engine.engine_source_variant == "fp32"
    assert engine.listed_files == ["model.plan", "model.onnx", "tokenizer.json"]
    no_onnx = Manifest(parent.derive("x", model={"file": "model.plan", "format": "tensorrt-plan"}))
    assert no_onnx.onnx_file is None


def test_default_of_and_check_int():
    assert default_of(EngineConfig, "builder_optimization_level") == 3
    assert default_of(EngineConfig, "profiles") == ()
    with pytest.raises(KeyError, match="no field"):
        default_of(EngineConfig, "nope")
    check_int("n", 3, minimum=1)
    for bad in (0, True, 2.0, "3", None):
        with pytest.raises(UserInputError, match="n must be an integer >= 1"):
            check_int("n", bad, minimum=1)


def test_a_closed_backend_says_so_and_a_head_closes_its_backend(tiny_bundles):
    bundle = distilrt.read_bundle(tiny_bundles[QA_NAME].bundle)
    with open_backend("onnxruntime", bundle.onnx_path) as model:
        feed = {name: [[101, 102]] for name in model.input_names}
        assert set(model.run(feed)) == set(model.output_names)
    with pytest.raises(BackendError, match="was closed"):
        model.run(feed)
    with distilrt.load(bundle.path) as qa:
        assert qa(question="Who?", context="Ada wrote it.")["answer"]
    with pytest.raises(BackendError, match="was closed"):
        qa(question="Who?", context="Ada wrote it.")
