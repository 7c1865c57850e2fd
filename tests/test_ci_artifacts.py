"""The artifact job (ci/build_artifacts.py) on one tiny stand-in: bundles, lint, engines skipped with the
reason on a machine without TensorRT, and the benchmark and report of every bundle."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # runs the whole artifact job

ROOT = Path(__file__).resolve().parents[1]


def test_artifact_job_publishes_lint_clean_bundles_and_says_why_engines_were_skipped(tmp_path):
    done = subprocess.run(
        [sys.executable, str(ROOT / "ci" / "build_artifacts.py"), "--stand-ins", "tiny", "--checkpoint",
         "albert-base-v2", "--variants", "fp32,fused,fp16,int8-dynamic,int8-qdq-trt", "--out", str(tmp_path),
         "--eval-questions", "20", "--eval-masks", "100", "--calib-size", "16",
         "--bench-batch", "1", "--bench-sequence", "32", "--bench-repeats", "2", "--bench-warmup", "0",
         "--allow-drift"],  # the job's outputs, in whatever environment runs the tests
        capture_output=True, text=True, timeout=900, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    entry = json.loads((tmp_path / "index.json").read_text())["checkpoints"]["albert-base-v2"]
    lint = {variant: (result["ready"], result["rules"]) for variant, result in entry["lint"].items()}
    # int8-dynamic: ONNX Runtime's fused ops, uint8 weights (its CPU recipe) and per-token QuantizeLinear with
    # scales computed at run time, none of which TensorRT takes
    assert lint == {"fp32": (True, []), "fp16": (True, []), "int8-qdq-trt": (True, []),
                    "fused": (False, ["ort-only-op"]),
                    "int8-dynamic": (False, ["ort-only-op", "qdq-scale", "qdq-type", "qdq-zero-point", "tensor-dtype"])}
    assert set(entry["engines"]) == {"fp32-engine", "fp16-engine", "int8-qdq-trt-engine"}
    for engine in entry["engines"].values():
        if not engine["built"]:
            assert "TensorRT" in engine["reason"] or "GPU" in engine["reason"]
            assert engine["bundle"] is None
    summary = json.loads(Path(entry["build_summary"]).read_text())
    assert {v["variant"] for v in summary["variants"]} >= {"fp32", "fp16", "fp16-engine"}

    bench = json.loads((tmp_path / "bench.json").read_text())
    benchmarked = {r["variant"] for r in bench["results"] if r["runner"] == "distilrt" and r["latency_ms"]}
    assert benchmarked == set(entry["bundles"])
    assert all(r["latency_ms"] for r in bench["results"] if r["runner"] == "pytorch")  # the stand-in is the reference
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert {a["variant"] for a in report["accuracy"]} == set(entry["bundles"])
    assert (tmp_path / "report" / "report.md").is_file() and (tmp_path / "report" / "latency-albert-base-v2.png").is_file()
    index = json.loads((tmp_path / "index.json").read_text())
    assert index["constraints"]["file"].endswith("constraints-artifacts.txt") and index["constraints"]["allowed_drift"]
    assert index["bench"]["report"] == str(tmp_path / "report" / "report.md") and index["bench"]["passed_baseline"] is None


def test_artifact_job_refuses_bad_benchmark_settings_and_a_missing_baseline_before_building(tmp_path):
    drifted = tmp_path / "constraints.txt"
    drifted.write_text("onnxruntime==1.0.0\n")  # no environment has it: the job must stop before building
    for extra, message in ((["--bench-sequence", "4"], "sequences must be"),
                           (["--baseline", str(tmp_path / "old.json")], "does not exist"),
                           (["--constraints", str(drifted)], "onnxruntime installed")):
        done = subprocess.run([sys.executable, str(ROOT / "ci" / "build_artifacts.py"), "--stand-ins", "tiny",
                               "--out", str(tmp_path / "out"), *extra],
                              capture_output=True, text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        assert done.returncode != 0 and message in done.stderr and "Traceback" not in done.stderr
        assert not (tmp_path / "out").exists()
