"""`distilrt report` and the regression gate on synthetic bench files: rendering, accuracy from the manifests'
verification sections, and a gate that fails planted regressions and passes unchanged or noise-sized changes."""

from __future__ import annotations

import copy
import json
import os
import stat

import pytest

from distilrt.bench.regression import accuracy_noise, compare_reports
from distilrt.bench.report import build_report, render_markdown, write_report
from distilrt.bench.runner import BENCH_SCHEMA, add_ratios
from distilrt.cli import main
from distilrt.errors import UserInputError
from distilrt.files import replace_dir, staging_dir

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CELLS = [(mode, batch, sequence) for mode in ("model", "end_to_end") for batch in (1, 8) for sequence in (128, 384)]


def _verification(variant: str, gate_value: float, items: int = 500) -> dict:
    if variant == "fp32":
        return {"passed": True, "task": {"against": "transformers pipeline", "inputs": 24, "matched": 24,
                                         "max_score_diff": 1e-7, "score_atol": 1e-4}}
    gold = {"exact_match": 70.0, "f1": 80.0, "count": items}
    return {"passed": True,
            "gate": {"metric": "qa_f1_vs_fp32", "threshold": 97.0, "value": gate_value, "passed": True,
                     "margin": gate_value - 97.0},
            "figures": {"questions": items, "vs_fp32": {"f1": gate_value}, "vs_gold": gold, "fp32_vs_gold": gold}}


def synthetic_bench(variant_p50: dict[str, float] | None = None, gate: dict[str, float] | None = None,
                    pytorch_p50: float = 10.0, checkpoint: str = "qa-model", skipped: dict | None = None) -> dict:
    """A bench file as `distilrt bench` writes it: PyTorch, a skipped Optimum and each variant over CELLS; a
    variant's p50 in a cell is its base p50 times the cell's scale, as is PyTorch's."""
    variant_p50 = variant_p50 or {"fp32": 5.0, "int8-dynamic": 2.5}
    gate = gate or {"int8-dynamic": 99.0}
    skipped = skipped or {}
    bundles, results = [], []

    def row(runner, variant, cell, p50, reason=None):
        mode, batch, sequence = cell
        scale = batch * sequence / 128
        return {"checkpoint": checkpoint, "checkpoint_id": f"/ckpt/{checkpoint}", "runner": runner, "variant": variant,
                "bundle": variant and f"/art/{checkpoint}/{variant}", "backend": "onnxruntime", "mode": mode,
                "batch": batch, "sequence": sequence, "repeats": 0 if reason else 20,
                "latency_ms": None if reason else {k: p50 * scale * f for k, f in
                                                   (("p50", 1), ("p90", 1.1), ("p99", 1.2), ("mean", 1.05), ("min", .9))},
                "throughput_seq_per_s": None if reason else batch / (p50 * scale / 1000), "peak_rss_mb": 300.0,
                "ratios": None, "skipped_reason": reason, "failed": False}

    for cell in CELLS:
        results.append(row("pytorch", None, cell, pytorch_p50))
        results.append(row("optimum", None, cell, 0, reason="not installed"))
    for variant, p50 in variant_p50.items():
        bundles.append({"checkpoint": checkpoint, "checkpoint_id": f"/ckpt/{checkpoint}", "variant": variant,
                        "bundle": f"/art/{checkpoint}/{variant}", "task": "question-answering",
                        "architecture": "distilbert", "backend": "onnxruntime", "random_weights": False,
                        "model_mb": 250.0, "verification": _verification(variant, gate.get(variant, 100.0))})
        for cell in CELLS:
            results.append(row("distilrt", variant, cell, p50, skipped.get((variant, cell))))
    add_ratios(results)
    return {"schema": BENCH_SCHEMA, "created": "2025-01-01T00:00:00+00:00",
            "machine": {"platform": "Linux", "cpu": "test CPU", "cores": 2, "memory_gb": 8.0, "load_average": [0.1, 0, 0]},
            "settings": {"threads": 2, "warmup": 3, "repeats": 20, "min_timed_runs": 5, "max_seconds_per_cell": 20.0},
            "tools": {"distilrt": "0.1.0"}, "memory_note": "peak RSS", "bundles": bundles, "results": results}


def _report(**kwargs) -> dict:
    return build_report([synthetic_bench(**kwargs)], sources=["bench.json"])


def _write(path, data):
    path.write_text(json.dumps(data))
    return path


