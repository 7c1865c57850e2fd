"""Seeded synthetic token ids: the inputs that tracing, tensor comparisons and model-only benchmarks run on.

Real text (SQuAD, WikiText) is for the task checks; these exercise exact shapes. Two kinds:
- padded feeds: rows of random lengths, so every batch above 1 carries padding, and two token-type segments;
- full feeds: exactly (batch, sequence) ordinary tokens with a full attention mask, for timing.
Fill-mask graphs also take ``mask_positions``: three random real-token positions per row in padded feeds, the
middle token in full feeds.
Numpy only: the benchmark worker that times the lean runtime imports this.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from distilrt.errors import UnsupportedError
from distilrt.tokenization import MASK_POSITIONS

KNOWN_INPUTS = ("input_ids", "attention_mask", "token_type_ids", MASK_POSITIONS)
# mask_positions per row in padded feeds: more than one, so a row's positions are gathered apart from each other.
_PADDED_MASKS = 3
# Token ids below this are special or rare tokens in every seed vocabulary; random ids above it are ordinary words.
_FIRST_ORDINARY_ID = 1000

Feed = dict[str, np.ndarray]


def padded_feed(input_names: Sequence[str], batch: int, sequence: int, vocab_size: int, pad_token_id: int,
                rng: np.random.Generator) -> Feed:
    """Seeded token ids with random lengths per row (so batches carry padding) and two token-type segments.

    Tracing needs the padding too: with an all-ones attention mask, transformers' sdpa path skips the mask
    and the traced graph would ignore attention_mask (measured: logits ~2 off on padded batches)."""
    lengths = rng.integers(max(1, sequence // 2), sequence + 1, size=batch)
    lengths[0] = sequence  # the longest row fills the batch, as a tokenizer's padding does
    positions = np.arange(sequence)[None, :]
    attention_mask = (positions < lengths[:, None]).astype(np.int64)
    input_ids = rng.integers(0, vocab_size, size=(batch, sequence), dtype=np.int64)
    input_ids = np.where(attention_mask == 1, input_ids, pad_token_id)
    token_type_ids = ((positions >= (lengths[:, None] // 2)) & (attention_mask == 1)).astype(np.int64)
    values = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
    if MASK_POSITIONS in input_names:  # drawn only here, so the other inputs' stream stays as it was
        # Random real-token positions, several per row (repeats allowed), so the gather is checked off-diagonal.
        values[MASK_POSITIONS] = rng.integers(0, lengths[:, None], size=(batch, min(_PADDED_MASKS, sequence)))
    return _select(input_names, values)


def padded_feeds(input_names: Sequence[str], shapes: Iterable[tuple[int, int]], seed: int, vocab_size: int,
                 pad_token_id: int) -> dict[tuple[int, int], Feed]:
    """One padded feed per (batch, sequence), from one seeded stream: every stage is compared on these."""
    rng = np.random.default_rng(seed)
    return {(b, s): padded_feed(input_names, b, s, vocab_size, pad_token_id, rng) for b, s in shapes}


def full_feed(input_names: Sequence[str], batch: int, sequence: int, vocab_size: int, seed: int) -> Feed:
    """Seeded ordinary token ids of exactly (batch, sequence), a full attention mask and zero token types."""
    rng = np.random.default_rng([seed, batch, sequence])  # the same ids for every runner of a cell
    low = min(_FIRST_ORDINARY_ID, vocab_size // 2)
    return _select(input_names, {
        "input_ids": rng.integers(low, vocab_size, size=(batch, sequence), dtype=np.int64),
        "attention_mask": np.ones((batch, sequence), dtype=np.int64),
        "token_type_ids": np.zeros((batch, sequence), dtype=np.int64),
        # One masked word per text, as fill-mask is used: the graph projects that position onto the vocabulary.
        MASK_POSITIONS: np.full((batch, 1), sequence // 2, dtype=np.int64),
    })


def _select(input_names: Sequence[str], values: Feed) -> Feed:
    unknown = [name for name in input_names if name not in values]
    if unknown:
        raise UnsupportedError(f"synthetic feeds know {', '.join(KNOWN_INPUTS)}, not {unknown}")
    return {name: values[name] for name in input_names}
