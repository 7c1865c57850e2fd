"""Accuracy and speed ratios of workload rows: every runner's answers scored against the pipeline's answers on
the same inputs, and against the data set's gold labels; items/s against the pipeline and Optimum's best int8.
"""

from __future__ import annotations

from distilrt.calib.metrics import squad_scores, squad_summary

PIPELINE = "pytorch"
OPTIMUM_INT8 = ("optimum-int8", "optimum-o2-int8")  # Optimum's best CPU configuration is the faster of these


def qa_accuracy(answers: list[dict], pipeline: list[dict] | None, gold: list[list[str]]) -> dict:
    """SQuAD exact match and F1 (%) of the answer texts against the pipeline's answers and the gold answers."""
    texts = [a["answer"] for a in answers]
    return {"vs_pipeline": squad_summary(*squad_scores(texts, [[p["answer"]] for p in pipeline])) if pipeline else None,
            "vs_gold": squad_summary(*squad_scores(texts, gold))}


def mlm_accuracy(predictions: list[dict], pipeline: list[dict] | None, gold: list[dict]) -> dict:
    """Top-1 agreement (%) with the pipeline's top-1 token, and top-1/top-5 accuracy on the masked token."""
    def percent(hits) -> float:
        return 100.0 * sum(hits) / len(predictions)

    return {"vs_pipeline": {"top1_agreement": percent(p["tokens"][0] == q["tokens"][0]
                                                      for p, q in zip(predictions, pipeline)),
                            "count": len(predictions)} if pipeline else None,
            "vs_gold": {"top1_accuracy": percent(p["tokens"][0] == g["id"] for p, g in zip(predictions, gold)),
                        "top5_accuracy": percent(g["id"] in p["tokens"][:5] for p, g in zip(predictions, gold)),
                        "count": len(predictions)}}


def add_workload_ratios(rows: list[dict]) -> None:
    """Per checkpoint and workload (name, items, batch) of one run: items/s over the pipeline's and over the best
    Optimum int8 runner's (above 1: faster). A runner gets no ratio to itself."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["checkpoint_id"], row["workload"], row["items"], row["batch"]), []).append(row)
    for group in groups.values():
        measured = {r["runner"]: r for r in group if r["runner"] != "distilrt" and r["items_per_s"]}
        best = max((measured[name] for name in OPTIMUM_INT8 if name in measured), key=lambda r: r["items_per_s"],
                   default=None)
        for row in group:
            row["optimum_int8_reference"] = best["runner"] if best else None
            if not row["items_per_s"]:
                continue
            row["ratios"] = {"vs_pipeline": _ratio(row, measured.get(PIPELINE)), "vs_optimum_int8": _ratio(row, best)}


def _ratio(row: dict, reference: dict | None) -> float | None:
    if reference is None or reference is row:
        return None
    return row["items_per_s"] / reference["items_per_s"]
