"""Model-only latency of every variant bundle of a checkpoint, next to its fp32 bundle, on ONNX Runtime CPU.

    python ci/variant_latency.py artifacts/<checkpoint> [--threads 2] [--repeats 30] [--json out.json]

Stands in for the variant columns of `distilrt bench` until that command exists (the benchmarks issue).
Each (batch, sequence) is timed after warm-up on seeded inputs with full attention masks; it prints a Markdown
table and, with --json, writes the figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import distilrt
from distilrt.backends import open_backend

SHAPES = ((1, 128), (8, 128))


def time_bundle(bundle: Path, threads: int, repeats: int, warmup: int = 3) -> dict:
    manifest = distilrt.read_bundle(bundle, check_hashes=False).manifest
    model = open_backend("onnxruntime", bundle / "model.onnx", intra_op_num_threads=threads)
    vocab = manifest["model"]["vocab_size"]
    rng = np.random.default_rng(0)
    figures = {}
    for batch, sequence in SHAPES:
        feed = {"input_ids": rng.integers(1000, vocab - 1, size=(batch, sequence)),
                "attention_mask": np.ones((batch, sequence), dtype=np.int64),
                "token_type_ids": np.zeros((batch, sequence), dtype=np.int64)}
        feed = {name: feed[name] for name in model.input_names}
        for _ in range(warmup):
            model.run(feed)
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            model.run(feed)
            times.append((time.perf_counter() - started) * 1000)
        figures[f"b{batch}s{sequence}"] = {"p50_ms": statistics.median(times),
                                           "p90_ms": float(np.percentile(times, 90))}
    return {"variant": manifest["variant"], "model_mb": (bundle / "model.onnx").stat().st_size / 2**20,
            "latency": figures}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint_dir", type=Path, help="artifacts/<checkpoint> holding variant bundles")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    bundles = sorted(p for p in args.checkpoint_dir.iterdir() if (p / "manifest.json").is_file())
    rows = [time_bundle(b, args.threads, args.repeats) for b in bundles]
    base = next(r for r in rows if r["variant"] == "fp32")["latency"]
    print(f"{args.checkpoint_dir.name}: onnxruntime CPU, {args.threads} threads, p50 of {args.repeats} runs")
    print("| variant | MB | " + " | ".join(f"{k} p50 ms (x fp32)" for k in base) + " |")
    print("|---|---|" + "---|" * len(base))
    for r in rows:
        cells = [f"{r['latency'][k]['p50_ms']:.1f} ({base[k]['p50_ms'] / r['latency'][k]['p50_ms']:.2f}x)" for k in base]
        print(f"| {r['variant']} | {r['model_mb']:.1f} | " + " | ".join(cells) + " |")
    if args.json:
        args.json.write_text(json.dumps({"checkpoint": args.checkpoint_dir.name, "threads": args.threads,
                                         "repeats": args.repeats, "bundles": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
