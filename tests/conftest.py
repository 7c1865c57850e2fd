"""Shared fixtures: tiny RANDOM-weight stand-ins of the five seed checkpoints (real configs shrunk to 2 layers
and a small hidden size, real vocabularies and tokenizer files), and their fp32 bundles, built once a session."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest

from distilrt.export.assets import SEED_CHECKPOINTS

QA_CHECKPOINTS = ("distilbert-base-uncased-distilled-squad", "distilbert-base-cased-distilled-squad")
MLM_CHECKPOINTS = ("distilbert-base-uncased", "distilroberta-base", "albert-base-v2")
assert set(QA_CHECKPOINTS + MLM_CHECKPOINTS) == set(SEED_CHECKPOINTS)


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
    from distilrt.export.variants import VariantOptions

    return VariantOptions(calib=CalibConfig(size=64, max_seq_len=128),
                          evaluation=EvalConfig(questions=100, masked_positions=400))


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
