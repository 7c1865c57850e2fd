"""Serving benchmark: requests/s and p50/p99 latency of a bundle through `distilrt serve`'s tritonserver (HTTP,
dynamic batching on and off) next to in-process calls of the same head, at several client concurrencies.

    python ci/serve_bench.py artifacts/<checkpoint>/int8-dynamic --out serve-bench [--concurrency 1 8 32]
        [--requests 256] [--threads 2] [--max-queue-delay-us 2000] [--max-batch-size 32]

Every client sends SQuAD dev questions (question-answering) or masked WikiText sentences (fill-mask), the same
seeded list for every mode; each request is one example. In-process, each client thread calls the one head
(ONNX Runtime sessions run concurrent calls). Writes OUT/serve-bench.json and OUT/serve-bench.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

import distilrt
from distilrt.calib import SQUAD_DEV, WIKITEXT_VALID
from distilrt.calib.squad import read_squad, sample_questions
from distilrt.calib.text import mask_words, read_sentences
from distilrt.files import write_json
from distilrt.host import resolve_threads
from distilrt.provenance import host_record, tool_versions
from distilrt.serve.client import Client
from distilrt.serve.repository import ServingConfig, named_bundles, write_repository
from distilrt.serve.server import Ports, TritonProcess

MODEL = "bench"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    bundle = distilrt.read_bundle(args.bundle)
    examples = _examples(bundle, args.requests)
    cells = []
    options = {} if args.threads is None else {"intra_op_num_threads": args.threads}
    host = host_record()  # its load average says whether other work shared the machine at the start
    with contextlib.ExitStack() as stack:
        head = stack.enter_context(distilrt.load(bundle.path, batch_size=args.max_batch_size, **options))
        call = (lambda e: head(question=e["question"], context=e["context"])) if bundle.task == "question-answering" \
            else (lambda e: head(e["text"]))
        expected = [call(e) for e in examples]  # each request alone: the reference answers, and the warm-up
        servers = {batching: _start_server(stack, bundle, args, batching, examples) for batching in (True, False)}
        # The three runners take turns at each concurrency, so a change in other load on the machine moves
        # neighbouring cells alike instead of one runner's.
        for concurrency in args.concurrency:
            cells.append(_cell("in-process", None, concurrency, examples, lambda: _InProcess(call), expected))
            print(_line(cells[-1]), file=sys.stderr, flush=True)
            for batching, server in servers.items():
                cells.append(_cell("triton-http", batching, concurrency, examples,
                                   lambda s=server: _Remote(s.url, bundle.task), expected))
                print(_line(cells[-1]), file=sys.stderr, flush=True)
    results = {"bundle": str(bundle.path), "task": bundle.task, "variant": bundle.variant,
               "checkpoint": bundle.manifest.source.id, "random_weights": bundle.manifest.source.random_weights,
               "settings": {"requests_per_cell": args.requests, **resolve_threads(args.threads).to_dict(),
                            "max_batch_size": args.max_batch_size, "max_queue_delay_us": args.max_queue_delay_us,
                            "instances": 1, "protocol": "http", "inputs": _input_description(bundle.task)},
               "host": host, "host_after": {"load_average": list(os.getloadavg())}, "tools": tool_versions(), "cells": cells}
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "serve-bench.json", results)
    markdown = args.out / "serve-bench.md"
    markdown.with_suffix(".md.tmp").write_text(render_markdown(results), encoding="utf-8")
    markdown.with_suffix(".md.tmp").replace(markdown)
    print(render_markdown(results))
    return 0


def _start_server(stack: contextlib.ExitStack, bundle, args, batching: bool, examples: list[dict]) -> TritonProcess:
    config = ServingConfig(max_batch_size=args.max_batch_size, dynamic_batching=batching,
                           max_queue_delay_us=args.max_queue_delay_us, threads=args.threads)
    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="distilrt-serve-bench-")))
    write_repository(named_bundles([bundle], [MODEL]), tmp / "repo", config, form="python", copy_bundles=False)
    server = stack.enter_context(TritonProcess(tmp / "repo", Ports(*_free_ports()), log=tmp / "triton.log"))
    server.start().wait_ready(300)
    with Client(server.url, timeout_s=120) as client:  # warm-up
        for example in examples[:8]:
            _remote(client, bundle.task)(example)
    return server


def _examples(bundle, count: int) -> list[dict]:
    if bundle.task == "question-answering":
        return [{"question": q.question, "context": q.context}
                for q in sample_questions(read_squad(SQUAD_DEV), count, seed=0)]
    mask = bundle.tokenizer_settings.mask_token
    return [{"text": text} for text in mask_words(read_sentences(WIKITEXT_VALID), mask, count, seed=0)]


def _input_description(task: str) -> str:
    return "SQuAD v1.1 dev questions with their paragraph (most fit one 384-token window)" \
        if task == "question-answering" else "WikiText-2 valid sentences with one or two masked words"


class _InProcess:
    def __init__(self, call):
        self.call = call

    def close(self):
        pass


class _Remote:
    def __init__(self, url: str, task: str):
        self.client = Client(url, timeout_s=120)
        self.call = _remote(self.client, task)

    def close(self):
        self.client.close()


def _remote(client: Client, task: str):
    if task == "question-answering":
        return lambda e: client.question_answering(MODEL, e["question"], e["context"])
    return lambda e: client.fill_mask(MODEL, e["text"])


def _cell(runner: str, batching: bool | None, concurrency: int, examples: list[dict], make_caller,
          expected: list) -> dict:
    """``len(examples)`` requests spread over ``concurrency`` clients, each waiting for its answer; every answer
    is compared with the one the head gives that request alone."""
    shares = [list(range(i, len(examples), concurrency)) for i in range(concurrency)]

    def client(share):
        caller = make_caller()
        latencies, answers = [], []
        try:
            for index in share:
                started = time.perf_counter()
                answers.append((index, caller.call(examples[index])))
                latencies.append(time.perf_counter() - started)
        finally:
            caller.close()
        return latencies, answers

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        outcomes = list(pool.map(client, shares))
    seconds = time.perf_counter() - started
    latencies = [latency for share, _ in outcomes for latency in share]
    comparison = compare_answers([(answer, expected[index]) for _, answers in outcomes for index, answer in answers])
    ms = np.array(latencies) * 1000
    p50, p99 = np.percentile(ms, [50, 99])
    return {"runner": runner, "dynamic_batching": batching, "concurrency": concurrency, "requests": len(latencies),
            "seconds": seconds, "requests_per_s": len(latencies) / seconds,
            "latency_ms": {"p50": float(p50), "p99": float(p99), "mean": float(ms.mean())},
            "versus_in_process_alone": comparison}


def compare_answers(pairs: list) -> dict:
    """How far answers are from the head's answers to each request alone: identical (scores bit for bit), the
    same tokens/spans and texts in the same order, and the largest score difference where they are."""
    identical = same_items = 0
    max_score_diff = 0.0
    for answer, reference in pairs:
        identical += answer == reference
        items, reference_items = _flat(answer), _flat(reference)
        keys = [{k: v for k, v in item.items() if k != "score"} for item in items]
        if keys == [{k: v for k, v in item.items() if k != "score"} for item in reference_items]:
            same_items += 1
            diffs = [abs(a["score"] - b["score"]) for a, b in zip(items, reference_items)]
            max_score_diff = max([max_score_diff, *diffs])
    return {"requests": len(pairs), "identical": identical, "same_answers": same_items,
            "max_score_diff_where_same": max_score_diff}


def _flat(result) -> list[dict]:
    if isinstance(result, dict):
        return [result]
    return [item for entry in result for item in _flat(entry)]


def _comparison(cell: dict) -> str:
    c = cell["versus_in_process_alone"]
    return (f"{c['identical']}/{c['requests']} identical, {c['same_answers']}/{c['requests']} same answers "
            f"(max score diff {c['max_score_diff_where_same']:.1e})")


def _line(cell: dict) -> str:
    batching = {None: "", True: " batching on", False: " batching off"}[cell["dynamic_batching"]]
    return (f"{cell['runner']}{batching} c={cell['concurrency']}: {cell['requests_per_s']:.1f} req/s, "
            f"p50 {cell['latency_ms']['p50']:.1f} ms, p99 {cell['latency_ms']['p99']:.1f} ms, "
            f"versus each request in-process alone: {_comparison(cell)}")


def render_markdown(results: dict) -> str:
    host = results["host"]
    settings = results["settings"]
    lines = [f"# Serving benchmark: {results['checkpoint']} {results['variant']} ({results['task']})", "",
             f"{'RANDOM weights (a stand-in). ' if results['random_weights'] else ''}Machine: {host.get('cpu')} "
             f"({host.get('cores')} cores; 1/5/15-min load average {_loads(host.get('load_average'))} at the start, "
             f"{_loads(results['host_after']['load_average'])} at the end), "
             f"{host.get('platform')}; {settings['requests_per_cell']} requests per "
             f"cell ({settings['inputs']}); ONNX Runtime threads {settings['threads'] or 'default'}"
             f"{' (' + settings['threads_source'] + ')' if settings.get('threads_source') else ''}; server: 1 instance, "
             f"max_batch_size {settings['max_batch_size']}, max_queue_delay_us {settings['max_queue_delay_us']}, "
             f"HTTP.", "",
             "| runner | dynamic batching | clients | requests/s | p50 ms | p99 ms | versus each request in-process alone |",
             "|---|---|---|---|---|---|---|"]
    for cell in results["cells"]:
        batching = {None: "–", True: "on", False: "off"}[cell["dynamic_batching"]]
        lines.append(f"| {cell['runner']} | {batching} | {cell['concurrency']} | {cell['requests_per_s']:.1f} | "
                     f"{cell['latency_ms']['p50']:.1f} | {cell['latency_ms']['p99']:.1f} | "
                     f"{_comparison(cell)} |")
    return "\n".join(lines) + "\n"


def _loads(values) -> str:
    return "/".join(f"{value:.1f}" for value in values or [])


def _free_ports() -> list[int]:
    ports = []
    sockets = [socket.socket() for _ in range(3)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
        ports.append(s.getsockname()[1])
    for s in sockets:
        s.close()
    return ports


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--requests", type=int, default=256, help="requests per cell (default %(default)s)")
    parser.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads (default: one per physical core)")
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--max-queue-delay-us", type=int, default=2000)
    return parser


if __name__ == "__main__":
    sys.exit(main())
