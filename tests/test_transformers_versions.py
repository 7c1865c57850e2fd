"""What the build does differently on transformers 4.57 and 5.x (export/transformers_support.py), checked on
whichever is installed: CI runs this module with 4.57 and again with the newest 5.x.

- the bundle's tokenizer.json must tokenize like AutoTokenizer, or the build fails naming the input;
- where there is no question-answering pipeline, builds verify against the runtime head on PyTorch logits, a
  check that still fails on a wrong model;
- the recorded decode clean-up is the one the running transformers applies;
- the exporter and dtype are stated in the export config, not left to library defaults.
"""

from __future__ import annotations

import json

import pytest
from conftest import MLM_CHECKPOINTS, QA_NAME, SCORE_ATOL

transformers = pytest.importorskip("transformers")

from distilrt.errors import UserInputError, VerificationError  # noqa: E402
from distilrt.export import checkpoint as ckpt  # noqa: E402
from distilrt.export.config import ExportConfig  # noqa: E402
from distilrt.export.probes import question_answering_probes, tokenizer_samples  # noqa: E402
from distilrt.export.tokenizer_check import verify_tokenizer  # noqa: E402
from distilrt.export.transformers_support import transformers_version  # noqa: E402


def _hf_tokenizer(directory):
    return ckpt.load_tokenizer(ckpt.resolve_checkpoint(str(directory)))


def test_the_bundle_tokenizer_matches_autotokenizer_and_the_report_says_so(tiny_bundles, tiny_checkpoints):
    for name, result in tiny_bundles.items():
        report = json.loads((result.bundle / "report.json").read_text())["tokenizer"]
        assert report["passed"] and report["matched"] == report["inputs"] > 20, name
        assert transformers_version() in report["against"]
        has_file = (tiny_checkpoints[name] / "tokenizer.json").is_file()
        assert (report["checkpoint_tokenizer_json"] == "absent") is not has_file, name


def test_a_tokenizer_file_that_tokenizes_otherwise_is_an_error_naming_the_input(tiny_checkpoints, tmp_path):
    hf_tokenizer = _hf_tokenizer(tiny_checkpoints[QA_NAME])
    saved = json.loads(hf_tokenizer.backend_tokenizer.to_str())
    assert saved["normalizer"]["lowercase"] is True  # the uncased checkpoint
    saved["normalizer"]["lowercase"] = False  # a cased tokenizer.json next to an uncased AutoTokenizer
    altered = tmp_path / "tokenizer.json"
    altered.write_text(json.dumps(saved), encoding="utf-8")
    samples = tokenizer_samples("question-answering", question_answering_probes(8, seed=0), "[MASK]")
    with pytest.raises(VerificationError, match=r"does not tokenize like AutoTokenizer .*input \d+ \(") as error:
        verify_tokenizer(hf_tokenizer, altered, samples, tiny_checkpoints[QA_NAME], transformers_version())
    assert "token ids differ" in str(error.value)


def test_without_a_qa_pipeline_builds_verify_against_the_head_on_torch_logits(tiny_checkpoints, tmp_path,
                                                                            monkeypatch):
    import distilrt.export.task_reference as task_reference_module
    from distilrt.export.build import BuildOptions, build_fp32

    monkeypatch.setattr(task_reference_module, "has_pipeline", lambda task: False)  # as on transformers >= 5.3
    result = build_fp32(str(tiny_checkpoints[QA_NAME]), BuildOptions(out_dir=tmp_path), progress=lambda m: None)
    task = json.loads((result.bundle / "report.json").read_text())["task"]
    assert task["passed"] and "head on the PyTorch model's logits" in task["reference"]
    assert result.manifest.verification["task"]["against"] == task["reference"]


def test_the_head_on_torch_logits_catches_a_model_that_differs(tiny_checkpoints, tiny_bundles, tmp_path):
    """The no-pipeline reference can fail: a bundle of other weights (another seed) does not pass against it."""
    import distilrt
    from distilrt.export.random_checkpoint import make_random_checkpoint
    from distilrt.export.task_reference import TORCH_HEAD, task_reference
    from distilrt.export.verify import verify_task

    checkpoint = ckpt.resolve_checkpoint(str(make_random_checkpoint(QA_NAME, tmp_path / "other", seed=1)))
    hf_tokenizer = ckpt.load_tokenizer(checkpoint)
    settings = ckpt.tokenizer_settings(hf_tokenizer, checkpoint.spec.max_sequence(checkpoint.config))
    model = ckpt.load_model(checkpoint, "eager")
    import distilrt.export.task_reference as task_reference_module

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(task_reference_module, "has_pipeline", lambda task: False)
        reference = task_reference(checkpoint.task, model, hf_tokenizer, settings)
    assert reference.kind == TORCH_HEAD
    with pytest.raises(VerificationError, match="differ from distilrt's question-answering head"):
        verify_task("question-answering", question_answering_probes(8, seed=0), reference.run,
                    distilrt.load(tiny_bundles[QA_NAME].bundle), SCORE_ATOL, reference_name=reference.description)


@pytest.mark.parametrize("name", MLM_CHECKPOINTS)
def test_the_recorded_decode_clean_up_is_what_transformers_does(tiny_checkpoints, name):
    hf_tokenizer = _hf_tokenizer(tiny_checkpoints[name])
    ids = hf_tokenizer("It 's here , is n't it ? Yes !", add_special_tokens=False)["input_ids"]
    raw = hf_tokenizer.decode(ids, clean_up_tokenization_spaces=False)
    for asked in (False, True):
        hf_tokenizer.clean_up_tokenization_spaces = asked
        cleans = hf_tokenizer.decode(ids) != raw
        assert ckpt.decode_cleans_up(hf_tokenizer) is cleans, f"{name}: clean_up_tokenization_spaces={asked}"


def test_the_exporter_and_dtype_are_stated(tiny_bundles):
    export = tiny_bundles[QA_NAME].manifest.stage("export")
    assert export["exporter"] == "torchscript" and export["dtype"] == "float32"
    assert export["attn_implementation"] == ("sdpa" if transformers_version().startswith("4.") else "eager")
    with pytest.raises(UserInputError, match="dynamo graphs do not fuse"):
        ExportConfig(exporter="dynamo")
    with pytest.raises(UserInputError, match="float32"):
        ExportConfig(dtype="float16")
