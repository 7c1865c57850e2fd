"""Bounded work per request (README.md#bounded-work-per-request): option values cannot make a call cost more
than its text needs, absurd integers are refused with their range, and each RequestLimits limit refuses a
call past it before the work it bounds. Runs on the tiny fp32 bundles; one test compares the span search with
transformers' own decode_spans."""

from __future__ import annotations

import time

import numpy as np
import pytest
from conftest import MLM_NAME, QA_NAME, SCORE_ATOL

import distilrt
from distilrt.errors import UserInputError
from distilrt.heads import question_answering
from distilrt.heads.question_answering import EXACT_SEARCH_PAIRS, _answer_spans, _top_spans
from distilrt.limits import INT32_MAX, RequestLimits
from distilrt.serve.protocol import read_request

HUGE = 2**70


@pytest.fixture(scope="module")
def qa(tiny_bundles):
    with distilrt.load(tiny_bundles[QA_NAME].path) as head:
        yield head


@pytest.fixture(scope="module")
def fm(tiny_bundles):
    with distilrt.load(tiny_bundles[MLM_NAME].path) as head:
        yield head


def _distinct_word_context(head, chars: int) -> str:
    """Single-token vocabulary words, each used once: no two spans have the same text, so merging equal
    answers cannot reorder them and a small top_k's answers must be a prefix of a larger top_k's."""
    tokenizer = head.tokenizer_copy()
    words = []
    for token, _ in sorted(tokenizer.get_vocab().items(), key=lambda item: item[1]):
        if token.isalpha() and token.isascii() and len(token) >= 4 and len(tokenizer.encode(token).tokens) == 3:
            words.append(token)
            if sum(len(word) + 1 for word in words) >= chars:
                return " ".join(words)
    raise AssertionError("the vocabulary has too few whole words")


@pytest.fixture
def ranked(monkeypatch):
    """The number of (start, end) pairs each window ranked, as the head asked _top_spans for them."""
    counts = []

    def counting(start, end, spans_to_rank, max_answer_len, allowed):
        counts.append(spans_to_rank)
        return _top_spans(start, end, spans_to_rank, max_answer_len, allowed)

    monkeypatch.setattr(question_answering, "_top_spans", counting)
    return counts


def _same_answers(got: list[dict], expected: list[dict]) -> None:
    assert [(a["answer"], a["start"], a["end"]) for a in got] == [(a["answer"], a["start"], a["end"]) for a in expected]
    assert np.allclose([a["score"] for a in got], [a["score"] for a in expected], rtol=0, atol=SCORE_ATOL)


@pytest.mark.parametrize("chars", [1300, 6000])
def test_a_huge_top_k_ranks_only_the_answer_spans_and_extends_a_small_top_k(qa, ranked, chars):
    context = _distinct_word_context(qa, chars)
    question = "Which word comes first?"
    features = qa.features(question, context)
    assert len(features) == 1 if chars == 1300 else len(features) >= 3
    started = time.perf_counter()
    everything = qa(question=question, context=context, top_k=INT32_MAX)
    assert time.perf_counter() - started < 60  # a sanity bound only: it took minutes before the bound
    # Each window ranks its answer spans, at least EXACT_SEARCH_PAIRS, never all tokens² of them.
    allowed = [qa._allowed_tokens(feature) for feature in features]
    expected = [max(_answer_spans(a, 15), EXACT_SEARCH_PAIRS) for a in allowed]
    assert ranked == expected
    assert all(count < len(feature.ids) ** 2 for count, feature in zip(ranked, features))
    assert len(everything) <= sum(ranked)
    if len(features) > 1:
        return  # a span in two windows' overlap adds up its scores, so a small top_k can rank it differently
    for top_k in (1, 5, 40):
        small = qa(question=question, context=context, top_k=top_k)
        _same_answers(small if isinstance(small, list) else [small], everything[:top_k])


def test_a_max_answer_len_past_the_window_is_the_window(qa):
    context = _distinct_word_context(qa, 600)
    window = len(qa.features("Which?", context)[0].ids)
    at_window = qa(question="Which?", context=context, top_k=3, max_answer_len=window)
    for larger in (window + 1, INT32_MAX):
        assert qa(question="Which?", context=context, top_k=3, max_answer_len=larger) == at_window


