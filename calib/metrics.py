"""Task-level scores for the evaluation gate: SQuAD v1.1 EM/F1 for question answering, and for fill-mask the
agreement of a variant's logits with the fp32 logits and the accuracy on masked tokens. Percentages, 0-100."""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

import numpy as np

from distilrt.errors import UserInputError

_PUNCTUATION = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """SQuAD v1.1's normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(char for char in text.lower() if char not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def squad_em_f1(predictions: list[str], references: list[Sequence[str]]) -> dict:
    """Exact match and F1 in %, each question scored against its best-matching reference answer."""
    if len(predictions) != len(references):
        raise UserInputError(
            f"got {len(predictions)} predictions and {len(references)} reference lists; pass one of each per question"
        )
    if not predictions:
        raise UserInputError("no predictions to score; pass at least one question's prediction")
    exact = f1 = 0.0
    for index, (prediction, answers) in enumerate(zip(predictions, references)):
        if not answers:
            raise UserInputError(f"question {index} has no reference answers; leave unanswerable questions out")
        exact += max(float(normalize_answer(prediction) == normalize_answer(answer)) for answer in answers)
        f1 += max(_token_f1(prediction, answer) for answer in answers)
    count = len(predictions)
    return {"exact_match": 100.0 * exact / count, "f1": 100.0 * f1 / count, "count": count}


def _token_f1(prediction: str, answer: str) -> float:
    predicted = normalize_answer(prediction).split()
    expected = normalize_answer(answer).split()
    if not predicted or not expected:
        # SQuAD v1.1's script scores two empty answers 0; v2.0's rule (1 if both are empty) is the one that
        # makes sense when the reference is another model's answer, which can normalise to nothing ("", "the",
        # "."). Gold v1.1 answers are never empty, so their scores are unchanged.
        return float(predicted == expected)
    common = sum((Counter(predicted) & Counter(expected)).values())
    if common == 0:
        return 0.0
    precision = common / len(predicted)
    recall = common / len(expected)
    return 2 * precision * recall / (precision + recall)


def topk_agreement(
    reference_logits: list[np.ndarray], candidate_logits: list[np.ndarray], k: int = 5
) -> dict:
    """How often a variant's top-1 token equals the reference's, and how much of the reference top-k it keeps.

    Each array holds one feed's logits at its scored positions, shaped (positions, vocab).
    """
    reference = _stacked("reference_logits", reference_logits)
    candidate = _stacked("candidate_logits", candidate_logits)
    if reference.shape != candidate.shape:
        raise UserInputError(
            f"reference logits {reference.shape} and candidate logits {candidate.shape} differ in shape; "
            "pass the logits of the same positions from both models"
        )
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= reference.shape[1]:
        raise UserInputError(f"k must be an integer from 1 to the vocabulary size {reference.shape[1]}, got {k!r}")
    same_top1 = reference.argmax(axis=1) == candidate.argmax(axis=1)
    reference_top = _top_k(reference, k)
    candidate_top = _top_k(candidate, k)
    shared = (reference_top[:, :, None] == candidate_top[:, None, :]).any(axis=2).sum(axis=1)
    return {
        "positions": len(reference),
        "top1_agreement": 100.0 * float(same_top1.mean()),
        "topk_overlap": 100.0 * float(shared.mean()) / k,
    }


def masked_lm_accuracy(logits: list[np.ndarray], labels: list[np.ndarray]) -> dict:
    """How often the original token is the model's first guess, and among its first five, in %."""
    scores = _stacked("logits", logits)
    expected = np.concatenate([np.empty(0, dtype=np.int64), *(np.asarray(ids).reshape(-1) for ids in labels)])
    if len(expected) != len(scores):
        raise UserInputError(
            f"got logits for {len(scores)} positions and {len(expected)} labels; pass one label per scored position"
        )
    top = _top_k(scores, min(5, scores.shape[1]))
    return {
        "positions": len(scores),
        "top1_accuracy": 100.0 * float((scores.argmax(axis=1) == expected).mean()),
        "top5_accuracy": 100.0 * float((top == expected[:, None]).any(axis=1).mean()),
    }


def _stacked(name: str, per_feed: list[np.ndarray]) -> np.ndarray:
    """All feeds' (positions, vocab) arrays as one; at least one position, or there is nothing to score."""
    arrays = [np.asarray(array) for array in per_feed]
    if any(array.ndim != 2 for array in arrays):
        raise UserInputError(f"each array in {name} must be 2-D (positions, vocab)")
    if not arrays or sum(len(array) for array in arrays) == 0:
        raise UserInputError(f"{name} holds no positions; pass the logits of at least one masked position")
    return np.concatenate(arrays)


def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """The indexes of each row's k highest scores, in no particular order."""
    return np.argpartition(-scores, k - 1, axis=1)[:, :k]
