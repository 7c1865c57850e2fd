"""`distilrt eval`: a bundle's task accuracy on a held-out set, and its agreement with a reference bundle."""

from __future__ import annotations

from pathlib import Path

import distilrt
from distilrt.backends import open_backend
from distilrt.calib.metrics import masked_lm_accuracy, squad_em_f1, topk_agreement
from distilrt.calib.sets import EvalConfig, mlm_evaluation_set, qa_evaluation_set
from distilrt.errors import UserInputError
from distilrt.export.gates import answer_questions, masked_logits


def evaluate_bundle(bundle: Path, config: EvalConfig, reference: Path | None = None) -> dict:
    """SQuAD EM/F1 against the gold answers (question answering) or masked-token accuracy (fill-mask); with a
    reference bundle, also the agreement with it (the gate figures)."""
    task = distilrt.read_bundle(bundle).task
    if reference is not None and distilrt.read_bundle(reference).task != task:
        raise UserInputError(f"{reference} is not a {task} bundle; compare bundles of the same task")
    result: dict = {"bundle": str(bundle), "task": task}
    if task == "question-answering":
        eval_set = qa_evaluation_set(config)
        answers = answer_questions(distilrt.load(bundle), eval_set)
        result["vs_gold"] = squad_em_f1(answers, [q.answers for q in eval_set.questions])
        if reference is not None:
            result["vs_reference"] = squad_em_f1(answers, [[a] for a in answer_questions(distilrt.load(reference), eval_set)])
    else:
        head = distilrt.load(bundle)
        model = open_backend("onnxruntime", Path(bundle) / "model.onnx")
        eval_set = mlm_evaluation_set(head, config, model.input_names)
        logits = masked_logits(model.run, eval_set)
        result["vs_labels"] = masked_lm_accuracy(logits, eval_set.labels)
        if reference is not None:
            reference_model = open_backend("onnxruntime", Path(reference) / "model.onnx")
            result["vs_reference"] = topk_agreement(masked_logits(reference_model.run, eval_set), logits, k=5)
    result["evaluation_set"] = eval_set.identity
    return result