def test_report_writes_json_markdown_and_pngs(tmp_path, capsys):
    bench = _write(tmp_path / "bench.json", synthetic_bench())
    out = tmp_path / "report"
    assert main(["report", str(bench), "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["schema"] == "distilrt-report/1" and report["comparison"] is None
    assert report["plots"] == ["latency-qa-model.png", "accuracy-vs-speedup.png"]
    for name in report["plots"]:
        assert (out / name).read_bytes().startswith(PNG_SIGNATURE)
    markdown = (out / "report.md").read_text()
    assert "## qa-model (question-answering, distilbert)" in markdown
    assert "| runner | variant | mode | batch | sequence | p50 ms |" in markdown
    assert "| distilrt | int8-dynamic | model | 1 | 128 | 2.50 |" in markdown and "4.00×" in markdown
    assert "not measured: optimum (8 cells): not installed" in markdown
    # The per-cell speed-up matrix: PyTorch p50 10 against fp32 5 and int8-dynamic 2.5 in every cell.
    assert "| variant | mode | b1 s128 | b1 s384 | b8 s128 | b8 s384 | geomean |" in markdown
    assert "| fp32 | model | 2.00× | 2.00× | 2.00× | 2.00× | 2.00× |" in markdown
    assert "| int8-dynamic | end_to_end | 4.00× | 4.00× | 4.00× | 4.00× | 4.00× |" in markdown
    assert "![p50 latency vs sequence length](latency-qa-model.png)" in markdown
    assert str(out / "report.md") in capsys.readouterr().out


def test_report_directory_is_replaced_whole(tmp_path):
    out = tmp_path / "report"
    out.mkdir()
    (out / "stale.png").write_bytes(b"old")
    write_report(_report(), out)
    assert not (out / "stale.png").exists() and (out / "report.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["report"]  # no staging or retired directory left


def test_published_directories_are_ordinary_not_private_like_their_staging(tmp_path):
    """mkdtemp stages privately (0700); a report or bundle others read gets the umask's ordinary permissions."""
    umask = os.umask(0o022)
    try:
        with staging_dir(tmp_path / "bundle") as staging:
            replace_dir(staging, tmp_path / "bundle")
        write_report(_report(), tmp_path / "report")
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "bundle").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "report").stat().st_mode) == 0o755


def test_accuracy_comes_from_the_verification_sections_and_eval_files():
    bench = synthetic_bench()
    evaluation = {"bundle": "/art/qa-model/int8-dynamic", "task": "question-answering",
                  "vs_gold": {"exact_match": 71.0, "f1": 81.0, "count": 500}}
    report = build_report([bench], [evaluation])
    accuracy = {a["variant"]: a for a in report["accuracy"]}
    assert accuracy["fp32"]["metric"] == "matched_vs_pipeline" and accuracy["fp32"]["value"] == 100.0
    assert accuracy["fp32"]["items"] == 24 and accuracy["fp32"]["gold"]["from"] == "int8-dynamic"
    int8 = accuracy["int8-dynamic"]
    assert (int8["metric"], int8["value"], int8["threshold"], int8["margin"], int8["items"]) == \
        ("qa_f1_vs_fp32", 99.0, 97.0, 2.0, 500)
    assert int8["gold"]["variant"]["f1"] == 80.0 and int8["eval"]["vs_gold"]["f1"] == 81.0
    assert "EM 70.0 / F1 80.0" in render_markdown(report)
    speedups = {(s["variant"], s["mode"]): s["geomean_speedup_vs_pytorch"] for s in report["speedups"]}
    assert speedups[("int8-dynamic", "model")] == pytest.approx(4.0)
    assert set(speedups) == {(v, m) for v in ("fp32", "int8-dynamic") for m in ("model", "end_to_end")}


def test_unchanged_report_passes():
    result = compare_reports(_report(), _report())
    assert result["passed"] and result["regressions"] == []
    assert result["compared"] == {"accuracy": 2, "latency": 16}


def test_a_uniformly_slower_machine_passes():
    # Everything (PyTorch included) twice as slow: the ratios, and so the gate, are unchanged.
    slower = _report(variant_p50={"fp32": 10.0, "int8-dynamic": 5.0}, pytorch_p50=20.0)
    assert compare_reports(_report(), slower)["passed"]