@pytest.mark.parametrize("tokens", [20, 64, 65, 150, 384])
@pytest.mark.parametrize("candidates", [1, 2, 12, 90, 4096, 5000, 2 * INT32_MAX + 10])
def test_the_span_search_is_the_pipelines_up_to_its_bound(tokens, candidates):
    """_top_spans against transformers' decode_spans on random probabilities: the same pairs, in the same order,
    wherever the pipeline ranks at most EXACT_SEARCH_PAIRS of them or the window has at most that many; past
    that, the pipeline's list with its pairs of score 0 after the answer spans left out."""
    decode_spans = pytest.importorskip("transformers.pipelines.question_answering").decode_spans
    rng = np.random.default_rng(tokens * 7919 + candidates % 1000)
    allowed = np.ones((1, tokens), dtype=np.int64)
    allowed[0, 1:5] = 0  # question tokens
    start, end = ((rng.dirichlet(np.ones(tokens))[None] * allowed).astype(np.float32) for _ in range(2))
    start[0, 0] = end[0, 0] = 0.0
    max_answer_len = 15
    spans = _answer_spans(allowed, max_answer_len)
    pairs = tokens * tokens
    to_rank = min(candidates, pairs) if candidates == 1 or pairs <= EXACT_SEARCH_PAIRS else \
        min(candidates, max(spans, EXACT_SEARCH_PAIRS))
    got = _top_spans(start.copy(), end.copy(), to_rank, max_answer_len, allowed)
    # The pipeline's own top_k == pairs fails (argpartition out of bounds); pairs + 1 ranks them all too.
    reference = decode_spans(start.copy(), end.copy(), candidates if candidates < pairs else pairs + 1,
                             max_answer_len, allowed)
    exact = to_rank >= min(candidates, pairs)
    assert exact or (candidates > EXACT_SEARCH_PAIRS and pairs > EXACT_SEARCH_PAIRS)
    if exact:
        for ours, theirs in zip(got, reference):
            np.testing.assert_array_equal(ours, theirs)
        return
    positive = reference[2] > 0
    assert positive.sum() <= spans <= len(got[2]) < len(reference[2])
    np.testing.assert_array_equal(got[2][: positive.sum()], reference[2][positive])
    assert set(zip(got[0][got[2] > 0], got[1][got[2] > 0])) == set(zip(reference[0][positive], reference[1][positive]))


@pytest.mark.parametrize("option", ["top_k", "max_answer_len", "max_seq_len", "doc_stride", "max_question_len"])
@pytest.mark.parametrize("value", [HUGE, INT32_MAX + 1, -HUGE, 2**1000, 10**5000, np.int64(2**62)],
                         ids=["2**70", "int32+1", "-2**70", "2**1000", "10**5000", "int64"])
def test_absurd_qa_integers_are_refused_with_their_range(qa, option, value):
    with pytest.raises(UserInputError, match=rf"{option} must be an integer from \d to 2147483647, got ") as error:
        qa(question="Where?", context="Ada wrote it in London.", **{option: value})
    assert len(str(error.value)) < 300  # a huge int is shown cut short


def test_int32_max_options_are_capped_not_refused(qa):
    answer = qa(question="Where?", context="Ada wrote it in London.")
    capped = qa(question="Where?", context="Ada wrote it in London.", max_answer_len=INT32_MAX, max_question_len=INT32_MAX)
    assert capped == answer


@pytest.mark.parametrize("options, message", [
    ({"top_k": HUGE}, r"top_k must be an integer from 1 to 2147483647, got 1180591620717411303424"),
    ({"top_k": 0}, "top_k must be an integer from 1 to"),
    ({"top_k": 1.5}, "top_k must be an integer"),
    ({"top_k": 10**6}, r"top_k must be an integer from 1 to \d+, got 1000000; this model predicts one of"),
    ({"top_k": HUGE, "targets": ["the"]}, "top_k must be an integer from 1 to 2147483647"),
])
def test_absurd_fill_mask_integers_are_refused_with_their_range(fm, options, message):
    with pytest.raises(UserInputError, match=message):
        fm(f"Paris is the {fm.tokenizer_settings.mask_token} of France.", **options)


def test_fill_mask_top_k_is_capped_at_the_targets_and_reaches_the_vocabulary(fm):
    text = f"Paris is the {fm.tokenizer_settings.mask_token} of France."
    assert len(fm(text, top_k=INT32_MAX, targets=["city", "river"])) == 2
    vocab_size = fm.tokenizer_copy().get_vocab_size(with_added_tokens=True)
    everything = fm(text, top_k=vocab_size)
    assert len(everything) == vocab_size and everything[:5] == fm(text)


def _refused_before_the_model(head, monkeypatch):
    def must_not_run(feed):
        raise AssertionError("the model ran for a request past a limit")

    monkeypatch.setattr(head._backend, "run", must_not_run)


QA_LIMITS = [
    ("max_inputs", 2, {"question": ["a?", "b?", "c?"], "context": "Ada wrote it."}),
    ("max_text_chars", 100, {"question": "Who?", "context": "x" * 97}),
    ("max_windows", 3, {"question": "Who?", "context": "Ada wrote it. " * 60, "max_seq_len": 64, "doc_stride": 16}),
    ("max_proposals", 1000, {"question": "Who?", "context": "Ada wrote it. " * 60, "top_k": INT32_MAX}),
    # 5 one-window examples of fewer than 64 tokens, each ranking top_k * 2 + 10 = 20 pairs: 100 > 99.
    ("max_proposals", 99, {"question": ["Who?"] * 5, "context": "Ada wrote it.", "top_k": 5}),
]


