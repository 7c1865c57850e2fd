"""Batch invariance, verified like parity: a bundle answers the same alone and in mixed-length batches.

Length-aware batching in the runtime and Triton's dynamic batcher put unrelated requests in one batch, padded to
the longest; a published variant must not let that change an answer (docs/design.md#batch-invariance). Each
candidate runs its evaluation split twice:

- question answering, through the task head: every question alone (batch_size 1: each window on its own), and
  the same questions in chunks, their windows batched in arrival order so that rows of very different lengths
  share a batch. Same answer, start and end, score within ``score_atol``.
- fill-mask, on the model: each sentence alone, and the sentences in arrival-order batches padded on the right
  as the runtime pads them (the head's post-processing is per row). Same top-k tokens in the same order, their
  probabilities within ``score_atol``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

import distilrt
from distilrt.calib.sets import EvalConfig, MaskedEvalSet, QAEvalSet, mlm_evaluation_set, qa_evaluation_set
from distilrt.errors import BatchVarianceError
from distilrt.export.config import InvarianceConfig
from distilrt.export.precision import pad_to_common_length
from distilrt.tokenization import MASK_POSITIONS


@dataclass(frozen=True)
class InvarianceResult:
    """Alone vs batched on ``items`` items: how many differ and by how much at worst."""

    items: int
    batch_size: int
    differing: int  # items whose answer (QA) or top-k tokens (fill-mask) differ, or whose scores are not within
    worst_score_difference: float  # where the answers (QA) or a position's top-k tokens (fill-mask) agree
    score_atol: float
    first_difference: str | None = None  # the first differing item, described, for the error message

    @property
    def passed(self) -> bool:
        return self.differing == 0

    def describe(self) -> str:
        verdict = "same" if self.passed else f"{self.differing} of {self.items} differ"
        return (f"alone vs batched ({self.batch_size} per batch, mixed lengths): {verdict} on {self.items} items, "
                f"worst score difference {self.worst_score_difference:.2e} (tolerance {self.score_atol:g})")

    def to_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}


def require_invariant(variant: str, result: InvarianceResult, config: InvarianceConfig, gate: dict | None = None) -> None:
    """BatchVarianceError for a bundle that failed the check, unless ``config`` allows it (--allow-batch-variant);
    ``gate`` is the gate result it had passed, kept for the build summary."""
    if not result.passed and config.required:
        raise BatchVarianceError(
            f"{variant} answers differently in a batch: {result.describe()}; first: {result.first_difference}. "
            "Publish it anyway with --allow-batch-variant", result=gate, invariance=result.to_dict())


def manifest_record(config: InvarianceConfig, result: InvarianceResult) -> dict:
    """``stages.invariance``: the check's config and whether it passed (Manifest.batch_invariant reads it;
    rebuild.invariance_from_manifest reads the config back)."""
    return {**config.to_dict(), "passed": result.passed}


def check(bundle, model, split: QAEvalSet | MaskedEvalSet, config: InvarianceConfig) -> InvarianceResult:
    """``bundle`` running on ``model``, alone vs batched on ``split`` (question answering or fill-mask)."""
    if isinstance(split, QAEvalSet):
        return check_qa(bundle, model, split, config)
    return check_mlm(model.run, split, bundle.tokenizer_settings.pad_token_id, config)


def fp32_split(bundle, model, config: InvarianceConfig) -> QAEvalSet | MaskedEvalSet:
    """The fp32 bundle's check, made before any gate split exists: the first ``config.fp32_items`` questions, or
    the sentences holding that many masked positions, of the evaluation split."""
    if bundle.task == "question-answering":
        return qa_evaluation_set(EvalConfig(questions=config.fp32_items))
    return mlm_evaluation_set(distilrt.head_for(bundle, model), EvalConfig(masked_positions=config.fp32_items),
                              model.input_names)


def check_qa(bundle, model, split: QAEvalSet, config: InvarianceConfig) -> InvarianceResult:
    """Every question of ``split`` alone vs in batches, through ``bundle``'s head on ``model``."""
    questions = split.questions[:config.items] if config.items is not None else split.questions
    alone_head = distilrt.head_for(bundle, model, batch_size=1)
    batched_head = distilrt.head_for(bundle, model, batch_size=config.batch_size, sort_by_length=False)
    alone = [alone_head(question=q.question, context=q.context) for q in questions]
    batched = []
    chunk = 2 * config.batch_size  # several questions per call, so windows of different questions share batches
    for first in range(0, len(questions), chunk):
        part = questions[first:first + chunk]
        results = batched_head(question=[q.question for q in part], context=[q.context for q in part])
        batched += results if isinstance(results, list) else [results]
    differing, worst, first_difference = 0, 0.0, None
    for question, one, many in zip(questions, alone, batched):
        difference = abs(one["score"] - many["score"])
        worst = max(worst, difference)
        same = (one["answer"], one["start"], one["end"]) == (many["answer"], many["start"], many["end"])
        if not same or difference > config.score_atol:
            differing += 1
            first_difference = first_difference or (
                f"question {question.question!r}: alone {_answer(one)}, batched {_answer(many)}")
    return InvarianceResult(len(questions), config.batch_size, differing, worst, config.score_atol, first_difference)


