"""Task-level gates: a derived variant against the fp32 variant on the held-out evaluation split.

Two rules (``Gate`` says when each applies; docs/design.md#accuracy-gates says why): accuracy on the labels
relative to fp32, decided on a paired lower bound, where fp32 has skill on the labels; agreement with fp32's
outputs where it has none (RANDOM-weight stand-ins). Every result carries the figures of both."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from statistics import NormalDist

import numpy as np

from distilrt.calib.metrics import (
    masked_lm_hits,
    masked_lm_summary,
    paired_relative_bound,
    squad_scores,
    squad_summary,
    top1_matches,
    topk_agreement,
)
from distilrt.calib.sets import MaskedEvalSet, QAEvalSet
from distilrt.export.config import Gate
from distilrt.tokenization import MASK_POSITIONS

_QA_CHUNK = 32  # questions per runtime call: lets the head batch windows


LABELS_RULE = "labels"  # accuracy on the labels relative to fp32 (MLPerf Inference's acceptance rule)
AGREEMENT_RULE = "agreement"  # agreement with fp32's outputs


@dataclass
class GateResult:
    metric: str
    threshold: float
    value: float
    figures: dict  # everything measured, for the report
    rule: str = AGREEMENT_RULE  # which rule decided, and why: rule_reason
    rule_reason: str = ""
    bound: float | None = None  # labels rule: the paired one-sided lower bound of value
    upper_bound: float | None = None  # labels rule: the paired one-sided upper bound of value
    # How much value moves with the items drawn: the standard deviation of the per-item score behind it, in
    # value's units (agreement: each item's agreement; labels: each item's paired difference over fp32's mean),
    # and the number of items. None where unknown. The int8 search predicts the gate from them.
    item_sd: float | None = None
    items: int | None = None

    @property
    def inconclusive(self) -> bool:
        """The labels rule's interval straddles the threshold: these items cannot tell pass from fail."""
        return self.bound is not None and self.bound < self.threshold <= self.upper_bound

    def _decision(self) -> tuple[str, float]:
        """What settles the gate and its figure: a bound that clears or misses the threshold outright, else the
        value (agreement rule, or an interval that straddles the threshold)."""
        if self.bound is None:
            return "value", self.value
        if self.bound >= self.threshold:
            return "lower bound", self.bound
        if self.upper_bound < self.threshold:
            return "upper bound", self.upper_bound
        return "value (its interval straddles the threshold)", self.value

    @property
    def decided_by(self) -> str:
        return self._decision()[0]

    @property
    def decided_on(self) -> float:
        return self._decision()[1]

    @property
    def passed(self) -> bool:
        return self.decided_on >= self.threshold

    @property
    def margin(self) -> float:
        """How far above (positive) or below (negative) the threshold the deciding figure landed."""
        return self.decided_on - self.threshold

    def describe(self) -> str:
        """One line: the rule, the figure, its interval, the threshold and what decided."""
        if self.bound is None:
            return f"{self.metric} {self.value:.2f} {'>=' if self.passed else '<'} {self.threshold:.2f} [{self.rule} rule]"
        return (f"{self.metric} {self.value:.2f} (interval {self.bound:.2f}-{self.upper_bound:.2f}) "
                f"{'passes' if self.passed else 'fails'} {self.threshold:.2f} by its {self.decided_by} "
                f"[{self.rule} rule]")

    def predicted_value(self, other_items: int, confidence: float) -> float | None:
        """The one-sided ``confidence`` lower prediction bound of this figure measured afresh on ``other_items``
        new items of the same kind: value - z * sd * sqrt(1/items + 1/other_items), the difference of two
        independent means. None without the per-item spread."""
        if self.item_sd is None or not self.items or other_items < 1:
            return None
        z = NormalDist().inv_cdf(confidence)
        return self.value - z * self.item_sd * math.sqrt(1.0 / self.items + 1.0 / other_items)

    def predicts_pass(self, other_items: int, confidence: float) -> bool:
        """Whether a split of ``other_items`` (the published gate's) is expected to pass too: this split passes and
        the prediction bound of its value clears the threshold. Without the spread, whether this split passes."""
        predicted = self.predicted_value(other_items, confidence)
        return self.passed and (predicted is None or predicted >= self.threshold)

    def to_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed, "margin": self.margin, "decided_by": self.decided_by}


