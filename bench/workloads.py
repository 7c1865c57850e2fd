"""Workload benchmarks: text in, answers out over a real held-out data set, scored against the pipeline's answers.

``squad-dev[:N]``: N answerable questions of the shipped SQuAD v1.1 dev set's evaluation split (articles that
calibration never sees, calib/sets.py's ``split_of``), in the gate's seeded order (``qa_evaluation_set``).
``wikitext[:N]``: N sentences of the shipped WikiText-2 test file (calibration reads the valid file), each
with one whole-word token masked: the word must be one token of the checkpoint's vocabulary, so the masked
token is the gold label for top-1 accuracy.

Imports only tokenizers, numpy and the shipped data readers (no torch): the parent makes the items once and
every runner gets the same ones.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass

from distilrt.bundle import sha256_file
from distilrt.calib import WIKITEXT_TEST
from distilrt.calib.sets import EVALUATION, EvalConfig, qa_evaluation_set
from distilrt.calib.text import read_lines
from distilrt.errors import UserInputError

DEFAULT_ITEMS = 1000
MIN_ITEMS = 8  # the evaluation set's own minimum; fewer says nothing about accuracy
# workload name -> (task, what an item is called)
WORKLOADS = {"squad-dev": ("question-answering", "questions"), "wikitext": ("fill-mask", "masked sentences")}
# Sentences long enough to give the model context, short enough that none nears a model's limit.
_MIN_WORDS, _MAX_WORDS = 8, 48
_SENTENCE_END = re.compile(r"(?<= \.) ")  # WikiText is tokenized: a sentence ends with " ."


@dataclass(frozen=True)
class Workload:
    name: str
    items: int

    @property
    def task(self) -> str:
        return WORKLOADS[self.name][0]

    @property
    def unit(self) -> str:
        return WORKLOADS[self.name][1]

    @property
    def spec(self) -> str:
        return f"{self.name}:{self.items}"


def parse_workload(text) -> Workload:
    """``squad-dev``, ``squad-dev:500``, ``wikitext:2000``; UserInputError naming --workload otherwise."""
    usage = (f"pass --workload NAME[:N] with NAME one of {', '.join(WORKLOADS)} and N an integer of at least "
             f"{MIN_ITEMS} (default {DEFAULT_ITEMS}), e.g. --workload squad-dev:1000")
    if not isinstance(text, str):
        raise UserInputError(f"--workload {text!r} is not a workload; {usage}")
    name, colon, count = text.strip().partition(":")
    if name not in WORKLOADS:
        raise UserInputError(f"--workload {text!r}: unknown workload {name!r}; {usage}")
    if not colon:
        return Workload(name, DEFAULT_ITEMS)
    if not count.isdigit() or int(count) < MIN_ITEMS:
        raise UserInputError(f"--workload {text!r}: {count!r} is not a count of at least {MIN_ITEMS}; {usage}")
    return Workload(name, int(count))


@dataclass(frozen=True)
class WorkloadSet:
    workload: Workload
    inputs: list  # what each runner is called with: {"question", "context"} dicts, or masked texts
    gold: list  # SQuAD answers (lists of strings), or {"id", "word"} of each masked token
    identity: dict  # source, its sha256, split, size, seed, sha256 of the items


def workload_set(workload: Workload, tokenizer, mask_token: str | None, seed: int) -> WorkloadSet:
    if workload.name == "squad-dev":
        return _squad_set(workload, seed)
    return _wikitext_set(workload, tokenizer, mask_token, seed)


def _squad_set(workload: Workload, seed: int) -> WorkloadSet:
    try:
        made = qa_evaluation_set(EvalConfig(questions=workload.items, seed=seed))
    except UserInputError as e:
        raise UserInputError(f"--workload {workload.spec}: the shipped SQuAD dev set has fewer held-out questions "
                             f"than {workload.items}; lower N ({e})") from e
    inputs = [{"question": q.question, "context": q.context} for q in made.questions]
    return WorkloadSet(workload, inputs, [list(q.answers) for q in made.questions], made.identity)


def _wikitext_set(workload: Workload, tokenizer, mask_token: str | None, seed: int) -> WorkloadSet:
    if not mask_token:
        raise UserInputError(f"--workload {workload.spec} needs a fill-mask bundle whose tokenizer has a mask token")
    sentences = [s for line in read_lines(WIKITEXT_TEST) if not line.startswith("=")
                 for s in _SENTENCE_END.split(line.strip())
                 if _MIN_WORDS <= len(s.split()) <= _MAX_WORDS and "<unk>" not in s]
    rng = random.Random(seed)
    inputs, gold = [], []
    for index in rng.sample(range(len(sentences)), len(sentences)):  # a seeded order of every sentence
        masked = _mask_one_word(tokenizer, sentences[index], mask_token, rng)
        if masked is not None:
            inputs.append(masked[0])
            gold.append(masked[1])
            if len(inputs) == workload.items:
                break
    else:
        raise UserInputError(f"--workload {workload.spec}: the shipped WikiText-2 test file gives {len(inputs)} "
                             f"sentences with a maskable word, fewer than {workload.items}; lower N")
    digest = hashlib.sha256(json.dumps([inputs, gold], ensure_ascii=False).encode("utf-8")).hexdigest()
    identity = {"source": f"shipped:{WIKITEXT_TEST.name}", "source_sha256": sha256_file(WIKITEXT_TEST),
                "split": EVALUATION, "size": len(inputs), "seed": seed, "sha256": digest}
    return WorkloadSet(workload, inputs, gold, identity)


def _mask_one_word(tokenizer, sentence: str, mask_token: str, rng: random.Random) -> tuple[str, dict] | None:
    """The sentence with one alphabetic word that is a single token replaced by the mask token, and that
    token's id; None when no word is a single token."""
    encoding = tokenizer.encode(sentence, add_special_tokens=False)
    candidates = []
    for word in re.finditer(r"\S+", sentence):
        if not word.group().isalpha():
            continue
        covering = [i for i, (start, end) in enumerate(encoding.offsets) if start < word.end() and end > word.start()]
        if len(covering) == 1:
            candidates.append((word, encoding.ids[covering[0]]))
    if not candidates:
        return None
    word, token_id = rng.choice(candidates)
    return f"{sentence[:word.start()]}{mask_token}{sentence[word.end():]}", {"id": token_id, "word": word.group()}


def chunk_size(items: int, batch: int, chunks: int = 10) -> int:
    """Items per list call: a multiple of the batch, about ``chunks`` calls in all (progress between them)."""
    per_chunk = -(-items // chunks)
    return max(batch, -(-per_chunk // batch) * batch)
