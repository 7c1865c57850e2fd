"""`distilrt eval`: a bundle's task accuracy on a held-out set, and its agreement with a reference bundle.

Each bundle runs on the backend its manifest names, as `distilrt.load` runs it: an engine bundle is scored on
its engine, never on the ONNX it keeps as a fallback."""

from __future__ import annotations

from pathlib import Path

import distilrt
from distilrt.backends import open_bundle_model
from distilrt.calib.metrics import masked_lm_accuracy, squad_em_f1, topk_agreement
from distilrt.calib.sets import EvalConfig, mlm_evaluation_set, qa_evaluation_set
from distilrt.errors import UserInputError
from distilrt.export.gates import answer_questions, masked_logits


def _open(path: Path):
    """The bundle's head and model, on the backend its manifest names."""
    bundle = distilrt.read_bundle(path)
    model = open_bundle_model(bundle, bundle.manifest.model_file.backend)
    return bundle, distilrt.head_for(bundle, model), model


def evaluate_bundle(bundle: Path, config: EvalConfig, reference: Path | None = None) -> dict:
    """SQuAD EM/F1 against the gold answers (question answering) or masked-token accuracy (fill-mask); with a
    reference bundle, also the agreement with it (the gate figures)."""
    opened, head, model = _open(bundle)
    task = opened.task
    if reference is not None and distilrt.read_bundle(reference).task != task:
        raise UserInputError(f"{reference} is not a {task} bundle; compare bundles of the same task")
    result: dict = {"bundle": str(bundle), "task": task, "backend": model.name}
    if task == "question-answering":
        eval_set = qa_evaluation_set(config)
        answers = answer_questions(head, eval_set)
        result["vs_gold"] = squad_em_f1(answers, [q.answers for q in eval_set.questions])
        if reference is not None:
            reference_answers = answer_questions(_open(reference)[1], eval_set)
            result["vs_reference"] = squad_em_f1(answers, [[a] for a in reference_answers])
    else:
        eval_set = mlm_evaluation_set(head, config, model.input_names)
        logits = masked_logits(model.run, eval_set)
        result["vs_labels"] = masked_lm_accuracy(logits, eval_set.labels)
        if reference is not None:
            reference_model = _open(reference)[2]
            result["vs_reference"] = topk_agreement(masked_logits(reference_model.run, eval_set), logits, k=5)
    result["evaluation_set"] = eval_set.identity
    return result
