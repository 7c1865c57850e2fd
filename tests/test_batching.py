"""Length-aware batching: windows grouped by token length into batches bounded by a count and a token budget,
results in input order, and the same answers as batching in arrival order."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import MLM_CHECKPOINTS, QA_CHECKPOINTS

import distilrt
from distilrt.errors import UserInputError
from distilrt.tokenization import length_batches, run_in_batches


def test_batches_group_by_length_within_count_and_budget():
    lengths = [50, 300, 60, 310, 55, 40, 305]
    batches = length_batches(lengths, batch_size=3, max_batch_tokens=1000)
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
    assert [[lengths[i] for i in batch] for batch in batches] == [[40, 50, 55], [60, 300, 305], [310]]
    for batch in batches:
        assert len(batch) <= 3 and len(batch) * max(lengths[i] for i in batch) <= 1000


def test_equal_lengths_keep_their_order_and_an_oversized_window_runs_alone():
    assert length_batches([5, 5, 5, 5], batch_size=2, max_batch_tokens=100) == [[0, 1], [2, 3]]
    assert length_batches([10, 500, 10], batch_size=8, max_batch_tokens=100) == [[0, 2], [1]]


def test_arrival_order_batches_by_count_and_budget_only():
    assert length_batches([50, 300, 60], batch_size=2, max_batch_tokens=10_000, sort_by_length=False) == [[0, 1], [2]]
    assert length_batches([50, 300, 60], batch_size=8, max_batch_tokens=400, sort_by_length=False) == [[0], [1], [2]]


class _RecordingBackend:
    """Gives each row its input ids as output, and records the padded batch shapes it was run on."""

    name = "recording"
    input_names = ("input_ids", "attention_mask")
    output_names = ("echo",)

    def __init__(self):
        self.shapes = []

    def run(self, feed):
        self.shapes.append(feed["input_ids"].shape)
        return {"echo": feed["input_ids"].astype(np.float32)}


def test_outputs_come_back_in_input_order_unpadded(tiny_bundles):
    bundle = tiny_bundles[QA_CHECKPOINTS[0]]
    tokenizer = distilrt.tokenization.load_tokenizer(bundle.tokenizer_path)
    texts = ["one", "a much longer text with very many more words in it than the others", "two words", "x " * 40]
    encodings = tokenizer.encode_batch(texts)
    backend = _RecordingBackend()
    outputs = run_in_batches(backend, encodings, bundle.tokenizer_settings, 2, max_batch_tokens=10_000)
    assert [list(out["echo"].astype(int)) for out in outputs] == [encoding.ids for encoding in encodings]
    shortest_two = sorted(len(e.ids) for e in encodings)[:2]
    assert backend.shapes[0] == (2, shortest_two[1])  # the two shortest padded to each other, not to the longest


@pytest.mark.parametrize("name", QA_CHECKPOINTS)
def test_question_answering_answers_match_arrival_order_batching(tiny_bundles, name):
    from distilrt.calib import SQUAD_DEV
    from distilrt.calib.squad import read_squad, sample_questions

    items = sample_questions(read_squad(SQUAD_DEV), 24, seed=3)
    # Long contexts (several windows) next to short ones: the windows of one question land in different batches.
    questions = [{"question": item.question, "context": item.context * (1 + index % 3)}
                 for index, item in enumerate(items)]
    with distilrt.load(tiny_bundles[name].path) as grouped, \
            distilrt.load(tiny_bundles[name].path, sort_by_length=False) as arrival:
        expected = arrival(questions, top_k=2)
        got = grouped(questions, top_k=2)
    assert len(got) == len(questions)
    for g, e in zip(got, expected):
        assert [(a["start"], a["end"], a["answer"]) for a in g] == [(a["start"], a["end"], a["answer"]) for a in e]
        assert max(abs(a["score"] - b["score"]) for a, b in zip(g, e)) < 1e-5


@pytest.mark.parametrize("name", MLM_CHECKPOINTS)
def test_fill_mask_answers_match_arrival_order_batching(tiny_bundles, name):
    from distilrt.calib import WIKITEXT_TEST
    from distilrt.calib.text import read_lines

    mask = tiny_bundles[name].tokenizer_settings.mask_token
    lines = [line for line in read_lines(WIKITEXT_TEST) if len(line.split()) > 6][:20]
    texts = [" ".join(words[:3 + 7 * (index % 4)] + [mask] + words[4 + 7 * (index % 4):][:index])
             for index, words in enumerate(line.split() for line in lines)]
    texts[5] = f"{mask} two masks {mask} in one text"
    with distilrt.load(tiny_bundles[name].path, batch_size=4) as grouped, \
            distilrt.load(tiny_bundles[name].path, batch_size=4, sort_by_length=False) as arrival:
        expected = arrival(texts, top_k=3)
        got = grouped(texts, top_k=3)
    assert len(got) == len(texts)
    for g, e in zip(got, expected):
        flat_g, flat_e = _flat(g), _flat(e)
        assert [(p["token"], p["sequence"]) for p in flat_g] == [(p["token"], p["sequence"]) for p in flat_e]
        assert max(abs(a["score"] - b["score"]) for a, b in zip(flat_g, flat_e)) < 1e-5


def _flat(result):
    return [p for row in result for p in (row if isinstance(row, list) else [row])]


@pytest.mark.parametrize("options, message", [
    ({"max_batch_tokens": 0}, "max_batch_tokens"),
    ({"max_batch_tokens": "4096"}, "max_batch_tokens"),
    ({"sort_by_length": "yes"}, "sort_by_length"),
])
def test_bad_batching_options_are_refused(tiny_bundles, options, message):
    with pytest.raises(UserInputError, match=message):
        distilrt.load(tiny_bundles[QA_CHECKPOINTS[0]].path, **options)
