"""Shared fixtures: tiny RANDOM-weight stand-ins of the five seed checkpoints (real configs shrunk to 2 layers
and a small hidden size, real vocabularies and tokenizer files), and their fp32 bundles, built once a session."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest

from distilrt.config import default_of
from distilrt.export.assets import SEED_CHECKPOINTS
from distilrt.export.config import Tolerances

# Constants the test modules share (import them from conftest, do not write them again).
QA_CHECKPOINTS = ("distilbert-base-uncased-distilled-squad", "distilbert-base-cased-distilled-squad")
MLM_CHECKPOINTS = ("distilbert-base-uncased", "distilroberta-base", "albert-base-v2")
assert set(QA_CHECKPOINTS + MLM_CHECKPOINTS) == set(SEED_CHECKPOINTS)
QA_NAME, MLM_NAME = QA_CHECKPOINTS[0], "albert-base-v2"  # one of each task where one is enough
# Scores of the runtime vs the transformers pipeline: the build's own task-level tolerance.
SCORE_ATOL = default_of(Tolerances, "score_atol")
# What the lean runtime and the benchmark worker must run without.
BUILD_TIME_PACKAGES = ("torch", "transformers", "onnx", "optimum", "polygraphy")


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory):
    from distilrt.export.random_checkpoint import make_random_checkpoint

    root = tmp_path_factory.mktemp("checkpoints")
    return {name: make_random_checkpoint(name, root / name, tiny=True) for name in SEED_CHECKPOINTS}


@pytest.fixture(scope="session")
def tiny_bundles(tiny_checkpoints, tmp_path_factory):
    from distilrt.export.build import BuildOptions, build_fp32

    out = tmp_path_factory.mktemp("artifacts")
    return {
        name: build_fp32(str(directory), BuildOptions(out_dir=out), progress=lambda message: None)
        for name, directory in tiny_checkpoints.items()
    }


# Small calibration and evaluation sets: the defaults (256 calibration inputs, 500 questions, 2,000 masked
# positions) are for real builds; tests check the mechanics on tiny models.
def small_variant_options():
    from distilrt.calib.sets import CalibConfig, EvalConfig
    from distilrt.export.derived_bundles import VariantOptions

    # No int8 search: it has tests of its own, and the variant matrix checks the spec's recipes.
    return VariantOptions(calib=CalibConfig(size=64, max_seq_len=128),
                          evaluation=EvalConfig(questions=100, masked_positions=400), int8_search=None)


@pytest.fixture(scope="session")
def tiny_variant_builds(tiny_checkpoints, tmp_path_factory):
    """Every variant of every seed checkpoint's tiny stand-in: {name: (fp32 BuildResult, [VariantOutcome])}."""
    from distilrt.export.build import BuildOptions, build_fp32
    from distilrt.export.variants import VARIANTS, build_variants

    out = tmp_path_factory.mktemp("variant-artifacts")
    builds = {}
    for name, directory in tiny_checkpoints.items():
        fp32 = build_fp32(str(directory), BuildOptions(out_dir=out), progress=lambda message: None)
        builds[name] = (fp32, build_variants(fp32, VARIANTS, small_variant_options(), progress=lambda message: None))
    return builds


def onnx_bundle_manifest(variant: str, input_names=("input_ids",), *, shape_profile=None,
                         model_max_length: int = 512, model_format: str = "onnx") -> dict:
    """The parts of an ONNX bundle's manifest that engine settings read, for tests that need no files."""
    from distilrt.export.config import ShapeProfile
    from distilrt.tokenization import TokenizerSettings

    model_file = {"onnx": ("model.onnx", "onnxruntime"), "tensorrt-plan": ("model.plan", "tensorrt")}[model_format]
    return {
        "variant": variant,
        "model": {"file": model_file[0], "format": model_format, "backend": model_file[1],
                  "inputs": [{"name": n, "dtype": "int64", "shape": ["batch", "sequence"]} for n in input_names]},
        "shape_profile": (shape_profile or ShapeProfile()).to_dict(),
        "tokenizer": {"file": "tokenizer.json", "settings": TokenizerSettings(
            model_input_names=tuple(input_names), padding_side="right", pad_token_id=0, cls_token_id=101,
            mask_token="[MASK]", mask_token_id=103, model_max_length=model_max_length,
            clean_up_tokenization_spaces=True).to_dict()},
    }


def pytest_collection_modifyitems(config, items):
    """Every test that needs the whole variant matrix (minutes to build on 2 cores) is slow."""
    for item in items:
        if "tiny_variant_builds" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