def check_mlm(run, split: MaskedEvalSet, pad_token_id: int, config: InvarianceConfig, top_k: int = 5) -> InvarianceResult:
    """Every sentence of ``split`` alone vs in batches, on the model's ``run``: top-k tokens and probabilities."""
    count = len(split.feeds) if config.items is None else min(config.items, len(split.feeds))
    feeds, positions = split.feeds[:count], split.positions[:count]
    alone = [_masked_rows(run(feed), feed, rows, 0) for feed, rows in zip(feeds, positions)]
    batched = []
    for first in range(0, count, config.batch_size):
        part = list(range(first, min(first + config.batch_size, count)))
        outputs = run(_stack(pad_to_common_length([feeds[i] for i in part], pad_token_id)))
        batched += [_masked_rows(outputs, feeds[i], positions[i], row) for row, i in enumerate(part)]
    differing, worst, first_difference = 0, 0.0, None
    for index, (one, many) in enumerate(zip(alone, batched)):
        one_tokens, one_scores = _top_k(one, top_k)
        many_tokens, many_scores = _top_k(many, top_k)
        same_tokens = np.array_equal(one_tokens, many_tokens)
        agreeing = (one_tokens == many_tokens).all(axis=-1)  # masked positions whose top-k agrees
        difference = float(np.abs(one_scores - many_scores)[agreeing].max()) if agreeing.any() else 0.0
        worst = max(worst, difference)
        if not same_tokens or difference > config.score_atol:
            differing += 1
            first_difference = first_difference or _first_mask_difference(index, one_tokens, many_tokens,
                                                                          one_scores, many_scores)
    return InvarianceResult(count, config.batch_size, differing, worst, config.score_atol, first_difference)


def _first_mask_difference(index: int, one_tokens, many_tokens, one_scores, many_scores) -> str:
    """The first masked position of sentence ``index`` whose top-k differs, tokens and probabilities."""
    differs = [p for p in range(len(one_tokens)) if not np.array_equal(one_tokens[p], many_tokens[p])]
    position = differs[0] if differs else int(np.abs(one_scores - many_scores).max(axis=-1).argmax())
    return (f"sentence {index}, mask {position}: alone tokens {one_tokens[position].tolist()} "
            f"p {np.round(one_scores[position], 6).tolist()}, batched tokens {many_tokens[position].tolist()} "
            f"p {np.round(many_scores[position], 6).tolist()}")


def _answer(result: dict) -> str:
    return f"{result['answer']!r} [{result['start']}:{result['end']}] score {result['score']:.6g}"


def _masked_rows(outputs: dict, feed: dict, positions: np.ndarray, row: int) -> np.ndarray:
    """One sentence's logits at its masked positions, from a batch's outputs (row ``row``)."""
    logits = outputs["logits"][row]
    return logits[:len(positions)] if MASK_POSITIONS in feed else logits[positions]


def _stack(feeds: list[dict]) -> dict:
    return {name: np.concatenate([feed[name] for feed in feeds], axis=0) for name in feeds[0]}


def _top_k(logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The top-k token ids and softmax probabilities at each masked position, as the pipeline ranks them."""
    shifted = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    probabilities = np.exp(shifted) / np.exp(shifted).sum(axis=-1, keepdims=True)
    order = np.argsort(-probabilities, axis=-1, kind="stable")[:, :k]
    return order, np.take_along_axis(probabilities, order, axis=-1)

