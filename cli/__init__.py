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
import importlib.util
import os
import sys

import distilrt
from distilrt.errors import CapabilityError, DistilrtError, one_line

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


# top-level module a command may need -> the extra that installs it (pyproject.toml), for the one-line error a
# lean install (`distilrt[ort]`) gets from a build command instead of a traceback
EXTRA_OF_MODULE: dict[str, str] = {
    "torch": "export", "transformers": "export", "onnx": "export", "sentencepiece": "export",
    "onnxruntime": "ort", "matplotlib": "report", "datasets": "datasets", "optimum": "optimum",
    "tritonclient": "serve", "pytriton": "serve", "tensorrt_lean": "trt", "cuda": "trt",
}


# what a build-side command needs before its first minute of work (checked first: no half-made artifacts dir)
_BUILD_STACK = ("torch", "transformers", "onnx")
REQUIRED_MODULES: dict[str, tuple[str, ...]] = {
    "build": _BUILD_STACK, "rebuild": _BUILD_STACK, "demo": _BUILD_STACK, "lint": ("onnx",), "engine": ("onnx",),
}


def _missing_extra(command: str | None, module: str) -> str:
    extra = EXTRA_OF_MODULE[module.partition(".")[0]]
    return (f"`distilrt {command}` needs {module}, which is not installed: pip install \"distilrt[{extra}]\" "
            '(README: "Set up" for CPU-only torch)')


def _check_required_modules(command: str | None) -> None:
    for module in REQUIRED_MODULES.get(command or "", ()):
        try:
            found = importlib.util.find_spec(module) is not None
        except ValueError:  # in sys.modules without a spec
            found = True
        if not found:
            raise CapabilityError(_missing_extra(command, module))


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """argparse's ArgumentDefaultsHelpFormatter, without "(default: None)" / "(default: False)" for options
    whose absence means "not given" and whose help text says what happens then."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help_text = action.help or ""
        if "default" in help_text or action.default in (None, False, argparse.SUPPRESS):
            return help_text
        if action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            shown = " ".join(map(str, action.default)) if isinstance(action.default, (list, tuple)) else action.default
            return f"{help_text} (default: {shown})".lstrip()
        return help_text


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = _command_in(argv)
    try:
        args = _parser(command).parse_args(argv)
        _check_required_modules(command)
        return args.handler(args)
    except DistilrtError as e:
        print(f"distilrt: error: {one_line(e)}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as e:
        if (e.name or "").partition(".")[0] not in EXTRA_OF_MODULE:
            raise  # not an optional dependency: a bug, keep the traceback
        print(f"distilrt: error: {_missing_extra(command, e.name)}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # `distilrt run ... | head`: the reader left; say nothing more (Python docs, "Note on SIGPIPE")
        _silence_stdout()
        return 141  # 128 + SIGPIPE, what a shell reports for a command killed by it
    except KeyboardInterrupt:
        print("distilrt: interrupted; nothing was published", file=sys.stderr)
        return 130


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot raise BrokenPipeError again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout replaced by something without a file descriptor
        pass


def _command_in(argv: list[str]) -> str | None:
    """The command named on the command line (the first word that is one), if any."""
    return next((word for word in argv if word in COMMANDS), None)


def _parser(command: str | None) -> argparse.ArgumentParser:
    """Every command is listed; only ``command``'s module is imported, to add its arguments and handler."""
    parser = argparse.ArgumentParser(
        prog="distilrt", description="Export encoder checkpoints to verified bundles and run them without torch.")
    parser.add_argument("--version", action="version", version=f"distilrt {distilrt.__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text, formatter_class=DefaultsHelpFormatter)
        if name == command:
            module = importlib.import_module(f"distilrt.cli.{module_name}")
            add_arguments, handler = module.COMMANDS[name]
            add_arguments(sub)
            sub.set_defaults(handler=handler)
    return parser


if __name__ == "__main__":
    sys.exit(main())
