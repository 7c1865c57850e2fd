"""One benchmark runner in its own process, so that its peak memory is its own:

    python -m distilrt.bench.worker SPEC.json OUT.json

A runner is one bundle on the distilrt runtime, the transformers pipeline on PyTorch, or Optimum's ONNX Runtime
model classes. It times every cell of the spec (mode, batch, sequence) after warm-up, runs the spec's workloads
(every item through the runner's list call, keeping each answer), and writes the figures and answers, or why it
could not run, to OUT.json. Progress goes to stderr, a line per cell or chunk, for the parent to forward.
torch and transformers are imported only by the reference runners: a distilrt runner's memory is the lean
runtime's.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from distilrt.calib.synthetic import full_feed
from distilrt.errors import DistilrtError, one_line
from distilrt.tokenization import MASK_POSITIONS

PROGRESS_PREFIX = "distilrt-bench-progress: "


def progress(message: str) -> None:
    print(f"{PROGRESS_PREFIX}{message}", file=sys.stderr, flush=True)


class DistilrtRunner:
    """A bundle on the backend its manifest names, as `distilrt.load` opens it (hashes checked)."""

    expected_errors = (DistilrtError,)

    def __init__(self, spec: dict):
        import distilrt
        from distilrt.backends import open_bundle_model, run_settings

        self._bundle = distilrt.read_bundle(spec["bundle"])
        self.backend = self._bundle.manifest.model_file.backend
        # Only ONNX Runtime takes a thread count; TensorRT runs on the GPU.
        options = {"intra_op_num_threads": spec["threads"]} if self.backend.startswith("onnxruntime") else {}
        self._model = open_bundle_model(self._bundle, self.backend, **options)
        self.info = {"backend": self.backend, "thread_option": options or None,
                     "run": run_settings(self._model)}  # what the session really runs with

    def model_call(self, feed):
        return lambda: self._model.run(feed)

    def answerer(self, task: str, batch: int, max_seq_len: int):
        """A function of a list of inputs that returns the head's answers, as a user calls it."""
        import distilrt

        head = distilrt.head_for(self._bundle, self._model, batch_size=batch)
        if task == "question-answering":
            return lambda inputs: head(question=[i["question"] for i in inputs],
                                       context=[i["context"] for i in inputs], max_seq_len=max_seq_len)
        return head

    def end_to_end_call(self, task: str, batch: int, sequence: int, inputs):
        return _call_with(self.answerer(task, batch, sequence), inputs)


class PipelineRunner:
    """The transformers pipeline on PyTorch: the checkpoint's model as `pipeline(task, model=checkpoint)` loads it.

    Where the installed transformers has no pipeline for the task (question answering on 5.3 and newer), the
    model-only cells time the same PyTorch model, and the end-to-end cells run distilrt's task head on its logits:
    what such a user has left on PyTorch. ``info["end_to_end"]`` says which.
    """

    expected_errors = (Exception,)  # transformers raises untyped errors; the reference is recorded as failed

    def __init__(self, spec: dict):
        import torch
        import transformers

        from distilrt.export.transformers_support import has_pipeline

        torch.set_num_threads(spec["threads"])
        self._task = spec["task"]
        if has_pipeline(self._task):
            self.pipe = transformers.pipeline(self._task, model=spec["checkpoint"], device="cpu")
            self.model, end_to_end = self.pipe.model, f"transformers {transformers.__version__} pipeline"
        else:
            self.pipe = None
            auto_class = {"question-answering": transformers.AutoModelForQuestionAnswering,
                          "fill-mask": transformers.AutoModelForMaskedLM}[self._task]
            self.model = auto_class.from_pretrained(spec["checkpoint"]).eval()
            self._tokenizer = transformers.AutoTokenizer.from_pretrained(spec["checkpoint"])
            end_to_end = (f"distilrt's {self._task} head on the PyTorch model (transformers "
                          f"{transformers.__version__} has no {self._task} pipeline)")
        self.backend = "torch"
        self.info = {"backend": self.backend, "attn_implementation": self.model.config._attn_implementation,
                     "end_to_end": end_to_end, "torch_threads": torch.get_num_threads(),
                     "torch_interop_threads": torch.get_num_interop_threads()}

    def model_call(self, feed):
        import torch

        # The PyTorch model takes no mask positions: it computes every token's logits, as its users run it.
        tensors = {name: torch.from_numpy(value) for name, value in feed.items() if name != MASK_POSITIONS}

        def forward():
            with torch.inference_mode():
                return self.model(**tensors)
        return forward

    def answerer(self, task: str, batch: int, max_seq_len: int):
        """A function of a list of inputs that returns the pipeline's answers, as a user calls it."""
        answer = self.pipe if self.pipe is not None else self._head(batch)
        options = {"batch_size": batch} if self.pipe is not None else {}  # a head's batch size is set when made
        if task == "question-answering":
            return lambda inputs: answer(question=[i["question"] for i in inputs],
                                         context=[i["context"] for i in inputs], max_seq_len=max_seq_len, **options)
        return lambda inputs: answer(inputs, **options)

    def end_to_end_call(self, task: str, batch: int, sequence: int, inputs):
        return _call_with(self.answerer(task, batch, sequence), inputs)

    def _head(self, batch: int):
        from distilrt.export.checkpoint import tokenizer_settings
        from distilrt.export.specs import get_spec, get_task
        from distilrt.export.task_reference import task_reference

        config = self.model.config
        settings = tokenizer_settings(self._tokenizer, get_spec(config.model_type).max_sequence(config.to_dict()))
        return task_reference(get_task(self._task), self.model, self._tokenizer, settings, batch_size=batch).run


