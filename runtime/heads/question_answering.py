"""Extractive question answering that gives exactly the outputs of transformers' question-answering pipeline.

The runtime cannot import transformers, so this module mirrors by hand what transformers 4.57's
``QuestionAnsweringPipeline`` does with a fast tokenizer: the argument forms it accepts, the split of a long
context into overlapping windows, the mask of tokens that cannot be in an answer, the softmax over each
window, the search for the best (start, end) pairs, the alignment of answers to whole words and the merging
of equal answers found in several windows. Where the pipeline has quirks they are kept, and commented,
because matching its outputs is the point.

One departure bounds the work of a call (README.md#bounded-work-per-request): the pipeline ranks
``top_k * 2 + 10`` of a window's tokens² (start, end) pairs, all of them when top_k is that large, and every
pair it ranks becomes a candidate answer; a huge top_k then costs minutes on one short context. Here a window
ranks at most max(its answer spans, 4,096) pairs, where its answer spans are the pairs that can score above 0
(both tokens in the context, start <= end < start + max_answer_len). Answers differ from the pipeline's only
when top_k > 2,043 on a window of more than 64 tokens: the pipeline's list then goes on past every answer
span with pairs that score exactly 0 (end before start, or longer than max_answer_len), which are left out
here, and spans of exactly equal scores may come in another order.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from distilrt.config import check_int, shown
from distilrt.errors import UserInputError
from distilrt.heads.base import TaskHead
from distilrt.limits import INT32_MAX
from distilrt.tokenization import TokenizerSettings, check_text

if TYPE_CHECKING:
    from tokenizers import Encoding, Tokenizer

    from distilrt.backends import Backend

# The pipeline's defaults: max_seq_len is the tokenizer's limit capped at 384; doc_stride is half of it,
# capped at 128.
_MAX_SEQ_LEN_CAP = 384
_DOC_STRIDE_CAP = 128
# The pipeline starts its best no-answer score "large and positive" and keeps the minimum over windows.
_NO_ANSWER_SCORE_START = 1000000
# Logit given to tokens that cannot be in an answer, so that they take no part in the softmax.
_EXCLUDED_LOGIT = -10000.0
# Windows with at most this many (start, end) pairs (64 tokens) are searched exactly as the pipeline does; a
# longer window ranks at least this many pairs and at most max(this, its answer spans), so that top_k up to
# (4096 - 10) / 2 = 2043 ranks exactly the pairs the pipeline ranks.
EXACT_SEARCH_PAIRS = 4096


@dataclass(frozen=True)
class QAOptions:
    """The pipeline's keyword arguments, with its defaults."""

    top_k: int = 1
    doc_stride: int | None = None
    max_answer_len: int = 15
    max_seq_len: int | None = None
    max_question_len: int = 64  # accepted like the pipeline, whose fast-tokenizer path never uses it
    handle_impossible_answer: bool = False
    align_to_words: bool = True

    def __post_init__(self):
        # The upper bounds are the served tensors' int32; the window's own bounds are checked with the model's.
        check_int("top_k", self.top_k, minimum=1, maximum=INT32_MAX,
                  fix="a top_k above the number of candidate answers gives the same answers as that number")
        check_int("max_answer_len", self.max_answer_len, minimum=1, maximum=INT32_MAX,
                  fix="a max_answer_len above the window length (max_seq_len) gives the same answers as it")
        check_int("max_question_len", self.max_question_len, minimum=1, maximum=INT32_MAX)
        if self.max_seq_len is not None:
            check_int("max_seq_len", self.max_seq_len, minimum=1, maximum=INT32_MAX)
        if self.doc_stride is not None:
            check_int("doc_stride", self.doc_stride, minimum=0, maximum=INT32_MAX)
        for name in ("handle_impossible_answer", "align_to_words"):
            if not isinstance(getattr(self, name), bool):
                raise UserInputError(f"{name} must be True or False, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class _Window:
    """One model input: the question with all or part of the context."""

    encoding: Encoding
    allowed: np.ndarray  # the pipeline's mask of tokens that may be in the answer ((1, tokens) with attention_mask)

    def spans_to_rank(self, candidates: int, max_answer_len: int) -> int:
        """How many (start, end) pairs this window ranks for ``candidates`` (module docstring)."""
        tokens = len(self.encoding.ids)
        pairs = tokens * tokens
        if candidates == 1 or pairs <= EXACT_SEARCH_PAIRS:
            return min(candidates, pairs)
        return min(candidates, max(_answer_spans(self.allowed, max_answer_len), EXACT_SEARCH_PAIRS))


class QuestionAnswerer(TaskHead):
    """Answers questions from a context, like ``pipeline("question-answering")``.

    Call it as the pipeline: ``qa(question=..., context=...)`` with strings (or a list of questions and one
    context, or two lists of equal length), ``qa({"question": ..., "context": ...})`` or a list of such dicts.
    One example gives ``{"score", "start", "end", "answer"}`` (a list of them when top_k > 1 finds several);
    several examples give a list with one such result each.
    """

    def __init__(
        self, backend: Backend, tokenizer: Tokenizer, settings: TokenizerSettings, *, batch_size: int = 8,
        **batching,
    ):
        super().__init__(backend, tokenizer, settings, batch_size=batch_size, **batching)
        # Truncation is set per call on this head's own tokenizer copy; the lock keeps calls from mixing it.
        self._tokenizer_lock = threading.Lock()
        # The pipeline puts the question first when the tokenizer pads on the right.
        self._question_first = settings.padding_side == "right"

    def __call__(
        self,
        *args,
        question: str | list[str] | None = None,
        context: str | list[str] | None = None,
        **options,
    ) -> dict | list:
        items = _items(args, question, context)
        self._check_inputs(len(items), "examples")
        examples = [_question_and_context(item) for item in items]
        self._check_chars([text for example in examples for text in example])
        options = _options(options)
        max_seq_len, doc_stride = self._window_size(options)
        windows = self._all_windows(examples, max_seq_len, doc_stride)
        self._check_proposals(windows, options)
        encodings = [window.encoding for example_windows in windows for window in example_windows]
        outputs = iter(self._run(encodings))
        results = []
        for (_, context_text), example_windows in zip(examples, windows):
            example_outputs = [next(outputs) for _ in example_windows]
            results.append(self._answers(context_text, example_windows, example_outputs, options))
        return results[0] if len(results) == 1 else results

    def _all_windows(self, examples: list[tuple[str, str]], max_seq_len: int, doc_stride: int) -> list[list[_Window]]:
        """Each example's windows; refused as soon as the call has more than max_windows."""
        windows, count = [], 0
        for question, context in examples:
            windows.append(self._windows(question, context, max_seq_len, doc_stride))
            count += len(windows[-1])
            self._limits.check(
                "max_windows", count, f"the number of model windows of this call (max_seq_len={max_seq_len}, "
                f"doc_stride={doc_stride})", "send shorter contexts or fewer examples, or raise max_seq_len")
        return windows

    def _check_proposals(self, windows: list[list[_Window]], options: QAOptions) -> None:
        """Refuse, before the model runs, a call that would rank more spans than max_proposals."""
        candidates = _candidates(options)
        proposals = sum(window.spans_to_rank(candidates, options.max_answer_len)
                        for example_windows in windows for window in example_windows)
        self._limits.check("max_proposals", proposals, "the number of candidate answer spans this call ranks",
                           "lower top_k or max_answer_len, or send shorter contexts")

    def features(
        self, question: str, context: str, *, max_seq_len: int | None = None, doc_stride: int | None = None
    ) -> list[Encoding]:
        """The windows (model inputs) that a call with this question, context and options runs, in order."""
        question, context = _question_and_context({"question": question, "context": context})
        options = QAOptions(max_seq_len=max_seq_len, doc_stride=doc_stride)
        return self._encode_windows(question, context, *self._window_size(options))

    def _window_size(self, options: QAOptions) -> tuple[int, int]:
        max_seq_len = options.max_seq_len
        if max_seq_len is None:
            max_seq_len = min(self._settings.model_max_length, _MAX_SEQ_LEN_CAP)
        elif max_seq_len > self._settings.model_max_length:
            # Refused up front: windows longer than the position embeddings fail inside the model (the
            # pipeline's own IndexError), and only for contexts long enough to need them.
            raise UserInputError(
                f"max_seq_len ({shown(max_seq_len)}) is more than the {self._settings.model_max_length} tokens this "
                f"model takes; pass max_seq_len <= {self._settings.model_max_length}"
            )
        doc_stride = options.doc_stride
        if doc_stride is None:
            doc_stride = min(max_seq_len // 2, _DOC_STRIDE_CAP)
        if doc_stride > max_seq_len:
            raise UserInputError(
                f"doc_stride ({shown(doc_stride)}) is larger than max_seq_len ({max_seq_len}); "
                f"pass doc_stride from 0 to {max_seq_len}"
            )
        # tokenizers refuses a stride that fills a single sequence's room beside its special tokens.
        room = max_seq_len - self._tokenizer.num_special_tokens_to_add(is_pair=False)
        if doc_stride >= room:
            raise UserInputError(
                f"doc_stride ({doc_stride}) must be smaller than max_seq_len minus the special tokens "
                f"({room}); lower doc_stride or raise max_seq_len"
            )
        return max_seq_len, doc_stride

    def _windows(self, question: str, context: str, max_seq_len: int, doc_stride: int) -> list[_Window]:
        encodings = self._encode_windows(question, context, max_seq_len, doc_stride)
        return [_Window(encoding, self._allowed_tokens(encoding)) for encoding in encodings]

    def _encode_windows(
        self, question: str, context: str, max_seq_len: int, doc_stride: int
    ) -> list[Encoding]:
        """The pair whole if it fits in max_seq_len, else windows of the context overlapping by doc_stride."""
        pair = (question, context) if self._question_first else (context, question)
        with self._tokenizer_lock:
            whole = self._tokenizer.encode(*pair)
            if len(whole.ids) <= max_seq_len:
                return [whole]
            self._check_context_fits(whole, max_seq_len, doc_stride)
            strategy = "only_second" if self._question_first else "only_first"
            self._tokenizer.enable_truncation(max_seq_len, stride=doc_stride, strategy=strategy)
            try:
                first = self._tokenizer.encode(*pair)
            finally:
                self._tokenizer.no_truncation()
        return [first, *first.overflowing]

    def _check_context_fits(self, whole: Encoding, max_seq_len: int, doc_stride: int) -> None:
        """Refuse windows that tokenizers cannot make (it raises, or aborts with a panic on a long stride)."""
        question_index = 0 if self._question_first else 1
        question_tokens = sum(1 for sequence in whole.sequence_ids if sequence == question_index)
        room = max_seq_len - self._tokenizer.num_special_tokens_to_add(is_pair=True) - question_tokens
        if room <= 0:
            raise UserInputError(
                f"the question is {question_tokens} tokens long and leaves no room for the context in "
                f"max_seq_len={max_seq_len}; shorten the question or raise max_seq_len"
            )
        if doc_stride >= room:
            raise UserInputError(
                f"doc_stride ({doc_stride}) must be smaller than the {room} context tokens that fit beside "
                f"this question in max_seq_len={max_seq_len}; lower doc_stride or raise max_seq_len"
            )

    def _p_mask(self, encoding: Encoding) -> np.ndarray:
        if self._question_first:
            p_mask = np.array([sequence != 1 for sequence in encoding.sequence_ids], dtype=np.int64)
        else:
            # The pipeline masks nothing when the context comes first.
            p_mask = np.zeros(len(encoding.ids), dtype=np.int64)
        if self._settings.cls_token_id is not None:
            # CLS stays allowed: some models point there to say the question has no answer.
            p_mask[np.array(encoding.ids) == self._settings.cls_token_id] = 0
        return p_mask

    def _answers(
        self, context: str, windows: list[_Window], outputs: list[dict], options: QAOptions
    ) -> dict | list[dict]:
        """The pipeline's postprocess: best spans of every window, mapped to the context, merged, ranked."""
        no_answer_score = _NO_ANSWER_SCORE_START
        candidates = _candidates(options)
        answers: dict[str, dict] = {}  # by lower-cased text, in the order found
        for window, output in zip(windows, outputs):
            starts, ends, scores, no_answer_score = _best_spans(
                output["start_logits"], output["end_logits"], window.allowed, no_answer_score,
                window.spans_to_rank(candidates, options.max_answer_len), options
            )
            shift = self._left_padding_shift(window.encoding)
            for start, end, score in zip(starts, ends, scores):
                char_start, char_end = self._char_span(
                    window.encoding, int(start) - shift, int(end) - shift, options.align_to_words
                )
                _add_answer(answers, context[char_start:char_end], char_start, char_end, score.item())
        ranked = list(answers.values())
        if options.handle_impossible_answer:
            ranked.append({"score": no_answer_score, "start": 0, "end": 0, "answer": ""})
        ranked = sorted(ranked, key=lambda answer: answer["score"], reverse=True)[: options.top_k]
        return ranked[0] if len(ranked) == 1 else ranked

    def _allowed_tokens(self, encoding: Encoding) -> np.ndarray:
        allowed = 1 - self._p_mask(encoding)
        if "attention_mask" in self._settings.model_input_names:
            # The pipeline ANDs with the (1, tokens) attention mask, which gives the result a batch axis;
            # _top_spans depends on that axis.
            allowed = allowed & np.array([encoding.attention_mask])
        return allowed

    def _left_padding_shift(self, encoding: Encoding) -> int:
        # With left padding the pipeline shifts token indexes by the pad tokens in input_ids; as it never pads
        # a window, that counts pad tokens written in the text itself (normally none).
        if self._settings.padding_side == "left":
            return encoding.ids.count(self._settings.pad_token_id)
        return 0

    def _char_span(self, encoding: Encoding, start: int, end: int, align_to_words: bool) -> tuple[int, int]:
        """Character span of tokens start..end in the context: whole words when aligning, else the tokens'."""
        if align_to_words:
            words = self._word_chars(encoding, start, end)
            if words is not None:
                return words
        return encoding.offsets[start][0], encoding.offsets[end][1]

    def _word_chars(self, encoding: Encoding, start: int, end: int) -> tuple[int, int] | None:
        """None where a token has no word (special tokens, or tokenizers without words): then use offsets."""
        if start < 0 or end < 0:
            return None  # only after a left-padding shift; the pipeline then indexes offsets from the end
        start_word = encoding.token_to_word(start)
        end_word = encoding.token_to_word(end)
        if start_word is None or end_word is None:
            return None
        sequence = 1 if self._question_first else 0
        start_chars = encoding.word_to_chars(start_word, sequence_index=sequence)
        end_chars = encoding.word_to_chars(end_word, sequence_index=sequence)
        if start_chars is None or end_chars is None:
            return None
        return start_chars[0], end_chars[1]


def _best_spans(
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    allowed: np.ndarray,
    no_answer_score: float,
    spans_to_rank: int,
    options: QAOptions,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """The pipeline's select_starts_ends: span scores of one window, and the running no-answer score."""
    start = _softmax_over_allowed(start_logits, allowed)
    end = _softmax_over_allowed(end_logits, allowed)
    if options.handle_impossible_answer:
        no_answer_score = min(no_answer_score, (start[0, 0] * end[0, 0]).item())
    # The first token (CLS) is never part of an answer span.
    start[0, 0] = end[0, 0] = 0.0
    starts, ends, scores = _top_spans(start, end, spans_to_rank, options.max_answer_len, allowed)
    return starts, ends, scores, no_answer_score


def _softmax_over_allowed(logits: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Softmax over the allowed tokens of a window's logits, as a (1, tokens) float32 row."""
    logits = np.where(allowed == 0, _EXCLUDED_LOGIT, np.asarray(logits, dtype=np.float32)[None])
    exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return exp / exp.sum()


def _candidates(options: QAOptions) -> int:
    """How many spans the pipeline asks each window for: aligning to words can merge some, so it draws extra."""
    return options.top_k * 2 + 10 if options.align_to_words else options.top_k


def _answer_spans(allowed: np.ndarray, max_answer_len: int) -> int:
    """The (start, end) pairs of a window that can score above 0: both tokens allowed and neither the first
    (whose score is zeroed), start <= end < start + max_answer_len. O(tokens), from the window alone."""
    flags = np.asarray(allowed, dtype=bool).reshape(-1).copy()
    flags[0] = False
    before = np.concatenate([[0], np.cumsum(flags)])  # before[i]: allowed tokens in [0, i)
    starts = np.flatnonzero(flags)
    stops = np.minimum(starts + min(max_answer_len, len(flags)), len(flags))
    return int((before[stops] - before[starts]).sum())


def _top_spans(
    start: np.ndarray, end: np.ndarray, spans_to_rank: int, max_answer_len: int, allowed: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pipeline's decode_spans: the best (start, end) pairs with start <= end < start + max_answer_len,
    ranking ``spans_to_rank`` of them (_Window.spans_to_rank), by partial selection."""
    pair_scores = np.matmul(np.expand_dims(start, -1), np.expand_dims(end, 1))
    # A band wider than the window changes nothing; capped so that any int reaches numpy as a small one.
    pair_scores = np.tril(np.triu(pair_scores), min(max_answer_len, pair_scores.shape[-1]) - 1)
    flat = pair_scores.flatten()
    if spans_to_rank == 1:
        best = [np.argmax(flat)]
    elif len(flat) <= spans_to_rank:  # the pipeline tests `<` and fails on `==` (argpartition out of bounds)
        best = np.argsort(-flat)
    else:
        partition = np.argpartition(-flat, spans_to_rank)[0:spans_to_rank]
        best = partition[np.argsort(-flat[partition])]
    starts, ends = np.unravel_index(best, pair_scores.shape)[1:]
    # With the batch axis, nonzero() also lists row index 0, so token 0 always passes this test; kept as in
    # the pipeline.
    allowed_indexes = allowed.nonzero()
    keep = np.isin(starts, allowed_indexes) & np.isin(ends, allowed_indexes)
    starts, ends = starts[keep], ends[keep]
    return starts, ends, pair_scores[0, starts, ends]


def _add_answer(answers: dict[str, dict], text: str, start: int, end: int, score: float) -> None:
    """Add a candidate, or add its score to an earlier answer with the same text, ignoring case (the pipeline
    compares with every earlier answer; a dict finds the same one in constant time)."""
    answer = answers.get(text.lower())
    if answer is None:
        answers[text.lower()] = {"score": score, "start": start, "end": end, "answer": text}
    else:
        answer["score"] += score


def _items(args: tuple, question, context) -> list:
    """The examples of a call, unchecked, in any of the argument forms the pipeline accepts."""
    if args:
        if question is not None or context is not None:
            raise UserInputError(
                "pass the examples either positionally or as question= and context=, not both"
            )
        items = _positional_items(args)
    elif question is not None and context is not None:
        items = _keyword_items(question, context)
    else:
        raise UserInputError(
            "pass question= and context=, a {'question': ..., 'context': ...} dict, or a list of such dicts"
        )
    return items


def _positional_items(args: tuple) -> list:
    if len(args) == 2 and all(isinstance(arg, str) for arg in args):
        return [{"question": args[0], "context": args[1]}]
    inputs = args[0] if len(args) == 1 else list(args)
    if isinstance(inputs, dict):
        return [inputs]
    if isinstance(inputs, (list, tuple)):
        return list(inputs)
    raise UserInputError(
        f"cannot read examples from {type(inputs).__name__}; pass a {{'question': ..., 'context': ...}} "
        "dict, a list of them, or question= and context="
    )


def _keyword_items(question, context) -> list[dict]:
    if isinstance(question, list) and isinstance(context, str):
        return [{"question": q, "context": context} for q in question]
    if isinstance(question, list) and isinstance(context, list):
        if len(question) != len(context):
            raise UserInputError(
                f"got {len(question)} questions and {len(context)} contexts; pass lists of the same length"
            )
        return [{"question": q, "context": c} for q, c in zip(question, context)]
    if isinstance(question, str) and isinstance(context, str):
        return [{"question": question, "context": context}]
    raise UserInputError(
        "question and context must both be strings, both lists of strings, or a list of questions with one "
        f"context string; got {type(question).__name__} and {type(context).__name__}"
    )


def _question_and_context(item) -> tuple[str, str]:
    if not isinstance(item, dict):
        raise UserInputError(f"each example must be a {{'question': ..., 'context': ...}} dict, got {item!r}")
    extra = set(item) - {"question", "context"}
    if extra:
        raise UserInputError(
            f"an example has unexpected keys {sorted(extra)}; use only 'question' and 'context'"
        )
    for key in ("question", "context"):
        if key not in item:
            raise UserInputError(f"an example lacks its {key!r}; give every example a question and a context")
        if not isinstance(item[key], str):
            raise UserInputError(f"{key} must be a string, got {type(item[key]).__name__}")
        if not item[key]:
            raise UserInputError(f"{key} is empty; pass a non-empty {key}")
        check_text(key, item[key])
    return item["question"], item["context"]


def _options(options: dict) -> QAOptions:
    known = QAOptions.__dataclass_fields__
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise UserInputError(
            f"unknown keyword argument(s) {unknown}; question answering takes question, context, "
            f"{', '.join(known)}"
        )
    return QAOptions(**options)
