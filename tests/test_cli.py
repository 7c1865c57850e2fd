"""The CLI: success paths print results, failures exit non-zero with a one-line reason."""

from __future__ import annotations

import json

import pytest

from distilrt.cli import main


def test_run_question_answering(tiny_bundles, capsys):
    bundle = tiny_bundles["distilbert-base-cased-distilled-squad"].bundle
    assert main(["run", str(bundle), "--question", "Who?", "--context", "Ada wrote it in 1843.", "--top-k", "2"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert len(result) == 2 and all(set(r) == {"score", "start", "end", "answer"} for r in result)


def test_run_fill_mask(tiny_bundles, capsys):
    assert main(["run", str(tiny_bundles["distilroberta-base"].bundle), "--text", "Paris is the <mask>."]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 5


def test_inspect(tiny_bundles, capsys):
    assert main(["inspect", str(tiny_bundles["albert-base-v2"].bundle)]) == 0
    out = capsys.readouterr().out
    assert "RANDOM weights" in out and "fill-mask (albert)" in out and "verification:  passed" in out


@pytest.mark.parametrize("argv, message", [
    (["run", "{qa}", "--text", "no question here"], "takes --question and --context"),
    (["run", "{qa}", "--question", "", "--context", "Some context."], "question"),
    (["run", "{fm}", "--text", "There is no mask token here."], "[MASK]"),
    (["inspect", "{missing}"], "does not exist"),
    (["build", "{missing}"], "could not be fetched"),
    (["serve", "{missing}"], "is not a bundle and holds none"),
    (["serve", "x={qa}", "x={fm}"], "would both be model 'x'"),
    (["serve", "{qa}", "--admin-key", "too-short"], "--admin-key must be at least 16 characters"),
    (["serve", "{qa}", "--host", "localhost"], "--host 'localhost' is not an IP address"),
    (["triton-repo", "{qa}", "--out", "{out}", "--max-batch-size", "0"], "max_batch_size must be an integer >= 1"),
])
def test_failures_exit_nonzero_with_one_line(tiny_bundles, tmp_path, capsys, argv, message):
    paths = {
        "qa": tiny_bundles["distilbert-base-uncased-distilled-squad"].bundle,
        "fm": tiny_bundles["distilbert-base-uncased"].bundle,
        "missing": tmp_path / "missing",
        "out": tmp_path / "repo",
    }
    assert main([a.format(**paths) for a in argv]) == 1
    err = capsys.readouterr().err
    assert err.startswith("distilrt: error: ") and message in err and err.count("\n") == 1


@pytest.mark.slow  # builds variants
def test_build_with_variants_writes_a_summary(tiny_checkpoints, tmp_path, capsys):
    directory = tiny_checkpoints["distilbert-base-uncased"]
    argv = ["build", str(directory), "--out", str(tmp_path), "--variants", "fp32,fused,int8-dynamic",
            "--task-samples", "4", "--eval-masks", "200"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "fused: " in out and "int8-dynamic: " in out
    summary = json.loads((tmp_path / directory.name / "build-summary.json").read_text())
    assert [v["variant"] for v in summary["variants"]] == ["fp32", "fused", "int8-dynamic"]
    assert all(v["published"] for v in summary["variants"])
    assert sorted(p.name for p in (tmp_path / directory.name).iterdir()) == [
        "build-summary.json", "build.log", "fp32", "fused", "int8-dynamic"]


@pytest.mark.slow  # builds a variant twice
def test_per_tensor_int8_dynamic_is_refused_unless_allowed(tiny_checkpoints, tmp_path, capsys):
    """--activation-scales tensor makes ONNX Runtime's batch-dependent int8-dynamic: not published (exit 1, the
    reason in the summary) unless --allow-batch-variant, which publishes it marked as batch dependent."""
    directory = tiny_checkpoints["distilbert-base-cased-distilled-squad"]
    argv = ["build", str(directory), "--out", str(tmp_path), "--variants", "int8-dynamic", "--task-samples", "4",
            "--eval-questions", "100", "--no-int8-search", "--activation-scales", "tensor"]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert "int8-dynamic: NOT published: int8-dynamic answers differently in a batch" in captured.out
    assert captured.err.strip().splitlines()[-1].startswith("distilrt: error: not published: int8-dynamic")
    assert main(argv + ["--allow-batch-variant"]) == 0
    manifest = json.loads((tmp_path / directory.name / "int8-dynamic" / "manifest.json").read_text())
    assert manifest["stages"]["invariance"]["passed"] is False
    assert manifest["stages"]["precision"]["activation_scales"] == "tensor"


def test_eval_command(tiny_bundles, capsys):
    bundle = tiny_bundles["distilbert-base-uncased-distilled-squad"].bundle
    assert main(["eval", str(bundle), "--reference", str(bundle), "--questions", "20"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["vs_reference"]["exact_match"] == 100.0 and result["vs_reference"]["count"] == 20
    assert 0.0 <= result["vs_gold"]["f1"] <= 100.0
    assert result["evaluation_set"]["split"] == "evaluation"


def test_empty_calibration_file_fails_before_any_work(tiny_checkpoints, tmp_path, capsys):
    calib = tmp_path / "calib.txt"
    calib.write_text("")
    argv = ["build", str(tiny_checkpoints["albert-base-v2"]), "--out", str(tmp_path / "out"),
            "--variants", "int8-qdq", "--calib", str(calib)]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("distilrt: error: data file") and "is empty" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name, content, message", [
    ("albert-base-v2", "just one short line of text\n", "fewer than"),
    ("distilbert-base-cased-distilled-squad", '{"data": "not squad"}', "is not SQuAD-format JSON"),
])
def test_unusable_calibration_file_is_a_clear_error(tiny_checkpoints, tmp_path, capsys, name, content, message):
    """Too few samples or the wrong format shows once the set is made: one clear line, no variant published."""
    calib = tmp_path / "calib.data"
    calib.write_text(content)
    argv = ["build", str(tiny_checkpoints[name]), "--out", str(tmp_path / "out"),
            "--variants", "int8-qdq", "--calib", str(calib), "--task-samples", "2"]
    assert main(argv) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("distilrt: error: ") and message in last
    assert sorted(p.name for p in (tmp_path / "out" / name).iterdir()) == ["build.log", "fp32"]


def test_unknown_variant_is_refused(tiny_checkpoints, capsys):
    assert main(["build", str(tiny_checkpoints["albert-base-v2"]), "--variants", "fp32,int4"]) == 1
    assert "unknown variants ['int4']" in capsys.readouterr().err


def test_demo_builds_a_labelled_stand_in(tmp_path, capsys):
    assert main(["demo", "--tiny", "--checkpoint", "albert-base-v2", "--out", str(tmp_path)]) == 0
    table = capsys.readouterr().out
    assert "RANDOM-weight stand-in" in table and "| albert-base-v2 | fill-mask | albert |" in table
    assert "| 24/24 |" in table
    assert (tmp_path / "albert-base-v2" / "fp32" / "manifest.json").is_file()