class OptimumRunner(PipelineRunner):
    """Optimum's ORTModelFor* exported from the checkpoint, in the same transformers pipeline."""

    def __init__(self, spec: dict):
        import onnxruntime
        import torch
        import transformers
        from optimum import onnxruntime as optimum_ort

        torch.set_num_threads(spec["threads"])
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = spec["threads"]
        model_class = {"question-answering": optimum_ort.ORTModelForQuestionAnswering,
                       "fill-mask": optimum_ort.ORTModelForMaskedLM}[spec["task"]]
        model, made = self._model(model_class, spec, options)
        tokenizer = transformers.AutoTokenizer.from_pretrained(spec["checkpoint"])
        self.pipe = transformers.pipeline(spec["task"], model=model, tokenizer=tokenizer, device="cpu")
        self.model = self.pipe.model
        self.backend = "onnxruntime (optimum)"
        self.info = {"backend": self.backend, "intra_op_num_threads": spec["threads"], **made}

    def _model(self, model_class, spec: dict, options):
        """The ORTModel the pipeline runs, and what was done to make it."""
        return model_class.from_pretrained(spec["checkpoint"], export=True, session_options=options), {}

    def model_call(self, feed):
        return lambda: self.model(**feed)


class OptimumInt8Runner(OptimumRunner):
    """Optimum's best CPU configuration: its export, dynamic int8 (``AutoQuantizationConfig.avx2``, per channel),
    made in the worker's scratch directory; ``OptimumO2Int8Runner`` runs ORTOptimizer's O2 first."""

    optimize = False

    def _model(self, model_class, spec: dict, options):
        from distilrt.bench.optimum_int8 import quantize

        directory, made = quantize(model_class, spec["checkpoint"], Path(spec["scratch"]), optimize=self.optimize)
        return model_class.from_pretrained(directory, file_name=made["file"], session_options=options), made


class OptimumO2Int8Runner(OptimumInt8Runner):
    optimize = True


RUNNERS = {"distilrt": DistilrtRunner, "pytorch": PipelineRunner, "optimum": OptimumRunner,
           "optimum-int8": OptimumInt8Runner, "optimum-o2-int8": OptimumO2Int8Runner}


def _call_with(answer, inputs):
    return lambda: answer(inputs)


def run_spec(spec: dict) -> dict:
    name = spec["label"]
    runner_class = RUNNERS[spec["runner"]]
    started = time.perf_counter()
    progress(f"{name}: loading")
    try:
        runner = runner_class(spec)
    except ImportError as e:
        return {"skipped_reason": f"not installed ({e})", "cells": [], "workloads": []}
    except runner_class.expected_errors as e:
        return {"skipped_reason": _reason(e), "cells": [], "workloads": []}
    result = {"skipped_reason": None, "info": runner.info, "load_seconds": time.perf_counter() - started, "cells": []}
    for cell in spec.get("cells", ()):
        result["cells"].append(_time_cell(runner, spec, cell))
        progress(f"{name}: {_describe(cell, result['cells'][-1])}")
    result["workloads"] = [run_workload(runner, spec, workload, name) for workload in spec.get("workloads", ())]
    return result


