"""End-to-end benchmark inputs: real text from the shipped data sized to about ``sequence`` tokens. (Model-only
timing runs on seeded token ids of an exact shape: ``distilrt.calib.synthetic.full_feed``.)

Imports only tokenizers and the shipped data readers: a benchmark worker that times the lean runtime must not
carry torch in its memory.
"""

from __future__ import annotations

import random
from functools import lru_cache

from distilrt.calib import SQUAD_DEV, WIKITEXT_TEST
from distilrt.calib.squad import read_squad, sample_questions
from distilrt.calib.text import read_lines
from distilrt.errors import UserInputError

# A question may take at most this share of a QA input, so the context keeps most of the window.
_QUESTION_SHARE = 4


def qa_examples(tokenizer, batch: int, sequence: int, seed: int) -> list[dict[str, str]]:
    """``batch`` SQuAD (question, context) pairs, each tokenizing (with special tokens) to about ``sequence``
    tokens and never more, so each is one model window: the context is repeated or cut to fit."""
    special = tokenizer.num_special_tokens_to_add(is_pair=True)
    if sequence - special < 2 * _QUESTION_SHARE:
        raise UserInputError(f"sequence {sequence} is too short for a question and a context; use 16 or more")
    examples = []
    for item in sample_questions(_squad(), batch, seed):
        question = _cut_to_tokens(tokenizer, item.question, (sequence - special) // _QUESTION_SHARE)
        question_tokens = len(tokenizer.encode(question, add_special_tokens=False).ids)
        context = _fill_to_tokens(tokenizer, item.context, sequence - special - question_tokens)
        while len(tokenizer.encode(question, context).ids) > sequence:  # a cut can re-tokenize one token longer
            context = _cut_to_tokens(tokenizer, context, len(tokenizer.encode(context, add_special_tokens=False).ids) - 1)
        examples.append({"question": question, "context": context})
    return examples


def mlm_texts(tokenizer, mask_token: str, batch: int, sequence: int, seed: int) -> list[str]:
    """``batch`` WikiText-2 passages of about ``sequence`` tokens (never more), each with one word masked."""
    budget = sequence - tokenizer.num_special_tokens_to_add(is_pair=False)
    lines = _wikitext()
    rng = random.Random(seed)
    texts = []
    for start in sorted(rng.sample(range(len(lines)), min(batch, len(lines)))):
        passage = " ".join(lines[start:start + 64])  # enough words for any sequence the models take
        text = _mask_middle_word(_fill_to_tokens(tokenizer, passage, budget), mask_token)
        while len(tokenizer.encode(text).ids) > sequence:
            text = " ".join(text.split(" ")[:-1])
        texts.append(text)
    return texts


@lru_cache(maxsize=1)
def _squad():
    return read_squad(SQUAD_DEV)


@lru_cache(maxsize=1)
def _wikitext() -> list[str]:
    return [line for line in read_lines(WIKITEXT_TEST) if not line.startswith("=")]  # no "= Heading =" lines


def _fill_to_tokens(tokenizer, text: str, tokens: int) -> str:
    """``text`` repeated until it has ``tokens`` tokens, then cut there (at a token's end)."""
    filled = text
    while len(tokenizer.encode(filled, add_special_tokens=False).ids) < tokens:
        filled = f"{filled} {text}"
    return _cut_to_tokens(tokenizer, filled, tokens)


def _cut_to_tokens(tokenizer, text: str, tokens: int) -> str:
    offsets = tokenizer.encode(text, add_special_tokens=False).offsets
    if len(offsets) <= tokens:
        return text
    return text[:offsets[max(tokens, 1) - 1][1]]


def _mask_middle_word(text: str, mask_token: str) -> str:
    words = text.split(" ")
    candidates = [i for i, word in enumerate(words) if word.isalpha()] or [len(words) // 2]
    middle = min(candidates, key=lambda i: abs(i - len(words) // 2))
    words[middle] = mask_token
    return " ".join(words)
