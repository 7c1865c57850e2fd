"""Calibration and evaluation sets (made with the runtime's own preprocessing, seeded, hashed, disjoint) and the
task-level metrics of the evaluation gate."""

from __future__ import annotations

import gzip
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import MLM_CHECKPOINTS, QA_NAME

import distilrt
from distilrt.calib import SQUAD_DEV
from distilrt.calib.metrics import masked_lm_accuracy, normalize_answer, squad_em_f1, topk_agreement
from distilrt.calib.sets import (
    CALIBRATION,
    EVALUATION,
    CalibConfig,
    EvalConfig,
    calibration_set,
    mlm_evaluation_set,
    qa_evaluation_set,
    split_of,
)
from distilrt.calib.squad import read_squad
from distilrt.errors import UserInputError

SHORT_WINDOW = 64  # QA contexts of the user file below need several windows of this length
IDENTITY_KEYS = {"source", "source_sha256", "split", "size", "seed", "sha256"}
WORDS = (
    "apple river house stone cloud green music paper table water light horse bread chair glass plant storm "
    "train world field money story night power human party voice child heart phone south north beach dream "
    "earth ocean smile queen metal sugar truck watch wheel piano tiger zebra lemon honey grass snake eagle "
    "knife shirt pilot judge nurse"
).split()


@pytest.fixture(scope="module")
def heads(tiny_bundles):
    """Each tiny bundle's head and model input names, loaded once."""
    loaded = {}

    def head_and_inputs(name: str):
        if name not in loaded:
            bundle = tiny_bundles[name].bundle
            loaded[name] = distilrt.load(bundle), distilrt.read_bundle(bundle).input_names
        return loaded[name]

    return head_and_inputs


@pytest.fixture(scope="module")
def qa_head(heads):
    return heads(QA_NAME)[0]


@pytest.fixture(scope="module")
def qa_inputs(heads):
    return heads(QA_NAME)[1]


@pytest.fixture(scope="module", params=MLM_CHECKPOINTS)
def mlm(request, heads):
    return heads(request.param)


@pytest.fixture
def squad_file(tmp_path) -> Path:
    """Twelve articles of three paragraphs, each paragraph long enough to need several short windows."""
    articles = []
    for a in range(12):
        paragraphs = []
        for p in range(3):
            context = " ".join(
                f"In the year {1800 + 10 * a + p + s} the town of {WORDS[a]}ville built a {WORDS[(a + s) % 40]} "
                f"for its {WORDS[(p + s) % 40]} makers."
                for s in range(8)
            )
            qas = [
                {"id": f"{a}-{p}-{q}", "question": f"What did {WORDS[a]}ville build in year {q}?",
                 "answers": [{"text": WORDS[(a + q) % 40], "answer_start": 0}]}
                for q in range(2)
            ]
            paragraphs.append({"context": context, "qas": qas})
        articles.append({"title": f"Article {a}", "paragraphs": paragraphs})
    path = tmp_path / "small-squad.json.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        json.dump({"version": "1.1", "data": articles}, f)
    return path


@pytest.fixture
def text_file(tmp_path) -> Path:
    """Sixty lines, each one word repeated, so that every token tells which line (and split) it came from."""
    path = tmp_path / "small.txt"
    path.write_text("\n\n".join(" ".join([word] * 12) for word in WORDS), encoding="utf-8")
    return path


def _window_ids(head, questions) -> set[tuple[int, ...]]:
    return {
        tuple(window.ids)
        for q in questions
        for window in head.features(q.question, q.context, max_seq_len=SHORT_WINDOW)
    }


def _feed_ids(feeds) -> list[tuple[int, ...]]:
    return [tuple(feed["input_ids"][0].tolist()) for feed in feeds]


def _check_feeds(feeds, input_names, max_length: int) -> None:
    for feed in feeds:
        assert tuple(feed) == tuple(input_names)
        for array in feed.values():
            assert array.dtype == np.int64
            assert array.shape[0] == 1 and 1 <= array.shape[1] <= max_length


# ---- question answering ------------------------------------------------------------------------------------


def test_qa_calibration_is_deterministic_and_seeded(qa_head, qa_inputs):
    config = CalibConfig(size=64, max_seq_len=SHORT_WINDOW)
    first = calibration_set(qa_head, config, qa_inputs)
    again = calibration_set(qa_head, config, qa_inputs)
    other_seed = calibration_set(qa_head, CalibConfig(size=64, max_seq_len=SHORT_WINDOW, seed=1), qa_inputs)
    assert first.identity == again.identity
    assert _feed_ids(first.feeds) == _feed_ids(again.feeds)
    assert other_seed.identity["sha256"] != first.identity["sha256"]
    assert set(first.identity) == IDENTITY_KEYS
    assert first.identity["source"] == f"shipped:{SQUAD_DEV.name}"
    assert first.identity["split"] == CALIBRATION
    assert first.identity["size"] == len(first.feeds) == 64
    _check_feeds(first.feeds, qa_inputs, SHORT_WINDOW)