def _time_cell(runner, spec: dict, cell: dict) -> dict:
    mode, batch, sequence = cell["mode"], cell["batch"], cell["sequence"]
    record = {"mode": mode, "batch": batch, "sequence": sequence}
    try:
        if mode == "model":
            call = runner.model_call(full_feed(spec["input_names"], batch, sequence, spec["vocab_size"], spec["seed"]))
        else:
            call = runner.end_to_end_call(spec["task"], batch, sequence, cell["inputs"])
        times = time_calls(call, spec["warmup"], spec["repeats"], spec["max_seconds"], spec["min_runs"])
    except runner.expected_errors as e:
        return {**record, "skipped_reason": f"failed: {_reason(e)}"}
    return {**record, **latency_figures(times, batch), "stopped_early": len(times) < spec["repeats"]}


def run_workload(runner, spec: dict, workload: dict, name: str) -> dict:
    """Every item of the workload through the runner's list call, in chunks of whole batches (progress between
    them), after one untimed batch; the seconds of the timed calls and each item's answer."""
    inputs, batch = workload["inputs"], workload["batch"]
    record = {"name": workload["name"], "items": len(inputs)}
    try:
        answer = runner.answerer(spec["task"], batch, workload["max_seq_len"])
        answer(inputs[:batch])  # warm-up: first-call allocations and lazy initialisation stay out of the time
        seconds, outputs = 0.0, []
        for start in range(0, len(inputs), workload["chunk"]):
            chunk = inputs[start:start + workload["chunk"]]
            started = time.perf_counter()
            answers = answer(chunk)
            seconds += time.perf_counter() - started
            outputs += compact_answers(spec["task"], answers, len(chunk))
            progress(f"{name}: {workload['name']} {len(outputs)}/{len(inputs)} {workload['unit']}, "
                     f"{len(outputs) / seconds:.1f}/s")
    except runner.expected_errors as e:
        return {**record, "skipped_reason": f"failed: {_reason(e)}"}
    return {**record, "seconds": seconds, "items_per_s": len(inputs) / seconds, "outputs": outputs}


def compact_answers(task: str, answers, count: int) -> list[dict]:
    """One record per input (a single input's answer comes back bare, as from the pipeline): QA's answer text and
    span, fill-mask's proposed token ids, best first."""
    if count == 1:
        answers = [answers]
    if len(answers) != count:
        raise ValueError(f"{count} inputs gave {len(answers)} answers")
    if task == "question-answering":
        return [{"answer": a["answer"], "start": int(a["start"]), "end": int(a["end"]), "score": float(a["score"])}
                for a in answers]
    return [{"tokens": [int(p["token"]) for p in proposals], "token_str": proposals[0]["token_str"]}
            for proposals in answers]


def time_calls(call, warmup: int, repeats: int, max_seconds: float, min_runs: int) -> list[float]:
    """Seconds of each timed call after ``warmup`` untimed ones: ``repeats`` calls, or fewer (never fewer than
    ``min_runs``) once ``max_seconds`` of timed calls are spent."""
    for _ in range(warmup):
        call()
    times: list[float] = []
    while len(times) < repeats:
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
        if sum(times) >= max_seconds and len(times) >= min_runs:
            break
    return times


def latency_figures(times: list[float], batch: int) -> dict:
    ms = np.asarray(times) * 1000.0
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {"repeats": len(times),
            "latency_ms": {"p50": float(p50), "p90": float(p90), "p99": float(p99), "mean": float(ms.mean()),
                           "min": float(ms.min())},
            "throughput_seq_per_s": batch / (float(ms.mean()) / 1000.0)}


def peak_rss_mb() -> float | None:
    """This process's peak resident memory so far, in MiB.

    On Linux, VmHWM of /proc/self/status: the high-water mark of this program's own memory. ru_maxrss will not
    do there: exec keeps the high-water mark of the parent's memory the child was forked with, so every worker
    started by a large parent (the CI job that built the models) would report the parent's size.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**10  # kB
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource
    except ImportError:  # not on Unix
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux, bytes on macOS
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def _describe(cell: dict, record: dict) -> str:
    where = f"{cell['mode']} batch {cell['batch']} sequence {cell['sequence']}"
    if record.get("skipped_reason"):
        return f"{where}: {record['skipped_reason']}"
    return f"{where}: p50 {record['latency_ms']['p50']:.2f} ms over {record['repeats']} runs"


def _reason(error: Exception) -> str:
    """A distilrt error's message names the fix; any other error also needs its type to be understood."""
    return one_line(error) if isinstance(error, DistilrtError) else f"{type(error).__name__}: {one_line(error)}"


def main(argv: list[str] | None = None) -> int:
    spec_path, out_path = (argv if argv is not None else sys.argv[1:])
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    result = run_spec(spec)
    result["peak_rss_mb"] = peak_rss_mb()
    Path(out_path).write_text(json.dumps(result), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
