"""The runtime imports and runs with torch, transformers and onnx made unimportable."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from conftest import BUILD_TIME_PACKAGES

BLOCKED = BUILD_TIME_PACKAGES

SCRIPT = textwrap.dedent(
    """
    import importlib.abc, json, sys

    BLOCKED = {blocked!r}

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{{name}} is blocked in this test")
            return None

    sys.meta_path.insert(0, Block())
    import distilrt
    qa = distilrt.load(sys.argv[1])
    answer = qa(question="Who wrote it?", context="It was written by Ada Lovelace in 1843.")
    fm = distilrt.load(sys.argv[2])
    fills = fm("Paris is the [MASK] of France.", top_k=2)
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    print(json.dumps({{"answer": answer, "fills": fills, "heavy": heavy}}))
    """
)


def test_runtime_runs_without_build_time_libraries(tiny_bundles):
    qa = tiny_bundles["distilbert-base-uncased-distilled-squad"].bundle
    fm = tiny_bundles["distilbert-base-uncased"].bundle
    completed = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(blocked=BLOCKED), str(qa), str(fm)],
        capture_output=True, text=True, timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result["heavy"] == []
    assert set(result["answer"]) == {"score", "start", "end", "answer"}
    assert len(result["fills"]) == 2 and {"score", "token", "token_str", "sequence"} == set(result["fills"][0])


def test_blocker_really_blocks():
    """The guard itself must fail an import of torch, or the test above proves nothing."""
    probe = SCRIPT.split("import distilrt")[0] + "import torch\n"
    completed = subprocess.run([sys.executable, "-c", probe.format(blocked=BLOCKED)], capture_output=True, text=True)
    assert completed.returncode != 0 and "torch is blocked" in completed.stderr
