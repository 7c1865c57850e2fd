"""Task-level gates: a reduced-precision variant against the fp32 variant on the held-out evaluation split."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from distilrt.calib.metrics import masked_lm_accuracy, squad_em_f1, topk_agreement
from distilrt.calib.sets import MaskedEvalSet, QAEvalSet
from distilrt.export.config import Gate

_QA_CHUNK = 32  # questions per runtime call: lets the head batch windows


@dataclass
class GateResult:
    metric: str
    threshold: float
    value: float
    figures: dict  # everything measured, for the report

    @property
    def passed(self) -> bool:
        return self.value >= self.threshold

    @property
    def margin(self) -> float:
        """How far above (positive) or below (negative) the threshold the variant landed."""
        return self.value - self.threshold

    def to_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed, "margin": self.margin}


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
    vs_fp32 = squad_em_f1(variant_answers, [[a] for a in fp32_answers])
    figures = {
        "questions": len(eval_set.questions),
        "vs_fp32": vs_fp32,
        "vs_gold": squad_em_f1(variant_answers, gold),
        "fp32_vs_gold": squad_em_f1(fp32_answers, gold),
        "evaluation_set": eval_set.identity,
    }
    return GateResult("qa_f1_vs_fp32", gate.qa_f1_vs_fp32, vs_fp32["f1"], figures)


RunFn = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


def masked_logits(run: RunFn, eval_set: MaskedEvalSet) -> list[np.ndarray]:
    """The model's logits at each feed's masked positions."""
    return [run(feed)["logits"][0, positions] for feed, positions in zip(eval_set.feeds, eval_set.positions)]


def mlm_gate(fp32_logits: list[np.ndarray], variant_logits: list[np.ndarray], eval_set: MaskedEvalSet,
             gate: Gate) -> GateResult:
    agreement = topk_agreement(fp32_logits, variant_logits, k=5)
    figures = {
        "vs_fp32": agreement,
        "vs_labels": masked_lm_accuracy(variant_logits, eval_set.labels),
        "fp32_vs_labels": masked_lm_accuracy(fp32_logits, eval_set.labels),
        "evaluation_set": eval_set.identity,
    }
    return GateResult("mlm_top1_vs_fp32", gate.mlm_top1_vs_fp32, agreement["top1_agreement"], figures)
