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
