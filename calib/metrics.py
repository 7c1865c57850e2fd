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
    return squad_summary(*squad_scores(predictions, references))


def squad_summary(exact: np.ndarray, f1: np.ndarray) -> dict:
    """Exact match and F1 in % from ``squad_scores``' per-question scores."""
    return {"exact_match": 100.0 * float(exact.mean()), "f1": 100.0 * float(f1.mean()), "count": len(f1)}


def squad_scores(predictions: list[str], references: list[Sequence[str]]) -> tuple[np.ndarray, np.ndarray]:
    """Per question: exact match (0 or 1) and token F1 (0 to 1) against its best-matching reference answer."""
    if len(predictions) != len(references):
        raise UserInputError(
            f"got {len(predictions)} predictions and {len(references)} reference lists; pass one of each per question"
        )
    if not predictions:
        raise UserInputError("no predictions to score; pass at least one question's prediction")
    exact, f1 = [], []
    for index, (prediction, answers) in enumerate(zip(predictions, references)):
        if not answers:
            raise UserInputError(f"question {index} has no reference answers; leave unanswerable questions out")
        exact.append(max(float(normalize_answer(prediction) == normalize_answer(answer)) for answer in answers))
        f1.append(max(_token_f1(prediction, answer) for answer in answers))
    return np.array(exact), np.array(f1)


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


def top1_matches(reference_logits: list[np.ndarray], candidate_logits: list[np.ndarray]) -> np.ndarray:
    """Per scored position: 1.0 where the candidate's top-1 token is the reference's, else 0.0 (the items whose
    mean is ``topk_agreement``'s top1_agreement)."""
    reference = _stacked("reference_logits", reference_logits)
    candidate = _stacked("candidate_logits", candidate_logits)
    if reference.shape != candidate.shape:
        raise UserInputError(
            f"reference logits {reference.shape} and candidate logits {candidate.shape} differ in shape; "
            "pass the logits of the same positions from both models"
        )
    return (reference.argmax(axis=1) == candidate.argmax(axis=1)).astype(float)


def masked_lm_accuracy(logits: list[np.ndarray], labels: list[np.ndarray]) -> dict:
    """How often the original token is the model's first guess, and among its first five, in %."""
    return masked_lm_summary(*masked_lm_hits(logits, labels))


def masked_lm_summary(top1: np.ndarray, top5: np.ndarray) -> dict:
    """Top-1 and top-5 accuracy in % from ``masked_lm_hits``' per-position hits."""
    return {"positions": len(top1), "top1_accuracy": 100.0 * float(top1.mean()),
            "top5_accuracy": 100.0 * float(top5.mean())}


def masked_lm_hits(logits: list[np.ndarray], labels: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per masked position: is the original token the first guess, and is it among the first five (0 or 1)."""
    scores = _stacked("logits", logits)
    expected = np.concatenate([np.empty(0, dtype=np.int64), *(np.asarray(ids).reshape(-1) for ids in labels)])
    if len(expected) != len(scores):
        raise UserInputError(
            f"got logits for {len(scores)} positions and {len(expected)} labels; pass one label per scored position"
        )
    top = _top_k(scores, min(5, scores.shape[1]))
    return (scores.argmax(axis=1) == expected).astype(float), (top == expected[:, None]).any(axis=1).astype(float)


def paired_relative_bound(candidate: np.ndarray, reference: np.ndarray, confidence: float) -> dict:
    """How much of the reference's mean score the candidate keeps, from per-item scores of both on the same items.

    ``ratio`` is mean(candidate) / mean(reference). ``lower_bound`` is the one-sided ``confidence`` lower bound of
    that ratio from the paired differences: with d = candidate - reference per item, the candidate keeps at least
    (mean(candidate) - z * se(d)) / mean(reference) of the reference's score; ``upper_bound`` is the one-sided
    upper bound, with + z * se(d). Pairing is what makes a few hundred items informative: most items score the
    same on both models, so se(d) is far smaller than either score's own standard error. (se(d) is the normal
    approximation; the scores are bounded and the counts are hundreds.)
    """
    from statistics import NormalDist

    candidate, reference = np.asarray(candidate, dtype=float), np.asarray(reference, dtype=float)
    if candidate.shape != reference.shape or candidate.ndim != 1 or len(candidate) < 2:
        raise UserInputError("paired scores need two 1-D arrays of the same length, at least 2 items")
    if not 0.5 <= confidence < 1:
        raise UserInputError(f"confidence must be in [0.5, 1), got {confidence}")
    reference_mean = float(reference.mean())
    if reference_mean <= 0:
        raise UserInputError("the reference scores nothing on these items, so a ratio to it is undefined")
    differences = candidate - reference
    se = float(differences.std(ddof=1) / np.sqrt(len(differences)))
    z = NormalDist().inv_cdf(confidence)
    return {"items": len(candidate), "reference_mean": reference_mean, "candidate_mean": float(candidate.mean()),
            "ratio": float(candidate.mean()) / reference_mean,
            "lower_bound": (float(candidate.mean()) - z * se) / reference_mean,
            "upper_bound": (float(candidate.mean()) + z * se) / reference_mean,
            "differing_items": int((differences != 0).sum()), "se_difference": se, "confidence": confidence}


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