def _decide(gate: Gate, fp32_scores: np.ndarray, variant_scores: np.ndarray, labels_metric: str,
            agreement_metric: str, agreement_items: np.ndarray, agreement_threshold: float,
            figures: dict) -> GateResult:
    """The labels rule where fp32 has skill on the labels, else the agreement rule; figures of both.
    ``agreement_items``: each item's agreement with fp32 (0-1), whose mean in % is the agreement figure."""
    agreement = 100.0 * float(np.mean(agreement_items))
    fp32_accuracy = 100.0 * float(fp32_scores.mean())
    paired = None
    if fp32_accuracy > 0 and len(fp32_scores) > 1:
        paired = paired_relative_bound(variant_scores, fp32_scores, gate.confidence)
    figures["paired_vs_fp32_on_labels"] = paired
    if fp32_accuracy >= gate.min_fp32_accuracy:
        why = (f"fp32 scores {fp32_accuracy:.1f} on the labels (>= {gate.min_fp32_accuracy:g}): the variant must keep "
               f"{100 * gate.relative_accuracy:g}% of it ({100 * gate.confidence:g}% paired bounds on "
               f"{len(fp32_scores)} items)")
        spread = float(np.std(variant_scores - fp32_scores, ddof=1)) / paired["reference_mean"]
        return GateResult(labels_metric, 100.0 * gate.relative_accuracy, 100.0 * paired["ratio"], figures,
                          LABELS_RULE, why, 100.0 * paired["lower_bound"], 100.0 * paired["upper_bound"],
                          100.0 * spread, len(fp32_scores))
    why = (f"fp32 scores {fp32_accuracy:.1f} on the labels (< {gate.min_fp32_accuracy:g}: no skill to keep), so "
           f"agreement with fp32 decides")
    spread = float(np.std(agreement_items, ddof=1)) if len(agreement_items) > 1 else None
    return GateResult(agreement_metric, agreement_threshold, agreement, figures, AGREEMENT_RULE, why,
                      item_sd=None if spread is None else 100.0 * spread, items=len(agreement_items))


def answer_questions(head, eval_set: QAEvalSet, progress: Callable[[str], None] | None = None) -> list[str]:
    answers: list[str] = []
    questions = eval_set.questions
    for first in range(0, len(questions), _QA_CHUNK):
        chunk = questions[first:first + _QA_CHUNK]
        results = head(question=[q.question for q in chunk], context=[q.context for q in chunk])
        results = results if isinstance(results, list) else [results]
        answers.extend(r["answer"] for r in results)
        if progress is not None and (len(answers) // _QA_CHUNK) % 4 == 0:
            progress(f"  answered {len(answers)}/{len(questions)} questions")
    return answers


def qa_gate(fp32_answers: list[str], variant_answers: list[str], eval_set: QAEvalSet, gate: Gate) -> GateResult:
    gold = [q.answers for q in eval_set.questions]
    agreement_exact, agreement_f1 = squad_scores(variant_answers, [[a] for a in fp32_answers])
    vs_fp32 = squad_summary(agreement_exact, agreement_f1)
    fp32_scores, variant_scores = squad_scores(fp32_answers, gold), squad_scores(variant_answers, gold)
    figures = {
        "questions": len(eval_set.questions),
        "vs_fp32": vs_fp32,
        "vs_gold": squad_summary(*variant_scores),
        "fp32_vs_gold": squad_summary(*fp32_scores),
        "evaluation_set": eval_set.identity,
    }
    return _decide(gate, fp32_scores[1], variant_scores[1], "qa_gold_f1_vs_fp32_pct", "qa_f1_vs_fp32", agreement_f1,
                   gate.qa_f1_vs_fp32, figures)


RunFn = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


def masked_logits(run: RunFn, eval_set: MaskedEvalSet) -> list[np.ndarray]:
    """The model's logits at each feed's masked positions: all a masked-positions graph gives (its feeds carry the
    positions), or those rows of a graph that gives every token's logits."""
    return [run(feed)["logits"][0] if MASK_POSITIONS in feed else run(feed)["logits"][0, positions]
            for feed, positions in zip(eval_set.feeds, eval_set.positions)]


def mlm_gate(fp32_logits: list[np.ndarray], variant_logits: list[np.ndarray], eval_set: MaskedEvalSet,
             gate: Gate) -> GateResult:
    agreement = topk_agreement(fp32_logits, variant_logits, k=5)
    fp32_hits, variant_hits = masked_lm_hits(fp32_logits, eval_set.labels), masked_lm_hits(variant_logits, eval_set.labels)
    figures = {
        "vs_fp32": agreement,
        "vs_labels": masked_lm_summary(*variant_hits),
        "fp32_vs_labels": masked_lm_summary(*fp32_hits),
        "evaluation_set": eval_set.identity,
    }
    return _decide(gate, fp32_hits[0], variant_hits[0], "mlm_top1_accuracy_vs_fp32_pct", "mlm_top1_vs_fp32",
                   top1_matches(fp32_logits, variant_logits), gate.mlm_top1_vs_fp32, figures)
