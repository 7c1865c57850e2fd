"""`distilrt bench`: latency, throughput and peak memory of bundles, each next to the transformers pipeline on
PyTorch (and Optimum's ONNX Runtime models, when installed) measured in the same run.

Bundles are grouped by checkpoint. Per checkpoint the references run once and every bundle runs over every
(mode, batch, sequence) cell; each runner in its own process (bench/worker.py), so its peak memory is its own.
Every distilrt figure then gets its ratio to the reference's figure of the same cell: a ratio measured side by
side on one machine means something on any machine, a bare latency only on the machine that measured it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from distilrt.bench.gemm_floor import Timing, add_gemm_floors
from distilrt.bench.inputs import mlm_texts, qa_examples
from distilrt.bench.worker import PROGRESS_PREFIX
from distilrt.bench.workload_runs import WorkloadRuns
from distilrt.bench.workload_scores import OPTIMUM_INT8, add_workload_ratios
from distilrt.bench.workloads import parse_workload
from distilrt.bundle import Bundle, read_bundle
from distilrt.config import StageConfig, is_int
from distilrt.errors import CapabilityError, DistilrtError, UserInputError, one_line
from distilrt.files import sha256_file
from distilrt.host import resolve_threads
from distilrt.manifest import Manifest
from distilrt.progress import Progress, print_progress
from distilrt.provenance import host_record, package_version, tool_versions
from distilrt.tokenization import load_tokenizer

BENCH_SCHEMA = "distilrt-bench/1"
MODES = ("model", "end_to_end")
REFERENCES = ("pytorch", "optimum")
# Workloads also run Optimum's best CPU configuration (dynamic int8, with and without O2): the peer's best.
WORKLOAD_REFERENCES = (*REFERENCES, *OPTIMUM_INT8)
DEFAULT_WORKLOAD_BATCH = 8
MIN_SEQUENCE = 16  # room for a question, a context and the special tokens
MIN_TIMED_RUNS = 5  # a cell stopped early by max_seconds_per_cell still gets this many timed runs
MEMORY_NOTE = ("peak_rss_mb is the peak resident memory (VmHWM on Linux) of the process that ran the runner: "
               "the Python interpreter, its imports (torch and transformers for the references), loading the model "
               "and tokenizer, and every cell or workload it ran (Optimum's int8 runners: making that model too); "
               "so it is the same figure on each of the runner's rows")


@dataclass(frozen=True)
class BenchConfig(StageConfig):
    batches: tuple[int, ...] = (1, 8)
    sequences: tuple[int, ...] = (128, 384)
    warmup: int = 3
    repeats: int = 20
    max_seconds_per_cell: float = 20.0  # stop repeating a cell once its timed runs took this long
    threads: int | None = None  # None: physical cores (distilrt.host); ONNX Runtime intra-op and torch threads
    modes: tuple[str, ...] = MODES
    references: tuple[str, ...] = REFERENCES
    seed: int = 0  # the model-only token ids, the end-to-end texts and the workloads' items
    workloads: tuple[str, ...] = ()  # "squad-dev:1000", "wikitext:500" (bench/workloads.py)
    workload_batch: int = DEFAULT_WORKLOAD_BATCH
    workload_references: tuple[str, ...] = WORKLOAD_REFERENCES
    grid: bool = True  # False: the workloads alone, no (mode, batch, sequence) grid

    def __post_init__(self):
        for workload in self.workloads:
            parse_workload(workload)
        if not is_int(self.workload_batch) or self.workload_batch < 1:
            raise UserInputError(f"--workload-batch must be a positive integer, got {self.workload_batch!r}")
        if not isinstance(self.grid, bool) or not (self.grid or self.workloads):
            raise UserInputError("nothing to benchmark: --workload-only needs at least one --workload NAME[:N]")
        if any(r not in WORKLOAD_REFERENCES for r in self.workload_references):
            raise UserInputError(f"workload_references must be drawn from {', '.join(WORKLOAD_REFERENCES)}, "
                                 f"got {self.workload_references!r}")
        for name, values, minimum in (("batches", self.batches, 1), ("sequences", self.sequences, MIN_SEQUENCE)):
            if not values or not all(is_int(v) and v >= minimum for v in values):
                raise UserInputError(f"{name} must be one or more integers of at least {minimum}, got {values!r}")
        for name, value, minimum in (("warmup", self.warmup, 0), ("repeats", self.repeats, 1)):
            if not is_int(value) or value < minimum:
                raise UserInputError(f"{name} must be an integer of at least {minimum}, got {value!r}")
        if not isinstance(self.max_seconds_per_cell, (int, float)) or self.max_seconds_per_cell <= 0:
            raise UserInputError(f"max_seconds_per_cell must be a positive number, got {self.max_seconds_per_cell!r}")
        if self.threads is not None and (not is_int(self.threads) or self.threads < 1):
            raise UserInputError(f"threads must be a positive integer or None (physical cores), got {self.threads!r}")
        for name, values, known, allow_empty in (("modes", self.modes, MODES, False),
                                                 ("references", self.references, REFERENCES, True)):
            if (not values and not allow_empty) or any(v not in known for v in values):
                raise UserInputError(f"{name} must be drawn from {', '.join(known)}, got {values!r}")

    @property
    def resolved_threads(self) -> int:
        return resolve_threads(self.threads).count

    @property
    def threads_source(self) -> str:
        """"given", or how the default was found: "physical cores (N of M logical)" (distilrt.host)."""
        return resolve_threads(self.threads).source

    def cells(self) -> list[tuple[str, int, int]]:
        return [(mode, batch, sequence) for mode in dict.fromkeys(self.modes) for batch in dict.fromkeys(self.batches)
                for sequence in dict.fromkeys(self.sequences)]



def bench_bundles(bundles, config: BenchConfig = BenchConfig(), progress: Progress = print_progress) -> dict:
    """Benchmark the bundles (bundle directories, or a checkpoint's artifacts directory for all its bundles)."""
    opened = [read_bundle(path, check_hashes=False) for path in bundle_paths(bundles)]  # the workers check hashes
    groups: dict[str, list[Bundle]] = {}
    for bundle in opened:
        groups.setdefault(bundle.manifest.source.id, []).append(bundle)
    check_workloads_apply(config, {bundle.task for bundle in opened})
    # Before anything runs: the report prints this load average as the one "at the start".
    started, machine = datetime.now(timezone.utc).isoformat(timespec="seconds"), host_record()
    results, workloads = [], []
    with tempfile.TemporaryDirectory(prefix="distilrt-bench-") as scratch:
        for index, group in enumerate(groups.values()):
            bench = _CheckpointBench(group, config, Path(scratch) / str(index), progress)
            results += bench.run() if config.grid else []
            workloads += WorkloadRuns(bench).run()
    add_ratios(results)
    # int8 bundles' model-only cells next to the least time their int8 products alone take (bench/gemm_floor.py)
    add_gemm_floors(results, opened, Timing(config.resolved_threads, config.warmup, config.repeats,
                                            config.max_seconds_per_cell, min(MIN_TIMED_RUNS, config.repeats)),
                    config.seed, progress)
    add_workload_ratios(workloads)
    return {
        "schema": BENCH_SCHEMA,
        "created": started,
        "machine": machine,
        "settings": {**config.to_dict(), "threads": config.resolved_threads, "min_timed_runs": min(MIN_TIMED_RUNS, config.repeats),
                     "threads_source": config.threads_source, "thread_env": thread_env(config.resolved_threads),
                     "tokenizers_parallelism": os.environ.get("TOKENIZERS_PARALLELISM")},
        "tools": {**tool_versions(), "optimum": package_version("optimum")},
        "memory_note": MEMORY_NOTE,
        "bundles": [bundle_record(bundle) for bundle in opened],
        "results": results,
        "workloads": workloads,
    }


def check_workloads_apply(config: BenchConfig, tasks: set[str]) -> None:
    """A workload of a task no bundle has would measure nothing: say so before anything runs."""
    for text in config.workloads:
        workload = parse_workload(text)
        if workload.task not in tasks:
            raise UserInputError(f"--workload {text} is a {workload.task} workload, and none of the bundles is "
                                 f"{workload.task} (they are {', '.join(sorted(tasks))}); pass such a bundle "
                                 "or leave the workload out")


def bundle_paths(paths) -> list[Path]:
    """Each path is a bundle, or a directory of bundles (artifacts/<checkpoint>): fp32 first, then by name."""
    found = []
    for path in map(Path, paths):
        if (path / "manifest.json").is_file():
            found.append(path)
            continue
        inside = sorted((p for p in path.iterdir() if (p / "manifest.json").is_file()),
                        key=lambda p: (p.name != "fp32", p.name)) if path.is_dir() else []
        if not inside:
            raise UserInputError(f"{path} is neither a bundle nor a directory of bundles; pass bundle directories "
                                 "such as artifacts/<checkpoint>/fp32, or artifacts/<checkpoint>")
        found += inside
    if not found:
        raise UserInputError("no bundles to benchmark; pass one or more bundle directories")
    return found


def checkpoint_name(manifest: Manifest) -> str:
    """The name the reports key a checkpoint by: the same on every machine, wherever the checkpoint was."""
    return Manifest(manifest).source.name


def variant_label(bundle: Bundle) -> str:
    """The variant as the reports name it: int8-dynamic with ONNX Runtime's per-tensor activation scales (a
    non-default, batch-dependent form) is told apart from the per-token default, so both can run side by side."""
    precision = bundle.manifest.stage("precision") or {}
    if bundle.variant == "int8-dynamic" and precision.get("activation_scales", "tensor") == "tensor":
        return "int8-dynamic (per-tensor)"
    return bundle.variant


def bundle_record(bundle: Bundle) -> dict:
    """What the report needs of a bundle, so that it can be made without the bundle: its accuracy figures."""
    manifest = bundle.manifest
    return {"checkpoint": checkpoint_name(manifest), "checkpoint_id": manifest.source.id,
            "variant": variant_label(bundle), "bundle": str(bundle.path), "task": bundle.task,
            "architecture": manifest.architecture, "backend": manifest.model_file.backend,
            "random_weights": manifest.source.random_weights,
            "model_mb": bundle.model_path.stat().st_size / 2**20 if bundle.model_path.is_file() else None,
            # int8: linear layers the accuracy search left in float (the spec's own float layers not counted)
            "searched_float_layers": len((manifest.stage("precision") or {}).get("float_nodes", ())),
            "verification": manifest.verification}


class _CheckpointBench:
    """The references and every bundle of one checkpoint, over every cell."""

    def __init__(self, bundles: list[Bundle], config: BenchConfig, scratch: Path, progress: Progress):
        self.bundles, self.config, self.scratch, self.progress = bundles, config, scratch, progress
        first = bundles[0]
        self.manifest, self.task = first.manifest, first.task
        self.name = checkpoint_name(first.manifest)
        self.tokenizer = load_tokenizer(first.tokenizer_path)
        self.settings = first.tokenizer_settings
        self._inputs: dict[tuple[int, int], list] = {}
        self._checkpoint: Path | str | None = None  # the reference checkpoint, or why there is none
        self._workers = 0
        scratch.mkdir(parents=True)

    def run(self) -> list[dict]:
        rows = []
        for reference in self.config.references:
            rows += self._reference(reference)
        for bundle in self.bundles:
            identity = self.identity(bundle)
            limit = min(self.settings.model_max_length, bundle.manifest.shape_profile["max_sequence"])
            rows += self._runner(identity, {"bundle": str(bundle.path)}, limit, "the bundle's shape profile")
        return rows

    @staticmethod
    def identity(bundle: Bundle) -> dict:
        """A bundle's runner identity in the rows."""
        return {"runner": "distilrt", "variant": variant_label(bundle), "bundle": str(bundle.path),
                "backend": bundle.manifest.model_file.backend}

    def _reference(self, reference: str) -> list[dict]:
        identity, checkpoint = self.reference(reference)
        if not isinstance(checkpoint, Path):
            return self._skipped(identity, checkpoint)
        return self._runner(identity, {"checkpoint": str(checkpoint)}, self.settings.model_max_length,
                            "the model's position embeddings")

    def reference(self, reference: str) -> tuple[dict, Path | str]:
        """A reference runner's identity, and the checkpoint it loads or why it cannot run."""
        identity = {"runner": reference, "variant": None, "bundle": None,
                    "backend": "torch" if reference == "pytorch" else "onnxruntime (optimum)"}
        if reference != "pytorch" and not optimum_installed():
            return identity, "not installed (pip install optimum-onnx[onnxruntime], or distilrt[optimum])"
        checkpoint = self.reference_checkpoint()
        if isinstance(checkpoint, Path):
            identity["checkpoint_dir"] = str(checkpoint)
            identity["checkpoint_matches_bundle"] = sha256_file(checkpoint / "config.json") == \
                self.manifest.source.config_sha256
        return identity, checkpoint

    def run_worker(self, spec: dict) -> dict:
        """The worker's outcome for ``spec``, its files numbered in this checkpoint's scratch directory."""
        self._workers += 1
        return run_worker(spec, self.scratch / f"{self._workers}-spec.json", self.progress)

    def reference_checkpoint(self) -> Path | str:
        """The checkpoint directory the references load, or why there is none; made once per checkpoint."""
        if self._checkpoint is None:
            try:
                self._checkpoint = reference_checkpoint(self.manifest, self.scratch / "checkpoint", self.progress)
            except DistilrtError as e:
                self._checkpoint = one_line(e)
        return self._checkpoint

    def _runner(self, identity: dict, spec_extra: dict, limit: int, limited_by: str) -> list[dict]:
        label = f"{self.name}/{identity['variant'] or identity['runner']}"
        runnable, rows = [], []
        for mode, batch, sequence in self.config.cells():
            if sequence > limit:
                rows.append(self._row(identity, mode, batch, sequence, skipped_reason=f"sequence {sequence} is "
                                      f"longer than {limit}, the most {limited_by} allows"))
            else:
                runnable.append({"mode": mode, "batch": batch, "sequence": sequence,
                                 "inputs": self._end_to_end_inputs(batch, sequence) if mode == "end_to_end" else None})
        if not runnable:
            return rows
        spec = {**self.spec(), **spec_extra, "runner": identity["runner"], "label": label, "cells": runnable}
        outcome = self.run_worker(spec)
        if outcome.get("skipped_reason") or not outcome["cells"]:
            reason = outcome.get("skipped_reason") or "the runner measured nothing"
            self.progress(f"{label}: skipped: {reason}")
            rows += [self._row(identity, c["mode"], c["batch"], c["sequence"], skipped_reason=reason,
                               failed=bool(outcome.get("failed"))) for c in runnable]
            return rows
        backend = outcome.get("info", {}).get("backend", identity["backend"])
        for cell in outcome["cells"]:
            figures = {k: v for k, v in cell.items() if k not in ("mode", "batch", "sequence")}
            rows.append(self._row({**identity, "backend": backend}, cell["mode"], cell["batch"], cell["sequence"],
                                  peak_rss_mb=outcome.get("peak_rss_mb"), load_seconds=outcome.get("load_seconds"),
                                  **figures))
        return rows

    def spec(self) -> dict:
        first = self.bundles[0]
        return {"task": first.task, "input_names": list(first.input_names),
                "vocab_size": self.manifest.vocab_size, "threads": self.config.resolved_threads,
                "warmup": self.config.warmup, "repeats": self.config.repeats,
                "max_seconds": self.config.max_seconds_per_cell, "min_runs": min(MIN_TIMED_RUNS, self.config.repeats),
                "seed": self.config.seed}

    def _end_to_end_inputs(self, batch: int, sequence: int) -> list:
        """The same texts for every runner of the checkpoint."""
        if (batch, sequence) not in self._inputs:
            if self.bundles[0].task == "question-answering":
                made = qa_examples(self.tokenizer, batch, sequence, self.config.seed)
            else:
                made = mlm_texts(self.tokenizer, self.settings.mask_token, batch, sequence, self.config.seed)
            self._inputs[(batch, sequence)] = made
        return self._inputs[(batch, sequence)]

    def _skipped(self, identity: dict, reason: str) -> list[dict]:
        self.progress(f"{self.name}/{identity['runner']}: skipped: {reason}")
        return [self._row(identity, mode, batch, sequence, skipped_reason=reason)
                for mode, batch, sequence in self.config.cells()]

    def _row(self, identity: dict, mode: str, batch: int, sequence: int, **figures) -> dict:
        row = {"checkpoint": self.name, "checkpoint_id": self.manifest.source.id, **identity,
               "mode": mode, "batch": batch, "sequence": sequence, "repeats": 0, "latency_ms": None,
               "throughput_seq_per_s": None, "peak_rss_mb": None, "ratios": None, "skipped_reason": None,
               "failed": False}
        row.update(figures)
        return row


def optimum_installed() -> bool:
    """Optimum's ONNX Runtime classes: optimum.onnxruntime, which optimum 2 ships in the optimum-onnx package."""
    try:
        return importlib.util.find_spec("optimum.onnxruntime") is not None
    except ModuleNotFoundError:  # no optimum at all
        return False


def reference_checkpoint(manifest: Manifest, scratch: Path, progress: Progress = print_progress) -> Path:
    """The checkpoint the references load: the source directory if it is here; a RANDOM-weight stand-in made
    again from its recipe; else the hub id (CheckpointError when offline or unknown)."""
    manifest = Manifest(manifest)
    source = manifest.source
    if Path(source.id).is_dir():
        return Path(source.id)
    recipe = source.stand_in
    try:
        if recipe:
            from distilrt.export.random_checkpoint import make_random_checkpoint

            progress(f"making the RANDOM-weight stand-in of {recipe['checkpoint']} again from its recipe")
            return make_random_checkpoint(recipe["checkpoint"], scratch, tiny=recipe["tiny"], seed=recipe["seed"],
                                          head_scale=recipe["head_scale"])
        from distilrt.export.checkpoint import resolve_checkpoint

        return resolve_checkpoint(source.id, task=manifest.task, revision=source.revision).directory
    except ImportError as e:
        raise CapabilityError(f"the PyTorch reference needs torch and transformers ({e}): "
                              "pip install distilrt[export]") from e


def run_worker(spec: dict, spec_path: Path, progress: Progress) -> dict:
    """Run one runner in its own process; forward its progress lines; its result, or why it failed."""
    out_path = spec_path.with_name(spec_path.name.replace("-spec", "-out"))
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    command = [sys.executable, "-m", "distilrt.bench.worker", str(spec_path), str(out_path)]
    tail: deque[str] = deque(maxlen=20)  # the end of stderr, to say why a worker failed
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, **thread_env(spec["threads"])})
    try:
        for line in process.stderr:
            if line.startswith(PROGRESS_PREFIX):
                progress(line[len(PROGRESS_PREFIX):].rstrip())
            elif line.strip():
                tail.append(line.rstrip())
        code = process.wait()
    finally:
        if process.poll() is None:  # interrupted: leave no worker behind
            process.kill()
            process.wait()
    if code != 0 or not out_path.is_file():
        last = tail[-1] if tail else "no output"
        return {"failed": True, "skipped_reason": f"the benchmark worker failed (exit {code}): {last}", "cells": []}
    return json.loads(out_path.read_text(encoding="utf-8"))


def thread_env(threads: int) -> dict[str, str]:
    """Thread pools every runner's libraries size from the environment: OpenMP/BLAS (torch, numpy) and rayon
    (tokenizers' batch encoding, used by the runtime and the pipelines alike)."""
    return {name: str(threads) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                            "RAYON_RS_NUM_CPUS")}


def add_ratios(results: list[dict]) -> None:
    """speedup_vs_<reference> = reference p50 / runner p50, for the same checkpoint and cell in this run."""
    def key(row, runner):
        return row["checkpoint_id"], runner, row["mode"], row["batch"], row["sequence"]

    reference_p50 = {key(r, r["runner"]): r["latency_ms"]["p50"] for r in results
                     if r["runner"] in REFERENCES and r["latency_ms"]}
    for row in results:
        if row["latency_ms"]:
            row["ratios"] = {f"speedup_vs_{reference}": _ratio(reference_p50.get(key(row, reference)),
                                                               row["latency_ms"]["p50"])
                             for reference in REFERENCES if reference != row["runner"]}


def _ratio(reference: float | None, value: float) -> float | None:
    return None if reference is None or value <= 0 else reference / value
