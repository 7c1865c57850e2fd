"""The CLI: success paths print results, failures exit non-zero with a one-line reason."""

from __future__ import annotations

import json

import pytest

from distilrt.export.cli import main


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
])
def test_failures_exit_nonzero_with_one_line(tiny_bundles, tmp_path, capsys, argv, message):
    paths = {
        "qa": tiny_bundles["distilbert-base-uncased-distilled-squad"].bundle,
        "fm": tiny_bundles["distilbert-base-uncased"].bundle,
        "missing": tmp_path / "missing",
    }
    assert main([a.format(**paths) for a in argv]) == 1
    err = capsys.readouterr().err
    assert err.startswith("distilrt: error: ") and message in err and err.count("\n") == 1
