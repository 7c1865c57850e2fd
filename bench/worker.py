"""One benchmark runner in its own process, so that its peak memory is its own:

    python -m distilrt.bench.worker SPEC.json OUT.json

A runner is one bundle on the distilrt runtime, the transformers pipeline on PyTorch, or Optimum's ONNX Runtime
model classes. It times every cell of the spec (mode, batch, sequence) after warm-up and writes the figures,
or why it could not run, to OUT.json. Progress goes to stderr, one line per cell, for the parent to forward.
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

    def end_to_end_call(self, task: str, batch: int, sequence: int, inputs):
        import distilrt

        head = distilrt.head_for(self._bundle, self._model, batch_size=batch)
        if task == "question-answering":
            questions, contexts = [i["question"] for i in inputs], [i["context"] for i in inputs]
            return lambda: head(question=questions, context=contexts, max_seq_len=sequence)
        return lambda: head(inputs)


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

    def end_to_end_call(self, task: str, batch: int, sequence: int, inputs):
        answer = self.pipe if self.pipe is not None else self._head(batch)
        options = {"batch_size": batch} if self.pipe is not None else {}  # a head's batch size is set when made
        if task == "question-answering":
            questions, contexts = [i["question"] for i in inputs], [i["context"] for i in inputs]
            return lambda: answer(question=questions, context=contexts, max_seq_len=sequence, **options)
        return lambda: answer(inputs, **options)

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
        model = model_class.from_pretrained(spec["checkpoint"], export=True, session_options=options)
        tokenizer = transformers.AutoTokenizer.from_pretrained(spec["checkpoint"])
        self.pipe = transformers.pipeline(spec["task"], model=model, tokenizer=tokenizer, device="cpu")
        self.model = self.pipe.model
        self.backend = "onnxruntime (optimum)"
        self.info = {"backend": self.backend, "intra_op_num_threads": spec["threads"]}

    def model_call(self, feed):
        return lambda: self.model(**feed)


RUNNERS = {"distilrt": DistilrtRunner, "pytorch": PipelineRunner, "optimum": OptimumRunner}


def run_spec(spec: dict) -> dict:
    name = spec["label"]
    runner_class = RUNNERS[spec["runner"]]
    started = time.perf_counter()
    progress(f"{name}: loading")
    try:
        runner = runner_class(spec)
    except ImportError as e:
        return {"skipped_reason": f"not installed ({e})", "cells": []}
    except runner_class.expected_errors as e:
        return {"skipped_reason": _reason(e), "cells": []}
    result = {"skipped_reason": None, "info": runner.info, "load_seconds": time.perf_counter() - started, "cells": []}
    for cell in spec["cells"]:
        result["cells"].append(_time_cell(runner, spec, cell))
        progress(f"{name}: {_describe(cell, result['cells'][-1])}")
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
