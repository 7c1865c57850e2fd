"""The workloads of one checkpoint: the same items through every reference and every bundle, each runner in its
own worker process (its peak memory is its own), then every runner's answers scored against the pipeline's.
"""

from __future__ import annotations

from pathlib import Path

from distilrt.bench.workload_scores import PIPELINE, mlm_accuracy, qa_accuracy
from distilrt.bench.workloads import WorkloadSet, chunk_size, parse_workload, workload_set

QA_MAX_SEQ_LEN = 384  # the pipeline's default window (capped by the model and every bundle's shape profile)


class WorkloadRuns:
    """``bench`` is runner.py's per-checkpoint bench: its config, bundles, tokenizer, references and workers."""

    def __init__(self, bench):
        self.bench = bench
        parsed = dict.fromkeys(map(parse_workload, bench.config.workloads))  # "squad-dev" is "squad-dev:1000"
        self.workloads = [w for w in parsed if w.task == bench.task]
        self.max_seq_len = min(QA_MAX_SEQ_LEN, bench.settings.model_max_length,
                               *(b.manifest.shape_profile["max_sequence"] for b in bench.bundles))

    def run(self) -> list[dict]:
        if not self.workloads:
            return []
        bench = self.bench
        sets = [workload_set(w, bench.tokenizer, bench.settings.mask_token, bench.config.seed) for w in self.workloads]
        rows = []
        for reference in bench.config.workload_references:
            identity, checkpoint = bench.reference(reference)
            if isinstance(checkpoint, Path):
                extra = {"checkpoint": str(checkpoint), "scratch": str(bench.scratch / f"workload-{reference}")}
                rows += self._runner(identity, extra, sets)
            else:
                rows += self._skipped(identity, sets, checkpoint)
        for bundle in bench.bundles:
            rows += self._runner(bench.identity(bundle), {"bundle": str(bundle.path)}, sets)
        for made in sets:
            _score([r for r in rows if r["workload"] == made.workload.name and r["items"] == made.workload.items],
                   made)
        return rows

    def _runner(self, identity: dict, spec_extra: dict, sets: list[WorkloadSet]) -> list[dict]:
        bench = self.bench
        label = f"{bench.name}/{identity['variant'] or identity['runner']}"
        batch = bench.config.workload_batch
        workloads = [{"name": s.workload.name, "unit": s.workload.unit, "inputs": s.inputs, "batch": batch,
                      "max_seq_len": self.max_seq_len, "chunk": chunk_size(len(s.inputs), batch)} for s in sets]
        scratch = spec_extra.get("scratch")
        if scratch:
            Path(scratch).mkdir(parents=True, exist_ok=True)
        outcome = bench.run_worker({**bench.spec(), **spec_extra, "runner": identity["runner"], "label": label,
                                    "cells": [], "workloads": workloads})
        if outcome.get("skipped_reason"):
            bench.progress(f"{label}: skipped: {outcome['skipped_reason']}")
            return self._skipped(identity, sets, outcome["skipped_reason"], failed=bool(outcome.get("failed")))
        info = outcome.get("info") or {}
        rows = []
        for made, result in zip(sets, outcome["workloads"]):
            row = self._row({**identity, "backend": info.get("backend", identity["backend"])}, made,
                            peak_rss_mb=outcome.get("peak_rss_mb"), load_seconds=outcome.get("load_seconds"),
                            info=info, skipped_reason=result.get("skipped_reason"))
            if not result.get("skipped_reason"):
                row.update(seconds=result["seconds"], items_per_s=result["items_per_s"], outputs=result["outputs"])
            rows.append(row)
        return rows

    def _skipped(self, identity: dict, sets: list[WorkloadSet], reason: str, failed: bool = False) -> list[dict]:
        self.bench.progress(f"{self.bench.name}/{identity['variant'] or identity['runner']}: workloads skipped: "
                            f"{reason}")
        return [self._row(identity, made, skipped_reason=reason, failed=failed) for made in sets]

    def _row(self, identity: dict, made: WorkloadSet, **figures) -> dict:
        bench, workload = self.bench, made.workload
        row = {"checkpoint": bench.name, "checkpoint_id": bench.manifest.source.id, **identity,
               "workload": workload.name, "task": workload.task, "unit": workload.unit, "items": workload.items,
               "batch": bench.config.workload_batch,
               "max_seq_len": self.max_seq_len if workload.task == "question-answering" else None,
               "data": made.identity, "seconds": None, "items_per_s": None, "peak_rss_mb": None, "ratios": None,
               "accuracy": None, "skipped_reason": None, "failed": False}
        row.update(figures)
        return row


def _score(rows: list[dict], made: WorkloadSet) -> None:
    """Each measured row's accuracy against the pipeline's answers (when it ran) and the gold labels; the
    answers themselves are not kept (a thousand per runner)."""
    pipeline = next((r for r in rows if r["runner"] == PIPELINE and "outputs" in r), None)
    reference = pipeline["outputs"] if pipeline else None
    against = (pipeline.get("info") or {}).get("end_to_end") if pipeline else None
    score = qa_accuracy if made.workload.task == "question-answering" else mlm_accuracy
    for row in rows:
        if "outputs" in row:
            row["accuracy"] = {**score(row["outputs"], reference, made.gold), "pipeline": against}
    for row in rows:
        row.pop("outputs", None)
