"""`distilrt run` and `distilrt inspect`: the lean runtime alone (no torch, transformers or onnx)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import distilrt
from distilrt.backends import supported_backends
from distilrt.bundle import MANIFEST_NAME
from distilrt.errors import UserInputError

BUNDLE_HELP = "a bundle directory, e.g. artifacts/<checkpoint>/fp32"


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", type=Path, help=BUNDLE_HELP)
    parser.add_argument("--question", help="question (question-answering bundles)")
    parser.add_argument("--context", help="context (question-answering bundles)")
    parser.add_argument("--text", help="text with the mask token (fill-mask bundles)")
    parser.add_argument("--top-k", type=int, default=None,
                        help="answers to return (default: the pipeline's, 1 for question answering, 5 for fill-mask)")
    parser.add_argument("--backend", help=f"{', '.join(supported_backends())} (default: the backend the manifest "
                                          "names)")
    parser.add_argument("--fallback", choices=("onnx",),
                        help="run an engine bundle's ONNX where this machine cannot run its engine")


def run(args) -> int:
    _refuse_a_directory_of_bundles(args.bundle)
    head = distilrt.load(args.bundle, backend=args.backend, fallback=args.fallback)
    kwargs = {} if args.top_k is None else {"top_k": args.top_k}
    bundle = distilrt.read_bundle(args.bundle, check_hashes=False)
    task = bundle.task
    if task == "question-answering":
        if args.question is None or args.context is None or args.text is not None:
            raise UserInputError("a question-answering bundle takes --question and --context (not --text)")
        result = head(question=args.question, context=args.context, **kwargs)
    else:
        if args.text is None or args.question is not None or args.context is not None:
            raise UserInputError("a fill-mask bundle takes --text (with the mask token), not --question/--context")
        result = head(args.text, **kwargs)
    if bundle.manifest.source.random_weights:  # on stderr: stdout stays the JSON answer
        print(f"distilrt: note: {bundle.path} has RANDOM weights ({_stand_in(bundle.manifest.source)}): "
              "its answers are meaningless", file=sys.stderr)
    print(json.dumps(result, indent=2, ensure_ascii=False))
    return 0


def _refuse_a_directory_of_bundles(path: Path) -> None:
    """`distilrt run artifacts/<checkpoint>`: name the variant bundles to pick rather than a missing manifest."""
    if not path.is_dir() or (path / MANIFEST_NAME).exists():
        return
    bundles = sorted(child for child in path.iterdir() if (child / MANIFEST_NAME).is_file())
    if bundles:
        raise UserInputError(f"{path} is a directory of bundles, not a bundle: pick a variant: "
                             + ", ".join(str(b) for b in bundles))


def _stand_in(source) -> str:
    stand_in = source.stand_in or {}
    if "checkpoint" not in stand_in:
        return "a stand-in"
    return f"a {'tiny' if stand_in.get('tiny') else 'full-size'} stand-in for {stand_in['checkpoint']}"


def add_inspect_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", type=Path, help=BUNDLE_HELP)
    parser.add_argument("--json", action="store_true", help="print the whole manifest")


def inspect(args) -> int:
    _refuse_a_directory_of_bundles(args.bundle)
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