def test_qa_calibration_default_windows(qa_head, qa_inputs):
    calibration = calibration_set(qa_head, CalibConfig(size=16), qa_inputs)
    assert len(calibration.feeds) == 16
    _check_feeds(calibration.feeds, qa_inputs, 384)


def test_qa_calibration_and_evaluation_articles_are_disjoint():
    evaluation = qa_evaluation_set(EvalConfig(questions=200))
    all_titles = {q.title for q in read_squad(SQUAD_DEV)}
    calibration_titles = {title for title in all_titles if split_of(title) == CALIBRATION}
    evaluation_titles = {q.title for q in evaluation.questions}
    assert evaluation_titles and not evaluation_titles & calibration_titles
    # about a third of the articles calibrate
    assert 0.2 < len(calibration_titles) / len(all_titles) < 0.45


def test_qa_calibration_windows_are_the_heads_own_from_calibration_articles_only(qa_head, qa_inputs, squad_file):
    questions = read_squad(squad_file)
    calibration_questions = [q for q in questions if split_of(q.title) == CALIBRATION]
    evaluation_questions = [q for q in questions if split_of(q.title) == EVALUATION]
    assert calibration_questions and evaluation_questions
    config = CalibConfig(source=str(squad_file), size=12, max_seq_len=SHORT_WINDOW)
    calibration = calibration_set(qa_head, config, qa_inputs)
    feeds = _feed_ids(calibration.feeds)
    assert len(feeds) == 12
    assert set(feeds) <= _window_ids(qa_head, calibration_questions)
    assert not set(feeds) & _window_ids(qa_head, evaluation_questions)
    assert calibration.identity["source"] == str(squad_file)
    assert calibration.identity["source_sha256"] == hashlib.sha256(squad_file.read_bytes()).hexdigest()


def test_qa_evaluation_set_is_seeded_and_held_out(squad_file):
    config = EvalConfig(source=str(squad_file), questions=10)
    evaluation = qa_evaluation_set(config)
    assert qa_evaluation_set(config).identity == evaluation.identity
    assert qa_evaluation_set(EvalConfig(source=str(squad_file), questions=10, seed=3)).identity["sha256"] != (
        evaluation.identity["sha256"]
    )
    assert len(evaluation.questions) == evaluation.identity["size"] == 10
    assert len({q.id for q in evaluation.questions}) == 10
    assert all(split_of(q.title) == EVALUATION and q.answers for q in evaluation.questions)
    assert evaluation.identity["split"] == EVALUATION and set(evaluation.identity) == IDENTITY_KEYS


def test_qa_default_evaluation_size():
    assert len(qa_evaluation_set(EvalConfig()).questions) == 500


def test_qa_too_few_samples(qa_head, qa_inputs, squad_file):
    with pytest.raises(UserInputError, match="fewer than size=5000"):
        calibration_set(qa_head, CalibConfig(source=str(squad_file), size=5000, max_seq_len=SHORT_WINDOW), qa_inputs)
    with pytest.raises(UserInputError, match="fewer than questions=1000"):
        qa_evaluation_set(EvalConfig(source=str(squad_file), questions=1000))


@pytest.mark.parametrize(
    "content",
    [b"", b"not json at all", b'{"data": 3}', b'{"questions": []}', b'{"data": []}', b"\xff\xfe\x00\x01"],
    ids=["empty", "text", "bad-data", "no-data-key", "no-questions", "binary"],
)
def test_qa_bad_source_files(qa_head, qa_inputs, tmp_path, content):
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with pytest.raises(UserInputError, match="bad.json"):
        calibration_set(qa_head, CalibConfig(source=str(path)), qa_inputs)
    with pytest.raises(UserInputError, match="bad.json"):
        qa_evaluation_set(EvalConfig(source=str(path)))


def test_missing_source_file(qa_head, qa_inputs, tmp_path):
    with pytest.raises(UserInputError, match="does not exist"):
        calibration_set(qa_head, CalibConfig(source=str(tmp_path / "nowhere.json")), qa_inputs)


# ---- fill-mask ---------------------------------------------------------------------------------------------