@pytest.mark.parametrize("limit, value, call", QA_LIMITS)
def test_each_qa_limit_refuses_a_call_past_it_before_the_model_runs(tiny_bundles, monkeypatch, limit, value, call):
    with distilrt.load(tiny_bundles[QA_NAME].path, limits=RequestLimits(**{limit: value})) as head:
        _refused_before_the_model(head, monkeypatch)
        with pytest.raises(UserInputError, match=rf"more than this model's limit of {value} "
                                                 rf"\(RequestLimits.{limit}\).*limits=RequestLimits\({limit}=\.\.\.\)"):
            head(**call)


@pytest.mark.parametrize("limit, value, inputs, options", [
    ("max_inputs", 2, ["A {mask}."] * 3, {}),
    ("max_text_chars", 20, "A {mask} " + "b" * 20, {}),
    ("max_masks", 2, "A {mask} {mask} {mask}.", {}),
    ("max_targets", 2, "A {mask}.", {"targets": ["a", "b", "c"]}),
    ("max_target_chars", 10, "A {mask}.", {"targets": ["a", "b" * 11]}),
    ("max_proposals", 15, "A {mask} {mask}.", {"top_k": 10}),
])
def test_each_fill_mask_limit_refuses_a_call_past_it_before_the_model_runs(tiny_bundles, monkeypatch, limit, value,
                                                                            inputs, options):
    with distilrt.load(tiny_bundles[MLM_NAME].path, limits=RequestLimits(**{limit: value})) as head:
        mask = head.tokenizer_settings.mask_token
        inputs = inputs.format(mask=mask) if isinstance(inputs, str) else [t.format(mask=mask) for t in inputs]
        _refused_before_the_model(head, monkeypatch)
        with pytest.raises(UserInputError, match=rf"more than this model's limit of {value} \(RequestLimits.{limit}\)"):
            head(inputs, **options)


def test_calls_at_a_limit_are_answered_as_with_the_defaults(tiny_bundles, qa, fm):
    """A limit refuses only past it; the defaults leave ordinary calls alone (their answers match the pipeline:
    tests/test_heads_parity.py)."""
    pairs = {"question": ["Who wrote it?", "Where?"], "context": ["Ada wrote it in London. " * 30, "In Paris."]}
    windows = sum(len(qa.features(q, c, max_seq_len=64, doc_stride=16)) for q, c in zip(*pairs.values()))
    chars = sum(len(text) for texts in pairs.values() for text in texts)
    tight = RequestLimits(max_inputs=2, max_text_chars=chars, max_windows=windows)
    with distilrt.load(tiny_bundles[QA_NAME].path, limits=tight) as head:
        assert head(**pairs, max_seq_len=64, doc_stride=16, top_k=3) == qa(**pairs, max_seq_len=64, doc_stride=16,
                                                                            top_k=3)
    mask = fm.tokenizer_settings.mask_token
    text = f"A {mask} and a {mask}."
    tight = RequestLimits(max_masks=2, max_targets=3, max_target_chars=5, max_proposals=6)
    with distilrt.load(tiny_bundles[MLM_NAME].path, limits=tight) as head:
        assert head(text, top_k=3) == fm(text, top_k=3)
        assert head(text, targets=["cat", "dog", "house"]) == fm(text, targets=["cat", "dog", "house"])


def test_request_limits_are_checked(tiny_bundles):
    for bad in (0, -1, 1.5, None, True):
        with pytest.raises(UserInputError, match="RequestLimits.max_windows must be an integer >= 1"):
            RequestLimits(max_windows=bad)
    with pytest.raises(UserInputError, match="limits must be a distilrt.limits.RequestLimits"):
        distilrt.load(tiny_bundles[QA_NAME].path, limits={"max_windows": 3})
    assert RequestLimits.from_dict(RequestLimits(max_inputs=7).to_dict()) == RequestLimits(max_inputs=7)


def _get(values: dict):
    return {name: np.array([[value]], dtype=np.object_) for name, value in values.items()}.get


# The server bounds every integer option to 1..65536 (doc_stride 0..65536) before the head's own checks.
@pytest.mark.parametrize("task, values, message", [
    ("question-answering", {"top_k": 0}, "top_k must be an integer from 1 to 65536"),
    ("question-answering", {"max_answer_len": -3}, "max_answer_len must be an integer from 1"),
    ("question-answering", {"doc_stride": np.int64(HUGE >> 10)}, "doc_stride must be an integer from 0 to 65536"),
    ("question-answering", {"top_k": 2.5}, r"input 'top_k' must be an integer \(INT32\), got 2.5"),
    ("fill-mask", {"top_k": HUGE}, "top_k must be an integer from 1 to 65536"),
])
def test_the_servers_option_parsing_refuses_the_same_values(task, values, message):
    texts = {"question": b"Who?", "context": b"Ada."} if task == "question-answering" else {"text": b"A [MASK]."}
    with pytest.raises(UserInputError, match=message):
        read_request(task, _get({**texts, **values}), max_text_bytes=100)
