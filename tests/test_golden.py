"""The real checkpoints' published outputs (export/assets/seed_examples.json, from the model cards).

Only checkable with the real weights, which these machines cannot download: point DISTILRT_CHECKPOINTS_DIR at
a directory holding <checkpoint-name>/ directories (config.json, weights, tokenizer files) to run it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from distilrt.export.assets import ASSETS_DIR

GOLDEN = json.loads((ASSETS_DIR / "seed_examples.json").read_text())
CHECKPOINTS_DIR = os.environ.get("DISTILRT_CHECKPOINTS_DIR")
# The cards print scores rounded to 4 decimals, from older transformers releases.
SCORE_ATOL = 1e-3


def _real_checkpoint(name: str) -> Path:
    if not CHECKPOINTS_DIR:
        pytest.skip("real weights unavailable (no hub access here): set DISTILRT_CHECKPOINTS_DIR to a directory "
                    f"holding {name}/ to compare with the model card's outputs")
    directory = Path(CHECKPOINTS_DIR) / name
    if not directory.is_dir():
        pytest.skip(f"{directory} does not exist: the real {name} checkpoint is needed for its golden outputs")
    return directory


@pytest.fixture(scope="module")
def real_bundles(tmp_path_factory):
    from distilrt.export.build import BuildOptions, build_fp32

    built = {}

    def get(name):
        if name not in built:
            directory = _real_checkpoint(name)
            out = tmp_path_factory.mktemp("real")
            built[name] = build_fp32(str(directory), BuildOptions(out_dir=out), progress=lambda m: None).bundle
        return built[name]

    return get


@pytest.mark.parametrize("example", GOLDEN["question-answering"], ids=lambda e: f"{e['model']}:{e['question'][:20]}")
def test_question_answering_golden(real_bundles, example):
    import distilrt

    qa = distilrt.load(real_bundles(example["model"]))
    answer = qa(question=example["question"], context=example["context"])
    assert (answer["answer"], answer["start"], answer["end"]) == (example["answer"], example["start"], example["end"])
    assert answer["score"] == pytest.approx(example["score"], abs=SCORE_ATOL)


@pytest.mark.parametrize("example", GOLDEN["fill-mask"], ids=lambda e: f"{e['model']}:{e['text'][:20]}")
def test_fill_mask_golden(real_bundles, example):
    import distilrt

    fills = distilrt.load(real_bundles(example["model"]))(example["text"], top_k=5)
    assert [f["token"] for f in fills] == [g["token"] for g in example["top5"]]
    assert [f["score"] for f in fills] == pytest.approx([g["score"] for g in example["top5"]], abs=SCORE_ATOL)