def test_mlm_calibration_is_deterministic_and_seeded(mlm):
    head, input_names = mlm
    config = CalibConfig(size=32, sequence_length=64)
    first = calibration_set(head, config, input_names)
    again = calibration_set(head, config, input_names)
    assert first.identity == again.identity
    assert _feed_ids(first.feeds) == _feed_ids(again.feeds)
    assert calibration_set(head, CalibConfig(size=32, sequence_length=64, seed=5), input_names).identity[
        "sha256"
    ] != first.identity["sha256"]
    assert set(first.identity) == IDENTITY_KEYS
    assert first.identity["source"] == "shipped:wikitext-2-valid.txt"
    assert first.identity["size"] == len(first.feeds) == 32
    _check_feeds(first.feeds, input_names, 64)
    assert all(feed["input_ids"].shape[1] == 64 for feed in first.feeds)
    # 15% of the ordinary tokens are picked and 80% of those become the mask token: 12% of 62 of 64 tokens
    ids = np.concatenate([feed["input_ids"][0] for feed in first.feeds])
    assert np.mean(ids == head.tokenizer_settings.mask_token_id) == pytest.approx(0.12 * 62 / 64, abs=0.015)


def test_mlm_evaluation_masks_like_pretraining(mlm):
    head, input_names = mlm
    evaluation = mlm_evaluation_set(head, EvalConfig(masked_positions=3000), input_names)
    assert evaluation.identity["source"] == "shipped:wikitext-2-test.txt"
    assert evaluation.identity["split"] == EVALUATION
    assert evaluation.identity["masked_positions"] == sum(map(len, evaluation.positions)) >= 3000
    assert evaluation.identity["size"] == len(evaluation.feeds) == len(evaluation.labels)
    _check_feeds(evaluation.feeds, input_names, 128)
    mask_id = head.tokenizer_settings.mask_token_id
    shown = np.concatenate([feed["input_ids"][0][p] for feed, p in zip(evaluation.feeds, evaluation.positions)])
    labels = np.concatenate(evaluation.labels)
    assert not np.any(labels == mask_id)
    assert np.mean(shown == mask_id) == pytest.approx(0.8, abs=0.03)
    assert np.mean(shown == labels) == pytest.approx(0.1, abs=0.02)
    assert np.mean((shown != mask_id) & (shown != labels)) == pytest.approx(0.1, abs=0.02)
    special = {i for i, token in head.tokenizer_copy().get_added_tokens_decoder().items() if token.special}
    ordinary = 0
    for feed, positions, feed_labels in zip(evaluation.feeds, evaluation.positions, evaluation.labels):
        original = feed["input_ids"][0].copy()
        original[positions] = feed_labels
        ordinary += sum(i not in special for i in original.tolist())
    assert len(labels) / ordinary == pytest.approx(0.15, abs=0.002)


def test_mlm_evaluation_is_deterministic(mlm, text_file):
    head, input_names = mlm
    config = EvalConfig(source=str(text_file), masked_positions=20, sequence_length=16)
    first = mlm_evaluation_set(head, config, input_names)
    again = mlm_evaluation_set(head, config, input_names)
    assert first.identity == again.identity
    other = mlm_evaluation_set(head, EvalConfig(source=str(text_file), masked_positions=20, sequence_length=16,
                                                seed=9), input_names)
    assert other.identity["sha256"] != first.identity["sha256"]


def test_mlm_user_text_splits_by_line(heads, text_file):
    """Every original token of a set comes from the lines of its own split."""
    head, input_names = heads("distilbert-base-uncased")
    tokenizer = head.tokenizer_copy()
    words_of = {split: [w for w in WORDS if split_of(" ".join([w] * 12)) == split] for split in (CALIBRATION, EVALUATION)}
    assert words_of[CALIBRATION] and words_of[EVALUATION]
    ids_of = {
        split: {i for word in words for i in tokenizer.encode(word, add_special_tokens=False).ids}
        for split, words in words_of.items()
    }
    calibration = calibration_set(head, CalibConfig(source=str(text_file), size=8, sequence_length=16), input_names)
    evaluation = mlm_evaluation_set(head, EvalConfig(source=str(text_file), masked_positions=40, sequence_length=16),
                                    input_names)
    assert calibration.identity["source"] == str(text_file)
    assert len(calibration.feeds) == 8
    _check_feeds(calibration.feeds, input_names, 16)
    calibration_ids = {i for feed in calibration.feeds for i in feed["input_ids"][0].tolist()}
    assert not calibration_ids & (ids_of[EVALUATION] - ids_of[CALIBRATION])
    original = []
    for feed, positions, labels in zip(evaluation.feeds, evaluation.positions, evaluation.labels):
        ids = feed["input_ids"][0].copy()
        ids[positions] = labels
        original += ids[1:-1].tolist()
    assert set(original) <= ids_of[EVALUATION]


