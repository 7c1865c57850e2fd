"""Calibration and evaluation sets, made with the runtime's own preprocessing, seeded and hashed.

Int8 static quantization calibrates on model inputs, and every variant is gated on an evaluation split against
fp32; both must be what the runtime really feeds. So QA windows come from ``QuestionAnswerer.features``,
fill-mask sequences from the head's own tokenizer, and every feed from ``distilrt.tokenization.model_feed``.

Calibration and evaluation data are disjoint: a SQuAD article (by title) or a line of a user's text file
belongs to one split by its sha256 (one in three calibrates), and the shipped WikiText-2 has a file per split
(valid calibrates, test evaluates). Each set carries an identity for the bundle manifest: source, the source
file's sha256, split, size, seed and the sha256 of the set itself.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from tokenizers import Encoding, Tokenizer

from distilrt.bundle import sha256_file
from distilrt.calib import SQUAD_DEV, WIKITEXT_TEST, WIKITEXT_VALID
from distilrt.calib.hf_datasets import is_datasets_source, materialize
from distilrt.calib.squad import SquadQuestion, read_squad
from distilrt.calib.text import read_lines
from distilrt.config import StageConfig, check_int, is_int
from distilrt.errors import UserInputError
from distilrt.heads.fill_mask import FillMask
from distilrt.heads.question_answering import QuestionAnswerer
from distilrt.tokenization import MASK_POSITIONS, TokenizerSettings, model_feed

CALIBRATION = "calibration"
EVALUATION = "evaluation"
_MIN_SAMPLES = 8
_MIN_SEQUENCE_LENGTH = 8
_MIN_QA_WINDOW = 32  # shorter windows leave many SQuAD questions no room for their context
# BERT pre-training masks 15% of the ordinary tokens: 80% of those become the mask token, 10% a random token,
# 10% stay as they are.
_MASK_RATE = 0.15
_MASK_TOKEN_SHARE = 0.8
_RANDOM_TOKEN_SHARE = 0.1
# Separate random streams for sampling and masking, so that neither shifts the other's draws.
_SAMPLE_STREAM = 0
_MASK_STREAM = 1


@dataclass(frozen=True)
class CalibConfig(StageConfig):
    """The calibration set for int8 static quantization.

    ``source`` None: the shipped SQuAD v1.1 dev (question answering) or WikiText-2 valid (fill-mask); else a
    SQuAD-format JSON (.json or .json.gz) or a UTF-8 text file, of which the calibration split is used.
    """

    source: str | None = None
    size: int = 256  # model inputs: QA windows or fill-mask sequences
    seed: int = 0
    sequence_length: int = 128  # fill-mask: tokens per sequence, special tokens included
    max_seq_len: int = 384  # QA: the head's max_seq_len; the stride follows from it as in the head

    def __post_init__(self):
        object.__setattr__(self, "source", _source_text(self.source))
        _check_samples("size", self.size)
        check_int("seed", self.seed, minimum=0)
        check_int("sequence_length", self.sequence_length, minimum=_MIN_SEQUENCE_LENGTH)
        check_int("max_seq_len", self.max_seq_len, minimum=_MIN_QA_WINDOW)


@dataclass(frozen=True)
class EvalConfig(StageConfig):
    """The evaluation set that gates each variant against fp32.

    ``source`` None: the shipped SQuAD v1.1 dev (its evaluation split) or WikiText-2 test; else a SQuAD-format
    JSON or a UTF-8 text file, of which the evaluation split is used.
    """

    source: str | None = None
    questions: int = 500  # question answering: held-out questions
    masked_positions: int = 2000  # fill-mask: at least this many masked positions
    seed: int = 0
    sequence_length: int = 128  # fill-mask: tokens per sequence, special tokens included
    # Where the gate's paired interval straddles its threshold, the split doubles, up to these (None: never):
    # more items decide the cases that noise would otherwise decide (docs/design.md#accuracy-gates).
    max_questions: int | None = 4000
    max_masked_positions: int | None = 16000

    def __post_init__(self):
        object.__setattr__(self, "source", _source_text(self.source))
        _check_samples("questions", self.questions)
        _check_samples("masked_positions", self.masked_positions)
        check_int("seed", self.seed, minimum=0)
        check_int("sequence_length", self.sequence_length, minimum=_MIN_SEQUENCE_LENGTH)
        for name in ("max_questions", "max_masked_positions"):  # a limit below the start size: no extension
            if getattr(self, name) is not None:
                _check_samples(name, getattr(self, name))

    def extended(self, task: str) -> EvalConfig | None:
        """The next, doubled split of ``task`` (it starts with this one's items), or None at the limit."""
        size, limit = (("questions", self.max_questions) if task == "question-answering"
                       else ("masked_positions", self.max_masked_positions))
        current = getattr(self, size)
        if limit is None or current >= limit:
            return None
        return replace(self, **{size: min(2 * current, limit)})

    def largest(self, task: str) -> EvalConfig:
        """The split at its limit: what the search split must come after to stay disjoint from every gate."""
        size, limit = (("questions", self.max_questions) if task == "question-answering"
                       else ("masked_positions", self.max_masked_positions))
        return self if limit is None or limit <= getattr(self, size) else replace(self, **{size: limit})


@dataclass(frozen=True)
class ModelInputSet:
    feeds: list[dict[str, np.ndarray]]  # batch-1 int64 feeds keyed by the model's input names
    identity: dict


@dataclass(frozen=True)
class QAEvalSet:
    questions: list[SquadQuestion]
    identity: dict


@dataclass(frozen=True)
class MaskedEvalSet:
    feeds: list[dict[str, np.ndarray]]  # batch-1 int64 feeds keyed by the model's input names
    positions: list[np.ndarray]  # the masked positions of each feed
    labels: list[np.ndarray]  # the original token ids at those positions
    identity: dict


def split_of(key: str) -> str:
    """The split of a SQuAD article (key: its title) or of a line of a user's text file (key: the line)."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return CALIBRATION if int.from_bytes(digest[:8], "big") % 3 == 0 else EVALUATION


def calibration_set(
    head: QuestionAnswerer | FillMask, config: CalibConfig, input_names: Sequence[str]
) -> ModelInputSet:
    """``config.size`` model inputs for int8 static calibration, made as ``head`` makes its inputs."""
    _check_input_names(input_names)
    if isinstance(head, QuestionAnswerer):
        return _qa_calibration_set(head, config, input_names)
    if isinstance(head, FillMask):
        return _mlm_calibration_set(head, config, input_names)
    raise UserInputError(
        f"calibration sets are made for a QuestionAnswerer or a FillMask, got {type(head).__name__}; "
        "pass the head that distilrt.load returns"
    )


def qa_evaluation_set(config: EvalConfig, after: QAEvalSet | None = None) -> QAEvalSet:
    """``config.questions`` answerable questions from the evaluation articles, in seeded order; with ``after``
    (a set made with the same config), the questions that follow it in that order, disjoint from it."""
    source = _Source.of(config.source, SQUAD_DEV)
    questions = [q for q in read_squad(source.path) if q.answers and split_of(q.title) == EVALUATION]
    skip = 0 if after is None else len(after.questions)
    if len(questions) < skip + config.questions:
        raise UserInputError(
            f"{source.name}: its evaluation articles hold {len(questions)} answerable questions, fewer than "
            f"questions={config.questions}" + (f" after the {skip} already used" if skip else "")
            + "; lower questions or pass a larger SQuAD-format file"
        )
    order = _Draws(config.seed, _SAMPLE_STREAM).order(len(questions))[skip: skip + config.questions]
    picked = [questions[i] for i in order]
    identity = source.identity(EVALUATION, len(picked), config.seed, _questions_sha256(picked))
    return QAEvalSet(picked, {**identity, "after": skip} if skip else identity)


def mlm_evaluation_set(head: FillMask, config: EvalConfig, input_names: Sequence[str],
                       after: MaskedEvalSet | None = None) -> MaskedEvalSet:
    """Masked sequences from the evaluation text, in seeded order, until ``config.masked_positions`` are masked;
    with ``after`` (a set made with the same config), from the sequences that follow it, disjoint from it."""
    _check_input_names(input_names)
    if not isinstance(head, FillMask):
        raise UserInputError(
            f"masked evaluation sets are made for a FillMask, got {type(head).__name__}; "
            "pass the fill-mask head that distilrt.load returns"
        )
    tokenizer = head.tokenizer_copy()
    source, lines = _text_split(config.source, EVALUATION)
    sequences = _sequences(tokenizer, head.tokenizer_settings, lines, config.sequence_length)
    masker = _PretrainingMasker(tokenizer, head.tokenizer_settings, config.seed)
    feeds, positions, labels = [], [], []
    total = 0
    skip = 0 if after is None else len(after.feeds)
    for index in _Draws(config.seed, _SAMPLE_STREAM).order(len(sequences))[skip:]:
        sequence = sequences[index]
        masked, where = masker.mask(sequence)
        feeds.append(_masked_feed(sequence, masked, where, head.tokenizer_settings, input_names))
        positions.append(where)
        labels.append(np.array(sequence.ids, dtype=np.int64)[where])
        total += len(where)
        if total >= config.masked_positions:
            break
    else:
        raise UserInputError(
            f"{source.name}: its evaluation text ({len(lines)} lines) gives {total} masked positions in "
            f"sequences of {config.sequence_length} tokens, fewer than masked_positions={config.masked_positions}; "
            "lower masked_positions or sequence_length, or pass a longer text file"
        )
    sha256 = _arrays_sha256([{**feed, "positions": p, "labels": labelled} for feed, p, labelled in zip(feeds, positions, labels)])
    identity = source.identity(EVALUATION, len(feeds), config.seed, sha256)
    return MaskedEvalSet(feeds, positions, labels, {**identity, "masked_positions": total,
                                                    **({"after": skip} if skip else {})})


def text_lines(source: str | None, split: str) -> list[str]:
    """The lines a fill-mask set of ``split`` (CALIBRATION or EVALUATION) draws its sequences from, ``source`` as
    CalibConfig/EvalConfig take it: what text must stay out of a fixture's training data."""
    if split not in (CALIBRATION, EVALUATION):
        raise UserInputError(f"split must be {CALIBRATION!r} or {EVALUATION!r}, got {split!r}")
    return _text_split(source, split)[1]


def _qa_calibration_set(head: QuestionAnswerer, config: CalibConfig, input_names: Sequence[str]) -> ModelInputSet:
    source = _Source.of(config.source, SQUAD_DEV)
    questions = [q for q in read_squad(source.path) if split_of(q.title) == CALIBRATION]
    # The head caps its default window at the model's limit the same way.
    max_seq_len = min(config.max_seq_len, head.tokenizer_settings.model_max_length)
    # Whole questions in seeded order, each with all its windows, as the runtime sees them.
    windows: list[Encoding] = []
    for index in _Draws(config.seed, _SAMPLE_STREAM).order(len(questions)):
        windows += _windows(head, questions[index], max_seq_len)
        if len(windows) >= config.size:
            break
    else:
        raise UserInputError(
            f"{source.name}: its calibration articles ({len(questions)} questions) give {len(windows)} windows, "
            f"fewer than size={config.size}; lower size or pass a larger SQuAD-format file"
        )
    feeds = [model_feed([window], head.tokenizer_settings, input_names) for window in windows[: config.size]]
    return ModelInputSet(feeds, source.identity(CALIBRATION, len(feeds), config.seed, _arrays_sha256(feeds)))


def _windows(head: QuestionAnswerer, question: SquadQuestion, max_seq_len: int) -> list[Encoding]:
    """The question's windows; none when the head refuses it (a question too long for a short max_seq_len)."""
    try:
        return head.features(question.question, question.context, max_seq_len=max_seq_len)
    except UserInputError:
        return []


def _mlm_calibration_set(head: FillMask, config: CalibConfig, input_names: Sequence[str]) -> ModelInputSet:
    tokenizer = head.tokenizer_copy()
    source, lines = _text_split(config.source, CALIBRATION)
    sequences = _sequences(tokenizer, head.tokenizer_settings, lines, config.sequence_length)
    if len(sequences) < config.size:
        raise UserInputError(
            f"{source.name}: its calibration text ({len(lines)} lines) gives {len(sequences)} sequences of "
            f"{config.sequence_length} tokens, fewer than size={config.size}; lower size or sequence_length, "
            "or pass a longer text file"
        )
    masker = _PretrainingMasker(tokenizer, head.tokenizer_settings, config.seed)
    feeds = []
    for index in _Draws(config.seed, _SAMPLE_STREAM).order(len(sequences))[: config.size]:
        masked, where = masker.mask(sequences[index])
        feeds.append(_masked_feed(sequences[index], masked, where, head.tokenizer_settings, input_names))
    return ModelInputSet(feeds, source.identity(CALIBRATION, len(feeds), config.seed, _arrays_sha256(feeds)))


def _text_split(configured: str | None, split: str) -> tuple[_Source, list[str]]:
    """The lines of a split: the shipped WikiText-2 file for that split, or that split's lines of a user file."""
    source = _Source.of(configured, WIKITEXT_VALID if split == CALIBRATION else WIKITEXT_TEST)
    lines = read_lines(source.path)
    if configured is None:
        return source, lines
    return source, [line for line in lines if split_of(line) == split]


def _sequences(tokenizer: Tokenizer, settings: TokenizerSettings, lines: list[str], length: int) -> list[Encoding]:
    """The lines as one token stream cut into sequences of exactly ``length`` tokens, special tokens included.

    Packed across lines as in pre-training; the short remainder is dropped. The tokenizer's own post-processor
    adds the special tokens, so each sequence is encoded as the head would encode its text.
    """
    if length > settings.model_max_length:
        raise UserInputError(
            f"sequence_length={length} is more than the model's {settings.model_max_length} tokens; "
            "lower sequence_length"
        )
    if not lines:
        return []
    stream = Encoding.merge(tokenizer.encode_batch(lines, add_special_tokens=False), growing_offsets=True)
    stream.truncate(length - tokenizer.num_special_tokens_to_add(is_pair=False))
    first = tokenizer.post_process(stream)
    return [sequence for sequence in [first, *first.overflowing] if len(sequence.ids) == length]


class _PretrainingMasker:
    """Masks sequences as BERT pre-training does, from one seeded stream."""

    def __init__(self, tokenizer: Tokenizer, settings: TokenizerSettings, seed: int):
        self._mask_token_id = settings.mask_token_id
        # Added tokens may lie beyond the model's embedding table; the tokenizer model's vocabulary does not.
        self._vocab_size = tokenizer.get_vocab_size(with_added_tokens=False)
        # Special tokens written in the text (WikiText's <unk> is RoBERTa's) stay unmasked too, as in pre-training.
        self._special_ids = [i for i, token in tokenizer.get_added_tokens_decoder().items() if token.special]
        self._draws = _Draws(seed, _MASK_STREAM)

    def mask(self, sequence: Encoding) -> tuple[np.ndarray, np.ndarray]:
        """The sequence's ids with 15% of its ordinary tokens masked, and the masked positions, ascending."""
        ids = np.array(sequence.ids, dtype=np.int64)
        ordinary = (np.array(sequence.special_tokens_mask) == 0) & ~np.isin(ids, self._special_ids)
        candidates = np.flatnonzero(ordinary)
        count = min(len(candidates), max(1, round(_MASK_RATE * len(candidates))))
        positions = np.sort(candidates[self._draws.order(len(candidates))[:count]])
        kind = self._draws.uniform(count)
        random_ids = (self._draws.uniform(count) * self._vocab_size).astype(np.int64)
        replacements = np.where(
            kind < _MASK_TOKEN_SHARE,
            self._mask_token_id,
            np.where(kind < _MASK_TOKEN_SHARE + _RANDOM_TOKEN_SHARE, random_ids, ids[positions]),
        )
        masked = ids.copy()
        masked[positions] = replacements
        return masked, positions


def _masked_feed(
    sequence: Encoding, masked_ids: np.ndarray, positions: np.ndarray, settings: TokenizerSettings,
    input_names: Sequence[str]
) -> dict[str, np.ndarray]:
    feed = model_feed([sequence], settings, input_names)
    feed["input_ids"][0] = masked_ids
    if MASK_POSITIONS in feed:  # every masked position, also those pre-training left or replaced at random
        feed[MASK_POSITIONS] = positions[None]
    return feed


class _Draws:
    """Uniform floats in [0, 1) from PCG64's raw output.

    numpy keeps bit-generator streams stable across versions, but not its distribution methods, so drawing
    through them could change a set (and its sha256) with a numpy upgrade.
    """

    def __init__(self, seed: int, stream: int):
        self._bits = np.random.PCG64(np.random.SeedSequence([seed, stream]))

    def uniform(self, count: int) -> np.ndarray:
        # The top 53 bits of each 64-bit draw, as float64 does it.
        return (self._bits.random_raw(count) >> np.uint64(11)).astype(np.float64) / 2.0**53

    def order(self, count: int) -> np.ndarray:
        """A random permutation of range(count)."""
        return np.argsort(self.uniform(count), kind="stable")


@dataclass(frozen=True)
class _Source:
    name: str  # as the identity gives it: the configured path, or "shipped:<file>" for the shipped data
    path: Path

    @classmethod
    def of(cls, configured: str | None, shipped: Path) -> _Source:
        if configured is None:
            return cls(f"shipped:{shipped.name}", shipped)
        if is_datasets_source(configured):
            return cls(configured, materialize(configured, "squad" if shipped == SQUAD_DEV else "text"))
        return cls(configured, Path(configured))

    def identity(self, split: str, size: int, seed: int, sha256: str) -> dict:
        return {
            "source": self.name,
            "source_sha256": sha256_file(self.path),
            "split": split,
            "size": size,
            "seed": seed,
            "sha256": sha256,
        }


def _arrays_sha256(items: Sequence[Mapping[str, np.ndarray]]) -> str:
    """sha256 of named int64 arrays, the same whatever the machine's byte order or the dicts' key order."""
    digest = hashlib.sha256()
    for item in items:
        for name in sorted(item):
            array = np.ascontiguousarray(item[name], dtype="<i8")
            digest.update(f"{name}{array.shape}".encode())
            digest.update(array.tobytes())
    return digest.hexdigest()


def _questions_sha256(questions: Sequence[SquadQuestion]) -> str:
    text = json.dumps([asdict(q) for q in questions], ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _source_text(source) -> str | None:
    """The configured source as a string (a Path is accepted), so that the config writes to JSON."""
    if source is None:
        return None
    if isinstance(source, os.PathLike):
        source = os.fspath(source)
    if not isinstance(source, str) or not source:
        raise UserInputError(f"source must be the path of a data file, or None for the shipped data; got {source!r}")
    return source


def _check_input_names(input_names: Sequence[str]) -> None:
    if isinstance(input_names, str) or "input_ids" not in input_names:
        raise UserInputError(
            f"input_names must list the model's input names, input_ids among them; got {input_names!r}"
        )


def _check_samples(name: str, value) -> None:
    if is_int(value) and value < _MIN_SAMPLES:
        raise UserInputError(
            f"{name}={value} is too few samples for a meaningful set; pass at least {_MIN_SAMPLES}"
        )
    check_int(name, value, minimum=_MIN_SAMPLES)
