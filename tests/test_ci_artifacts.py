"""The artifact job (ci/build_artifacts.py) on one tiny stand-in: bundles, lint, and engines skipped with the
reason on a machine without TensorRT."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_artifact_job_publishes_lint_clean_bundles_and_says_why_engines_were_skipped(tmp_path):
    done = subprocess.run(
        [sys.executable, str(ROOT / "ci" / "build_artifacts.py"), "--stand-ins", "tiny", "--checkpoint",
         "albert-base-v2", "--variants", "fp32,fused,fp16,int8-dynamic,int8-qdq-trt", "--out", str(tmp_path),
         "--eval-questions", "20", "--eval-masks", "100", "--calib-size", "16"],
        capture_output=True, text=True, timeout=900, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    entry = json.loads((tmp_path / "index.json").read_text())["checkpoints"]["albert-base-v2"]
    lint = {variant: (result["ready"], result["rules"]) for variant, result in entry["lint"].items()}
    assert lint == {"fp32": (True, []), "fp16": (True, []), "int8-qdq-trt": (True, []),
                    "fused": (False, ["ort-only-op"]), "int8-dynamic": (False, ["ort-only-op"])}
    assert set(entry["engines"]) == {"fp32-engine", "fp16-engine", "int8-qdq-trt-engine"}
    for engine in entry["engines"].values():
        if not engine["built"]:
            assert "TensorRT" in engine["reason"] or "GPU" in engine["reason"]
            assert engine["bundle"] is None
    summary = json.loads(Path(entry["build_summary"]).read_text())
    assert {v["variant"] for v in summary["variants"]} >= {"fp32", "fp16", "fp16-engine"}