def test_mlm_too_few_samples(mlm, text_file):
    head, input_names = mlm
    with pytest.raises(UserInputError, match="fewer than size=500"):
        calibration_set(head, CalibConfig(source=str(text_file), size=500, sequence_length=16), input_names)
    with pytest.raises(UserInputError, match="fewer than masked_positions=100000"):
        mlm_evaluation_set(head, EvalConfig(source=str(text_file), masked_positions=100000), input_names)
    with pytest.raises(UserInputError, match="lower sequence_length"):
        calibration_set(head, CalibConfig(sequence_length=100000), input_names)


@pytest.mark.parametrize(
    "content, message",
    [(b"", "is empty"), (b"\n  \n\t\n", "is empty"), (b"\xff\xfe\x00 caf\xe9", "not UTF-8")],
    ids=["empty", "blank", "not-utf8"],
)
def test_mlm_bad_text_files(heads, tmp_path, content, message):
    head, input_names = heads("distilroberta-base")
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(UserInputError, match=message) as raised:
        calibration_set(head, CalibConfig(source=str(path)), input_names)
    assert str(path) in str(raised.value)
    with pytest.raises(UserInputError, match=message):
        mlm_evaluation_set(head, EvalConfig(source=str(path)), input_names)


# ---- configs and arguments ---------------------------------------------------------------------------------


def test_configs_round_trip_through_dicts(tmp_path):
    calib = CalibConfig(source=tmp_path / "data.json", size=64, seed=3, sequence_length=32, max_seq_len=128)
    assert calib.source == str(tmp_path / "data.json")
    assert CalibConfig.from_dict(json.loads(json.dumps(calib.to_dict()))) == calib
    evaluation = EvalConfig(questions=100, masked_positions=500, seed=2)
    assert EvalConfig.from_dict(evaluation.to_dict()) == evaluation
    with pytest.raises(UserInputError, match="no settings"):
        CalibConfig.from_dict({"samples": 3})


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: CalibConfig(size=4), "too few samples"),
        (lambda: CalibConfig(size=True), "size"),
        (lambda: CalibConfig(seed=-1), "seed"),
        (lambda: CalibConfig(sequence_length=4), "sequence_length"),
        (lambda: CalibConfig(max_seq_len=16), "max_seq_len"),
        (lambda: CalibConfig(source=""), "source"),
        (lambda: EvalConfig(questions=2), "too few samples"),
        (lambda: EvalConfig(masked_positions=0), "too few samples"),
        (lambda: EvalConfig(seed=1.5), "seed"),
    ],
)
def test_configs_are_validated(make, message):
    with pytest.raises(UserInputError, match=message):
        make()


def test_bad_arguments(qa_head, qa_inputs, mlm):
    with pytest.raises(UserInputError, match="QuestionAnswerer or a FillMask"):
        calibration_set(object(), CalibConfig(), qa_inputs)
    with pytest.raises(UserInputError, match="FillMask"):
        mlm_evaluation_set(qa_head, EvalConfig(), qa_inputs)
    with pytest.raises(UserInputError, match="input_ids"):
        calibration_set(qa_head, CalibConfig(), ["attention_mask"])


# ---- metrics -----------------------------------------------------------------------------------------------


def test_normalize_answer():
    assert normalize_answer("The  Eiffel Tower!") == "eiffel tower"
    assert normalize_answer("an apple, a day") == "apple day"
    assert normalize_answer("Theatre of the Absurd") == "theatre of absurd"  # only whole-word articles go
    assert normalize_answer("  U.S.A.\n") == "usa"


def test_squad_em_f1():
    assert squad_em_f1(["the Eiffel Tower."], [["Eiffel tower"]]) == {"exact_match": 100.0, "f1": 100.0, "count": 1}
    # the best of several references counts
    assert squad_em_f1(["Paris"], [["London", "in Paris", "paris"]])["exact_match"] == 100.0
    # partial overlap: precision 1/3, recall 1
    partial = squad_em_f1(["in Paris France"], [["Paris"]])
    assert partial["exact_match"] == 0.0 and partial["f1"] == pytest.approx(50.0)
    assert squad_em_f1(["Berlin"], [["Paris", "Rome"]]) == {"exact_match": 0.0, "f1": 0.0, "count": 1}
    # averaged over questions
    both = squad_em_f1(["Paris", "Berlin"], [["Paris"], ["Rome"]])
    assert both == {"exact_match": 50.0, "f1": 50.0, "count": 2}
    # repeated tokens count as a multiset
    assert squad_em_f1(["the the cat cat"], [["cat"]])["f1"] == pytest.approx(100 * 2 * 0.5 / 1.5)
    # answers that normalise to nothing: equal ones agree fully, an empty one against a word scores 0
    assert squad_em_f1(["the"], [["."]]) == {"exact_match": 100.0, "f1": 100.0, "count": 1}
    assert squad_em_f1([""], [["Paris"]])["f1"] == 0.0 and squad_em_f1(["Paris"], [[""]])["f1"] == 0.0
    with pytest.raises(UserInputError, match="2 reference lists"):
        squad_em_f1(["a"], [["a"], ["b"]])
    with pytest.raises(UserInputError, match="no reference answers"):
        squad_em_f1(["a"], [[]])


