"""`distilrt run` and `distilrt inspect`: the lean runtime alone (no torch, transformers or onnx)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import distilrt
from distilrt.backends import supported_backends
from distilrt.errors import UserInputError


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--question", help="question (question-answering bundles)")
    parser.add_argument("--context", help="context (question-answering bundles)")
    parser.add_argument("--text", help="text with the mask token (fill-mask bundles)")
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--backend", help=f"{', '.join(supported_backends())} (default: the backend the manifest "
                                          "names)")
    parser.add_argument("--fallback", choices=("onnx",),
                        help="run an engine bundle's ONNX where this machine cannot run its engine")


def run(args) -> int:
    head = distilrt.load(args.bundle, backend=args.backend, fallback=args.fallback)
    kwargs = {} if args.top_k is None else {"top_k": args.top_k}
    task = distilrt.read_bundle(args.bundle, check_hashes=False).task
    if task == "question-answering":
        if args.question is None or args.context is None or args.text is not None:
            raise UserInputError("a question-answering bundle takes --question and --context (not --text)")
        result = head(question=args.question, context=args.context, **kwargs)
    else:
        if args.text is None or args.question is not None or args.context is not None:
            raise UserInputError("a fill-mask bundle takes --text (with the mask token), not --question/--context")
        result = head(args.text, **kwargs)
    print(json.dumps(result, indent=2, ensure_ascii=False))
    return 0


def add_inspect_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--json", action="store_true", help="print the whole manifest")


def inspect(args) -> int:
    bundle = distilrt.read_bundle(args.bundle)
    m = bundle.manifest
    if args.json:
        print(m.to_json())
        return 0
    source = m.source
    verification = m.verification or {}
    model = m.model_file
    lines = [
        f"bundle:        {bundle.path} (schema {m.schema_version}, files and hashes OK)",
        f"source:        {source.id}" + (f" (revision {source.revision})" if source.revision else ""),
        *([f"               RANDOM weights: a stand-in for {source.stand_in['checkpoint']} "
           f"({'tiny' if source.stand_in['tiny'] else 'full size'}, seed {source.stand_in['seed']})"]
          if source.random_weights else []),
        f"task:          {m.task} ({m.architecture}), variant {m.variant}",
        f"model:         {model.file} for {model.backend}; inputs "
        + ", ".join(m.input_names) + " -> " + ", ".join(m.output_names),
        f"verification:  {'passed' if verification.get('passed') else 'NOT passed'}; "
        + json.dumps(verification.get("task", {}), ensure_ascii=False),
        "tools:         " + ", ".join(f"{k} {v}" for k, v in m.tools.items() if v),
    ]
    if m.engine is not None:
        engine, fallback = m.engine, m.fallback
        lines.append(f"engine:        TensorRT {engine['tensorrt_version']} on {engine['gpu']['name']} (compute "
                     f"capability {engine['gpu']['compute_capability']}); version_compatible "
                     f"{engine['version_compatible']}, hardware_compatibility {engine['hardware_compatibility']}")
        lines.append(f"fallback:      {fallback.file} for {fallback.backend}")
    print("\n".join(lines))
    return 0


COMMANDS = {"run": (add_run_arguments, run), "inspect": (add_inspect_arguments, inspect)}
