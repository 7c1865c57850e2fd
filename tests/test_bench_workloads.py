"""`distilrt bench --workload`: held-out data sets through every runner, scored against the pipeline's answers.
Tiny RANDOM-weight bundles: the figures are checked for shape and consistency, never for speed."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import MLM_NAME, QA_NAME
from test_architecture import BLOCKED, WORKER

from distilrt.bench import runner as bench_runner
from distilrt.bench.report import build_report, render_markdown, write_report
from distilrt.bench.runner import BenchConfig, bench_bundles, optimum_installed
from distilrt.bench.worker import compact_answers, run_workload
from distilrt.bench.workload_scores import add_workload_ratios, mlm_accuracy, qa_accuracy
from distilrt.bench.workloads import DEFAULT_ITEMS, Workload, chunk_size, parse_workload, workload_set
from distilrt.calib import SQUAD_DEV, WIKITEXT_TEST, WIKITEXT_VALID
from distilrt.calib.sets import EVALUATION, EvalConfig, qa_evaluation_set, split_of
from distilrt.calib.squad import read_squad
from distilrt.calib.text import read_lines
from distilrt.cli import main
from distilrt.errors import UserInputError
from distilrt.tokenization import load_tokenizer

OPTIMUM_REFERENCES = ("optimum", "optimum-int8", "optimum-o2-int8")


def test_workload_specs_parse_with_a_default_count():
    assert parse_workload("squad-dev:50") == Workload("squad-dev", 50)
    assert parse_workload("wikitext") == Workload("wikitext", DEFAULT_ITEMS)
    assert parse_workload("squad-dev").task == "question-answering" and parse_workload("wikitext:8").task == "fill-mask"


@pytest.mark.parametrize("text", ["squad-dev:abc", "squad-dev:0", "squad-dev:3", "squad-dev:-5", "squad-dev:",
                                  "imagenet:100", "", "SQuAD-dev"])
def test_bad_workload_specs_name_the_flag_and_the_fix(text):
    with pytest.raises(UserInputError, match="--workload") as raised:
        parse_workload(text)
    assert "e.g. --workload squad-dev:1000" in str(raised.value)


@pytest.mark.parametrize("argv, message", [
    (["--workload", "squad-dev:x"], "--workload 'squad-dev:x'"),
    (["--workload-only"], "--workload-only needs at least one --workload"),
    (["--workload", "wikitext:20"], "--workload wikitext:20 is a fill-mask workload"),
    (["--workload", "squad-dev:20", "--workload-batch", "0"], "--workload-batch must be a positive integer"),
    (["--workload", "squad-dev:20", "--workload-only", "--batch", "2"], "--workload-only runs no grid"),
])
def test_the_cli_rejects_bad_workload_settings_in_one_line(tiny_bundles, tmp_path, capsys, argv, message):
    out = tmp_path / "bench.json"
    assert main(["bench", str(tiny_bundles[QA_NAME].bundle), *argv, "--json", str(out)]) == 1
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1 and not out.exists()


def test_squad_workload_is_the_held_out_evaluation_split_in_the_gates_order():
    made = workload_set(Workload("squad-dev", 12), None, None, seed=0)
    gate = qa_evaluation_set(EvalConfig(questions=12, seed=0))
    assert made.inputs == [{"question": q.question, "context": q.context} for q in gate.questions]
    assert made.gold == [list(q.answers) for q in gate.questions] and all(made.gold)
    assert all(split_of(q.title) == EVALUATION for q in gate.questions)  # no calibration article
    assert made.identity["split"] == EVALUATION and made.identity["size"] == 12
    available = sum(1 for q in read_squad(SQUAD_DEV) if q.answers and split_of(q.title) == EVALUATION)
    with pytest.raises(UserInputError, match=f"--workload squad-dev:{available + 1}: .*lower N"):
        workload_set(Workload("squad-dev", available + 1), None, None, seed=0)


@pytest.mark.parametrize("name, mask", [(MLM_NAME, "[MASK]"), ("distilroberta-base", "<mask>")])
def test_wikitext_workload_masks_one_single_token_word_of_a_held_out_sentence(tiny_bundles, name, mask):
    tokenizer = load_tokenizer(tiny_bundles[name].bundle / "tokenizer.json")
    made = workload_set(Workload("wikitext", 30), tokenizer, mask, seed=0)
    test_text, valid_text = "\n".join(read_lines(WIKITEXT_TEST)), "\n".join(read_lines(WIKITEXT_VALID))
    assert len(made.inputs) == len(made.gold) == 30 and len(set(made.inputs)) == 30
    for text, gold in zip(made.inputs, made.gold):
        assert text.count(mask) == 1 and gold["word"].isalpha()
        sentence = text.replace(mask, gold["word"])
        assert sentence in test_text and sentence not in valid_text  # the evaluation file, not calibration's
        word_start = text.index(mask)
        encoding = tokenizer.encode(sentence, add_special_tokens=False)
        covering = [i for i, (s, e) in enumerate(encoding.offsets) if s < word_start + len(gold["word"]) and e > word_start]
        assert [encoding.ids[i] for i in covering] == [gold["id"]]  # the gold label is the one masked token
    assert made.identity["split"] == EVALUATION and made.identity["source"] == f"shipped:{WIKITEXT_TEST.name}"
    assert workload_set(Workload("wikitext", 30), tokenizer, mask, seed=0) == made
    assert workload_set(Workload("wikitext", 30), tokenizer, mask, seed=1).inputs != made.inputs


class _EchoRunner:
    """Answers each input with itself, so the order and count of the answers can be checked."""

    expected_errors = (UserInputError,)

    def __init__(self):
        self.calls = []

    def answerer(self, task, batch, max_seq_len):
        def answer(inputs):
            self.calls.append(len(inputs))
            answers = [{"answer": i["question"], "start": 0, "end": 1, "score": 0.5} for i in inputs]
            return answers[0] if len(answers) == 1 else answers  # as the pipeline: one input, one bare answer
        return answer


def test_a_workload_runs_every_item_in_order_in_chunks_of_whole_batches():
    inputs = [{"question": f"q{i}", "context": "c"} for i in range(21)]
    runner = _EchoRunner()
    chunk = chunk_size(21, 4)
    workload = {"name": "squad-dev", "unit": "questions", "inputs": inputs, "batch": 4, "max_seq_len": 64,
                "chunk": chunk}
    result = run_workload(runner, {"task": "question-answering"}, workload, "echo")
    assert chunk % 4 == 0 and runner.calls == [4] + [chunk] * (21 // chunk) + [21 % chunk]  # warm-up batch first
    assert [o["answer"] for o in result["outputs"]] == [i["question"] for i in inputs]
    assert result["items"] == 21 and result["items_per_s"] == pytest.approx(21 / result["seconds"])
    assert chunk_size(1000, 8) == 104 and chunk_size(10, 8) == 8


def test_compact_answers_keep_one_record_per_input():
    assert compact_answers("question-answering", {"answer": "a", "start": 1, "end": 2, "score": 0.1}, 1) == \
        [{"answer": "a", "start": 1, "end": 2, "score": 0.1}]
    proposals = [[{"token": 7, "token_str": "x", "score": 0.5}, {"token": 3, "token_str": "y", "score": 0.2}]] * 2
    assert compact_answers("fill-mask", proposals, 2) == [{"tokens": [7, 3], "token_str": "x"}] * 2
    assert compact_answers("fill-mask", proposals[0], 1) == [{"tokens": [7, 3], "token_str": "x"}]
    with pytest.raises(ValueError, match="3 inputs gave 2 answers"):
        compact_answers("fill-mask", proposals, 3)


def test_accuracy_is_scored_against_the_pipeline_and_the_gold_labels():
    qa = qa_accuracy([{"answer": "the red fox"}, {"answer": "1843"}], [{"answer": "red fox"}, {"answer": "1842"}],
                     [["red fox jumps"], ["1843", "in 1843"]])
    assert qa["vs_pipeline"]["exact_match"] == 50.0 and qa["vs_pipeline"]["f1"] == 50.0
    assert qa["vs_gold"]["exact_match"] == 50.0 and qa["vs_gold"]["f1"] == pytest.approx(100 * (0.8 + 1) / 2)
    mlm = mlm_accuracy([{"tokens": [5, 6]}, {"tokens": [1, 9]}], [{"tokens": [5, 1]}, {"tokens": [2, 9]}],
                       [{"id": 6}, {"id": 1}])
    assert mlm["vs_pipeline"]["top1_agreement"] == 50.0
    assert mlm["vs_gold"] == {"top1_accuracy": 50.0, "top5_accuracy": 100.0, "count": 2}
    assert mlm_accuracy([{"tokens": [5]}], None, [{"id": 5}])["vs_pipeline"] is None


def test_ratios_are_over_the_pipeline_and_the_faster_optimum_int8_of_the_same_workload():
    def row(runner, speed, variant=None, items=100):
        return {"checkpoint_id": "a", "workload": "squad-dev", "items": items, "batch": 8, "runner": runner,
                "variant": variant, "items_per_s": speed, "ratios": None}

    rows = [row("pytorch", 10.0), row("optimum-int8", 40.0), row("optimum-o2-int8", 50.0),
            row("distilrt", 100.0, "int8-dynamic"), row("optimum", None), row("distilrt", 7.0, "fp32", items=50)]
    add_workload_ratios(rows)
    assert rows[3]["ratios"] == {"vs_pipeline": 10.0, "vs_optimum_int8": 2.0}
    assert rows[3]["optimum_int8_reference"] == "optimum-o2-int8"
    assert rows[0]["ratios"] == {"vs_pipeline": None, "vs_optimum_int8": 0.2}
    assert rows[2]["ratios"]["vs_optimum_int8"] is None and rows[4]["ratios"] is None
    assert rows[5]["ratios"] == {"vs_pipeline": None, "vs_optimum_int8": None}  # another workload: no references


def test_a_workload_only_run_of_a_bundle_reports_speed_with_accuracy(tiny_bundles, tmp_path, monkeypatch):
    monkeypatch.setattr(bench_runner, "optimum_installed", lambda: False)  # as in CI, whatever is installed here
    messages = []
    config = BenchConfig(threads=1, grid=False, workloads=("squad-dev:12",), workload_batch=4,
                         workload_references=OPTIMUM_REFERENCES)
    bench = bench_bundles([tiny_bundles[QA_NAME].bundle], config, progress=messages.append)
    assert bench["results"] == []
    rows = {r["runner"]: r for r in bench["workloads"]}
    assert set(rows) == {*OPTIMUM_REFERENCES, "distilrt"}
    for name in OPTIMUM_REFERENCES:
        assert rows[name]["items_per_s"] is None and "not installed" in rows[name]["skipped_reason"]
    row = rows["distilrt"]
    assert row["skipped_reason"] is None and row["variant"] == "fp32" and row["items"] == 12 and row["batch"] == 4
    assert row["items_per_s"] == pytest.approx(12 / row["seconds"]) and row["peak_rss_mb"] > 0
    assert row["max_seq_len"] == 384 and row["data"]["split"] == EVALUATION
    assert row["accuracy"]["vs_pipeline"] is None  # no pipeline ran: nothing to agree with
    assert row["accuracy"]["vs_gold"]["count"] == 12 and 0 <= row["accuracy"]["vs_gold"]["f1"] <= 100
    assert any("squad-dev 12/12 questions" in m for m in messages)
    assert any("optimum-int8: workloads skipped: not installed" in m for m in messages)

    report = build_report([bench])
    markdown = render_markdown(report)
    assert "### Workloads" in markdown and "| distilrt | fp32 | squad-dev | 12 | 4 |" in markdown
    assert "- not measured: optimum-o2-int8 on squad-dev:12: not installed" in markdown
    assert "### Latency" not in markdown and "timed runs per cell" not in markdown  # no grid ran
    assert "workloads squad-dev:12, list calls of batch 4" in markdown
    written = write_report(report, tmp_path / "report")
    assert any(p.name.startswith("workloads-") and p.suffix == ".png" for p in written)
    assert json.loads((tmp_path / "report" / "report.json").read_text())["workloads"][-1]["runner"] == "distilrt"


def test_the_worker_runs_a_workload_on_the_lean_runtime_without_torch(tiny_bundles, tmp_path):
    bundle = tiny_bundles[MLM_NAME]
    tokenizer = load_tokenizer(bundle.bundle / "tokenizer.json")
    made = workload_set(Workload("wikitext", 10), tokenizer, "[MASK]", seed=0)
    spec = {"runner": "distilrt", "label": "lean", "bundle": str(bundle.bundle), "task": "fill-mask", "threads": 1,
            "cells": [], "workloads": [{"name": "wikitext", "unit": "masked sentences", "inputs": made.inputs,
                                        "batch": 4, "max_seq_len": 128, "chunk": 8}]}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    completed = subprocess.run([sys.executable, "-c", WORKER.format(blocked=BLOCKED), str(tmp_path / "spec.json"),
                                str(tmp_path / "out.json")], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout.strip().splitlines()[-1]) == []
    (result,) = json.loads((tmp_path / "out.json").read_text())["workloads"]
    assert len(result["outputs"]) == 10 and all(len(o["tokens"]) == 5 for o in result["outputs"])


@pytest.mark.slow  # the transformers pipeline on PyTorch, and Optimum's three models where it is installed
def test_workloads_beside_the_grid_agree_with_the_pipeline_answer_for_answer(tiny_bundles, tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = ["bench", str(tiny_bundles[QA_NAME].bundle), str(tiny_bundles[MLM_NAME].bundle), "--batch", "1",
            "--sequence", "32", "--model-only", "--repeats", "2", "--warmup", "0", "--threads", "1",
            "--workload", "squad-dev:24", "--workload", "wikitext:24", "--workload-batch", "8", "--json", str(out)]
    assert main(argv) == 0
    assert "| runner | variant | workload | items |" in capsys.readouterr().out
    bench = json.loads(out.read_text())
    assert {r["runner"] for r in bench["results"]} == {"pytorch", "optimum", "distilrt"}  # the grid ran too
    for name, workload, agreement in ((QA_NAME, "squad-dev", "f1"), (MLM_NAME, "wikitext", "top1_agreement")):
        rows = {r["runner"]: r for r in bench["workloads"] if r["checkpoint"] == name}
        assert {r["workload"] for r in rows.values()} == {workload}
        pipeline, distilrt = rows["pytorch"], rows["distilrt"]
        assert pipeline["items_per_s"] > 0 and pipeline["peak_rss_mb"] > distilrt["peak_rss_mb"]
        assert pipeline["accuracy"]["pipeline"].startswith("transformers")
        # The runtime gives the pipeline's answers; had an answer been lost or moved, they would disagree.
        assert distilrt["accuracy"]["vs_pipeline"][agreement] == 100.0 and distilrt["accuracy"]["vs_pipeline"]["count"] == 24
        assert distilrt["accuracy"]["vs_gold"] == pipeline["accuracy"]["vs_gold"]
        assert distilrt["ratios"]["vs_pipeline"] == pytest.approx(distilrt["items_per_s"] / pipeline["items_per_s"])
        for reference in OPTIMUM_REFERENCES:
            row = rows[reference]
            if not optimum_installed():
                assert "not installed" in row["skipped_reason"]
            elif reference == "optimum-o2-int8" and not row["items_per_s"]:
                # optimum-onnx 0.1 with onnxruntime 1.32 cannot quantize its O2 model (docs/design.md): say so
                assert "ORTQuantizer cannot quantize its own O2-optimized model" in row["skipped_reason"]
            else:
                assert row["accuracy"]["vs_pipeline"]["count"] == 24 and row["peak_rss_mb"] > 0
        if optimum_installed():
            assert rows["optimum-int8"]["info"]["file"] == "model_quantized.onnx"
            assert distilrt["optimum_int8_reference"] in ("optimum-int8", "optimum-o2-int8")