def test_topk_agreement():
    reference = [np.array([[0.9, 0.8, 0.1, 0.0], [0.0, 0.1, 0.2, 0.3]]), np.array([[1.0, 2.0, 3.0, 4.0]])]
    same = topk_agreement(reference, [r.copy() for r in reference], k=2)
    assert same == {"positions": 3, "top1_agreement": 100.0, "topk_overlap": 100.0}
    # row 1: top-1 differs, one of the top 2 shared; rows 2 and 3 reversed: nothing shared
    candidate = [np.array([[0.8, 0.1, 0.9, 0.0], [0.3, 0.2, 0.1, 0.0]]), np.array([[4.0, 3.0, 2.0, 1.0]])]
    result = topk_agreement(reference, candidate, k=2)
    assert result["positions"] == 3
    assert result["top1_agreement"] == 0.0
    assert result["topk_overlap"] == pytest.approx(100 * (1 / 2) / 3)
    assert topk_agreement(reference, candidate, k=4)["topk_overlap"] == 100.0
    with pytest.raises(UserInputError, match="differ in shape"):
        topk_agreement(reference, reference[:1])
    with pytest.raises(UserInputError, match="k must be"):
        topk_agreement(reference, reference, k=5)


def test_masked_lm_accuracy():
    logits = [
        np.array([[5.0, 1, 0, 0, 0, 0, 0], [0, 1, 2, 3, 4, 5, 6]]),
        np.array([[0, 1, 2, 3, 4, 5, 6]]),
    ]
    labels = [np.array([0, 2]), np.array([0])]  # top-1; 5th best; 7th best
    result = masked_lm_accuracy(logits, labels)
    assert result["positions"] == 3
    assert result["top1_accuracy"] == pytest.approx(100 / 3)
    assert result["top5_accuracy"] == pytest.approx(200 / 3)
    with pytest.raises(UserInputError, match="one label per"):
        masked_lm_accuracy(logits, labels[:1])
    with pytest.raises(UserInputError, match="no positions"):
        masked_lm_accuracy([np.zeros((0, 7))], [np.zeros(0, dtype=np.int64)])


# --- the datasets library as a source ----------------------------------------------------------------------


class _FakeDatasets:
    """Stands in for the `datasets` module (not installed here, and its hub is unreachable)."""

    def __init__(self, rows):
        self.rows = rows
        self.calls = []

    def load_dataset(self, path, config, split):
        self.calls.append((path, config, split))
        return self.rows


def test_datasets_source_feeds_the_qa_evaluation_set(monkeypatch):
    from distilrt.calib.sets import EvalConfig, qa_evaluation_set

    articles = read_squad(SQUAD_DEV)
    rows = [{"id": q.id, "title": q.title, "context": q.context, "question": q.question,
             "answers": {"text": list(q.answers)}} for q in articles[:3000]]
    fake = _FakeDatasets(rows)
    monkeypatch.setitem(sys.modules, "datasets", fake)
    eval_set = qa_evaluation_set(EvalConfig(source="datasets:squad:validation", questions=20))
    assert fake.calls == [("squad", None, "validation")]
    assert eval_set.identity["source"] == "datasets:squad:validation" and len(eval_set.questions) == 20
    by_id = {q.id: q for q in articles}
    assert all(by_id[q.id].answers == q.answers for q in eval_set.questions)


def test_datasets_source_needs_the_library(monkeypatch):
    from distilrt.calib.sets import EvalConfig, qa_evaluation_set
    from distilrt.errors import CapabilityError

    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    with pytest.raises(CapabilityError, match="pip install datasets"):
        qa_evaluation_set(EvalConfig(source="datasets:squad:validation"))


def test_datasets_source_spelling_is_checked():
    from distilrt.calib.sets import EvalConfig, qa_evaluation_set

    with pytest.raises(UserInputError, match="datasets:PATH:SPLIT"):
        qa_evaluation_set(EvalConfig(source="datasets:squad"))
