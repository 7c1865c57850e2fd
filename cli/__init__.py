"""The `distilrt` command line. One module per group of commands, by what they need:

    runtime_commands  run, inspect                          the lean runtime alone
    export_commands   build, eval, rebuild, demo, lint, engine   torch, transformers, onnx (distilrt[export])
    bench_commands    bench, report                         the runtime; torch only for the PyTorch reference
    serve_commands    serve, triton-repo                    the runtime and Triton (distilrt[serve])

Only the module of the command being run is imported, so `distilrt run` starts without torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from distilrt.errors import DistilrtError, one_line

# command -> (module under distilrt.cli, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "build": ("export_commands", "export a checkpoint to a verified fp32 ONNX bundle, and its variants"),
    "eval": ("export_commands", "accuracy of a bundle on held-out data (SQuAD EM/F1, masked-token accuracy)"),
    "run": ("runtime_commands", "run a bundle on one input and print the result as JSON"),
    "inspect": ("runtime_commands", "check a bundle and print its manifest summary"),
    "rebuild": ("export_commands", "build a bundle again from its manifest alone"),
    "demo": ("export_commands", "offline: build and verify RANDOM-weight stand-ins of the five seed checkpoints"),
    "lint": ("export_commands", "check bundles' ONNX against what TensorRT's ONNX parser accepts (CPU)"),
    "engine": ("export_commands", "build TensorRT engine bundles from a checkpoint's built ONNX bundles"),
    "bench": ("bench_commands", "latency, throughput and peak memory of bundles, next to the transformers pipeline "
                                "on PyTorch measured in the same run"),
    "report": ("bench_commands", "accuracy and latency of benchmarked bundles as JSON, Markdown and PNG plots; "
                                 "with --baseline, exit 1 on any regression"),
    "serve": ("serve_commands", "serve bundles with NVIDIA Triton Inference Server over HTTP and gRPC (text in, the "
                                "pipeline's answers out)"),
    "triton-repo": ("serve_commands", "write a Triton model repository of bundles for the tritonserver container"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parser(_command_in(argv)).parse_args(argv)
    try:
        return args.handler(args)
    except DistilrtError as e:
        print(f"distilrt: error: {one_line(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("distilrt: interrupted; nothing was published", file=sys.stderr)
        return 130


def _command_in(argv: list[str]) -> str | None:
    """The command named on the command line (the first word that is one), if any."""
    return next((word for word in argv if word in COMMANDS), None)


def _parser(command: str | None) -> argparse.ArgumentParser:
    """Every command is listed; only ``command``'s module is imported, to add its arguments and handler."""
    parser = argparse.ArgumentParser(
        prog="distilrt", description="Export encoder checkpoints to verified bundles and run them without torch.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        if name == command:
            module = importlib.import_module(f"distilrt.cli.{module_name}")
            add_arguments, handler = module.COMMANDS[name]
            add_arguments(sub)
            sub.set_defaults(handler=handler)
    return parser


if __name__ == "__main__":
    sys.exit(main())
