"""Plain-text data for fill-mask (WikiText-2 or any UTF-8 text file)."""

from __future__ import annotations

import random
import re
from pathlib import Path

from distilrt.errors import UserInputError

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def read_lines(path: str | Path) -> list[str]:
    """The non-blank lines of a UTF-8 text file, stripped, in file order."""
    path = Path(path)
    lines = [line.strip() for line in _read_text(path).splitlines() if line.strip()]
    if not lines:
        raise UserInputError(f"text file {path} is empty; pass a UTF-8 text file that holds some text")
    return lines


def read_sentences(path: str | Path, *, min_words: int = 6, max_words: int = 60) -> list[str]:
    """Sentences of a text file, skipping blank lines and WikiText's '= Heading =' lines."""
    path = Path(path)
    sentences = []
    for line in _read_text(path).splitlines():
        line = line.strip()
        if not line or line.startswith("="):
            continue
        for sentence in _SENTENCE_END.split(line):
            if min_words <= len(sentence.split()) <= max_words:
                sentences.append(sentence)
    if not sentences:
        raise UserInputError(f"{path} has no sentences of {min_words}-{max_words} words")
    return sentences


def mask_words(sentences: list[str], mask_token: str, count: int, seed: int, max_masks: int = 2) -> list[str]:
    """``count`` seeded sentences with 1..max_masks whole words replaced by the mask token."""
    rng = random.Random(seed)
    picked = [sentences[i] for i in sorted(rng.sample(range(len(sentences)), min(count, len(sentences))))]
    masked = []
    for sentence in picked:
        words = sentence.split(" ")
        candidates = [i for i, w in enumerate(words) if w.isalpha()]
        if not candidates:
            continue
        for i in rng.sample(candidates, min(len(candidates), rng.randint(1, max_masks))):
            words[i] = mask_token
        masked.append(" ".join(words))
    return masked


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise UserInputError(f"text file {path} does not exist; pass the path of a UTF-8 text file")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserInputError(f"{path} is not UTF-8 text ({e}); pass a UTF-8 text file") from e