def test_planted_latency_regression_fails():
    slower = _report(variant_p50={"fp32": 5.0, "int8-dynamic": 2.5 * 1.3})
    result = compare_reports(_report(), slower, latency_threshold=0.10)
    assert not result["passed"]
    assert {(r["kind"], r["variant"]) for r in result["regressions"]} == {("latency", "int8-dynamic")}
    assert len(result["regressions"]) == len(CELLS)
    first = result["regressions"][0]
    assert first["old"] == pytest.approx(0.25) and first["new"] == pytest.approx(0.325)
    assert first["threshold"] == 0.10 and first["limit"] == pytest.approx(0.275)
    assert compare_reports(_report(), slower, latency_threshold=0.5)["passed"]


def test_accuracy_drop_beyond_noise_fails_and_within_noise_passes():
    # 500 questions at 99.0: noise = 2 * sqrt(0.99 * 0.01 / 500) * 100 = 0.89 points.
    assert accuracy_noise(99.0, 500) == pytest.approx(0.8899, abs=1e-3)
    within = compare_reports(_report(gate={"int8-dynamic": 99.0}), _report(gate={"int8-dynamic": 98.3}))
    assert within["passed"]
    beyond = compare_reports(_report(gate={"int8-dynamic": 99.0}), _report(gate={"int8-dynamic": 97.9}))
    assert not beyond["passed"]
    (regression,) = beyond["regressions"]
    assert (regression["kind"], regression["old"], regression["new"]) == ("accuracy", 99.0, 97.9)
    assert regression["threshold"] == pytest.approx(0.8899, abs=1e-3)


def test_noise_has_a_floor_at_a_perfect_score():
    assert accuracy_noise(100.0, 500) == 0.1 and accuracy_noise(50.0, None) == 0.1
    assert not compare_reports(_report(gate={"int8-dynamic": 100.0}), _report(gate={"int8-dynamic": 99.8}))["passed"]


def test_missing_variant_fails_and_new_or_uncovered_ones_are_not_compared():
    without_int8 = _report(variant_p50={"fp32": 5.0})
    result = compare_reports(_report(), without_int8)
    assert [(r["kind"], r["variant"]) for r in result["regressions"]] == [("missing", "int8-dynamic")]

    added = compare_reports(without_int8, _report())
    assert added["passed"] and {"checkpoint": "qa-model", "variant": "int8-dynamic", "cell": None,
                                "reason": "not in the baseline"} in added["not_compared"]
    other_checkpoint = compare_reports(_report(), _report(checkpoint="other-model"))
    assert other_checkpoint["passed"]
    assert {n["reason"] for n in other_checkpoint["not_compared"]} == {"checkpoint not in the new report",
                                                                       "not in the baseline"}


def test_a_cell_skipped_now_is_not_compared():
    cell = CELLS[0]
    skipped = _report(skipped={("int8-dynamic", cell): "failed: BackendError"})
    result = compare_reports(_report(), skipped)
    assert result["passed"]
    (entry,) = result["not_compared"]
    assert entry["cell"] == {"mode": cell[0], "batch": cell[1], "sequence": cell[2]}
    assert "failed: BackendError" in entry["reason"]


def test_cli_gate_exit_codes(tmp_path, capsys):
    baseline_bench = _write(tmp_path / "old-bench.json", synthetic_bench())
    assert main(["report", str(baseline_bench), "--out", str(tmp_path / "old")]) == 0
    baseline = tmp_path / "old" / "report.json"

    assert main(["report", str(baseline_bench), "--out", str(tmp_path / "same"), "--baseline", str(baseline)]) == 0
    assert json.loads((tmp_path / "same" / "report.json").read_text())["comparison"]["passed"]
    capsys.readouterr()

    slower = _write(tmp_path / "new-bench.json", synthetic_bench(variant_p50={"fp32": 5.0, "int8-dynamic": 3.25}))
    assert main(["report", str(slower), "--out", str(tmp_path / "new"), "--baseline", str(baseline)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("distilrt: error: 8 regression(s) against") and "\n" not in err
    markdown = (tmp_path / "new" / "report.md").read_text()  # written even when the gate fails
    assert "## Regression gate" in markdown and "FAILED: 8 regression(s)" in markdown
    # A bench file works as the baseline too.
    assert main(["report", str(slower), "--out", str(tmp_path / "b"), "--baseline", str(baseline_bench)]) == 1


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    (json.dumps({"schema": "something-else"}), "is not a `distilrt bench` file"),
])
def test_cli_rejects_bad_bench_files(tmp_path, capsys, content, message):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    assert main(["report", str(bad), "--out", str(tmp_path / "out")]) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_negative_latency_threshold_is_a_user_error():
    with pytest.raises(UserInputError):
        compare_reports(_report(), copy.deepcopy(_report()), latency_threshold=-0.1)
