"""The real configs and tokenizer files shipped with distilrt (see assets/NOTICE.md for sources and licenses)."""

from __future__ import annotations

from pathlib import Path

from distilrt.errors import UnsupportedError

ASSETS_DIR = Path(__file__).parent / "assets"

# The five checkpoints distilrt is made for, and the tokenizer files each one uses.
SEED_CHECKPOINTS: dict[str, str] = {
    "distilbert-base-uncased-distilled-squad": "bert-base-uncased",
    "distilbert-base-cased-distilled-squad": "bert-base-cased",
    "distilbert-base-uncased": "bert-base-uncased",
    "distilroberta-base": "roberta-base",
    "albert-base-v2": "albert-base-v2",
}


def config_path(checkpoint: str) -> Path:
    _check_known(checkpoint)
    return ASSETS_DIR / "configs" / checkpoint / "config.json"


def tokenizer_dir(checkpoint: str) -> Path:
    _check_known(checkpoint)
    return ASSETS_DIR / "tokenizers" / SEED_CHECKPOINTS[checkpoint]


def _check_known(checkpoint: str) -> None:
    if checkpoint not in SEED_CHECKPOINTS:
        raise UnsupportedError(
            f"no shipped config for {checkpoint!r}; shipped: {', '.join(SEED_CHECKPOINTS)}"
        )
