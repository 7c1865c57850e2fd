"""What a newcomer sees: --version, help texts with their defaults, `run` on a checkpoint's directory, on a
RANDOM-weight bundle and into a closed pipe, `bench` without --json, a lean install's one-line error, the
demo's kept checkpoints and summary.md, and library chatter kept in the build log."""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from conftest import MLM_NAME, QA_NAME

import distilrt
from distilrt.cli import COMMANDS, DefaultsHelpFormatter, main
from distilrt.export import build_log as build_log_module
from distilrt.export.build_log import Steps, build_log


def test_version(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"distilrt {distilrt.__version__}"
    assert distilrt.__version__ == importlib.metadata.version("distilrt")  # the package's own metadata


def _actions(command: str) -> list[argparse.Action]:
    parser = argparse.ArgumentParser(formatter_class=DefaultsHelpFormatter)
    module_name = COMMANDS[command][0]
    add_arguments, _ = importlib.import_module(f"distilrt.cli.{module_name}").COMMANDS[command]
    add_arguments(parser)
    return [a for a in parser._actions if not isinstance(a, argparse._HelpAction)]


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_option_has_help_and_every_default_shows(command):
    formatter = DefaultsHelpFormatter("distilrt")
    for action in _actions(command):
        assert action.help, f"distilrt {command} {action.dest}: no help text"
        shown = formatter._get_help_string(action)
        if action.default not in (None, False, argparse.SUPPRESS):
            assert "default" in shown, f"distilrt {command} {action.option_strings}: default not shown: {shown!r}"


def test_help_output_shows_a_default(capsys):
    with pytest.raises(SystemExit):
        main(["build", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--opset OPSET ONNX opset (default: 17)" in out and "(default: None)" not in out


def test_run_on_a_checkpoint_directory_lists_its_bundles(tiny_bundles, capsys):
    bundle = tiny_bundles[QA_NAME].bundle
    assert main(["run", str(bundle.parent), "--question", "Who?", "--context", "Ada."]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pick a variant" in err and str(bundle) in err and "manifest.json" not in err
    assert main(["inspect", str(bundle.parent)]) == 1
    assert "pick a variant" in capsys.readouterr().err


def test_run_on_random_weights_says_so_on_stderr(tiny_bundles, capsys):
    assert main(["run", str(tiny_bundles[MLM_NAME].bundle), "--text", "Paris is the [MASK] of France."]) == 0
    captured = capsys.readouterr()
    assert len(json.loads(captured.out)) == 5  # stdout stays the JSON answer
    assert "RANDOM weights" in captured.err and "stand-in for albert-base-v2" in captured.err


class _ClosedPipe:
    def write(self, text):
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self):
        pass


def test_a_closed_pipe_ends_quietly(tiny_bundles, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdout", _ClosedPipe())
    assert main(["run", str(tiny_bundles[MLM_NAME].bundle), "--text", "Paris is the [MASK] of France."]) == 141
    assert "Traceback" not in capsys.readouterr().err


def test_run_into_head_has_no_traceback(tiny_bundles):
    """`distilrt run ... | head -c 1`: the reader is gone before the answer is written."""
    argv = [sys.executable, "-m", "distilrt.cli", "run", str(tiny_bundles[MLM_NAME].bundle), "--text",
            "Paris is the [MASK] of France.", "--top-k", "5"]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ})
    process.stdout.close()  # before the runtime has loaded: the first write meets a closed pipe
    _, err = process.communicate(timeout=120)
    assert process.returncode == 141 and b"Traceback" not in err and b"BrokenPipe" not in err


def test_bench_prints_its_table_without_json(tiny_bundles, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["bench", str(tiny_bundles[QA_NAME].bundle), "--batch", "1", "--sequence", "16", "--model-only",
            "--no-reference", "--repeats", "2", "--warmup", "0", "--threads", "1"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "| runner | variant | mode |" in out and "results:" not in out
    assert list(tmp_path.iterdir()) == []  # nothing written


# A lean install: the runtime's packages only. The build commands must say which extra to install.
_WITHOUT_BUILD_PACKAGES = """
import sys
for name in ("torch", "transformers", "onnx", "sentencepiece"):
    sys.modules[name] = None  # `import torch` raises ModuleNotFoundError, as where it is not installed
from distilrt.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("argv", [["build", "{checkpoint}", "--out", "{out}"], ["demo", "--tiny", "--out", "{out}"],
                                  ["lint", "{bundle}"]])
def test_a_lean_install_names_the_extra_to_install(tiny_checkpoints, tiny_bundles, tmp_path, argv):
    paths = {"checkpoint": tiny_checkpoints[MLM_NAME], "out": tmp_path / "out", "bundle": tiny_bundles[MLM_NAME].bundle}
    result = subprocess.run([sys.executable, "-c", _WITHOUT_BUILD_PACKAGES, *[a.format(**paths) for a in argv]],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("distilrt: error: ") and result.stderr.count("\n") == 1, result.stderr
    assert 'pip install "distilrt[export]"' in result.stderr and "Traceback" not in result.stderr


def test_an_optional_module_missing_mid_command_is_one_line(monkeypatch, capsys):
    def handler(args):
        raise ModuleNotFoundError("No module named 'matplotlib'", name="matplotlib")

    monkeypatch.setattr("distilrt.cli.runtime_commands.COMMANDS", {"inspect": (lambda parser: None, handler)})
    assert main(["inspect"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and 'pip install "distilrt[report]"' in err and "needs matplotlib" in err


def test_an_unknown_missing_module_keeps_its_traceback(monkeypatch):
    """Only optional dependencies get the one-line hint; any other missing module is a bug to see."""
    def handler(args):
        raise ModuleNotFoundError("No module named 'not_a_distilrt_extra'", name="not_a_distilrt_extra")

    monkeypatch.setattr("distilrt.cli.runtime_commands.COMMANDS", {"inspect": (lambda parser: None, handler)})
    with pytest.raises(ModuleNotFoundError):
        main(["inspect"])


def test_demo_keeps_checkpoints_to_build_offline_and_logs_library_output(tmp_path, capsys):
    kept, out = tmp_path / "checkpoints", tmp_path / "demo"
    assert main(["demo", "--tiny", "--checkpoint", MLM_NAME, "--out", str(out), "--keep-checkpoints", str(kept)]) == 0
    stdout = capsys.readouterr().out
    summary = (out / "summary.md").read_text()
    assert f"| {MLM_NAME} | fill-mask | albert |" in summary and "RANDOM-weight" in summary and "summary:" in stdout
    manifest = json.loads((out / MLM_NAME / "fp32" / "manifest.json").read_text())
    assert Path(manifest["source"]["id"]) == (kept / MLM_NAME).resolve()  # the manifest points at a checkpoint that exists

    # `distilrt build` of the kept stand-in, offline; transformers' chatter goes to the build log, not the terminal.
    assert main(["build", str(kept / MLM_NAME), "--out", str(tmp_path / "built"), "--task-samples", "4"]) == 0
    captured = capsys.readouterr()
    log = tmp_path / "built" / MLM_NAME / "build.log"
    assert f"log: {log}" in captured.out
    assert "Device set to use" not in captured.out + captured.err
    text = log.read_text()
    assert "[distilrt] verifying ONNX against PyTorch" in text
    # transformers 4 logs "Device set to use cpu" as a warning; 5 as debug, which is not shown at all
    import transformers

    if int(transformers.__version__.split(".")[0]) < 5:
        assert "Device set to use cpu" in text
        assert "Device set to use cpu" in (out / MLM_NAME / "build.log").read_text()


def test_build_log_takes_prints_logging_and_warnings_and_gives_them_back(tmp_path, capsys):
    root_handlers = logging.getLogger().handlers[:]
    path = tmp_path / "x" / "build.log"
    lines = []
    with build_log(path, lines.append) as progress:
        print("calibrator chatter")
        logging.warning("quantizer warning")
        logging.getLogger("transformers.pipelines.base").warning("Device set to use cpu")
        warnings.warn("tracer warning", UserWarning, stacklevel=1)
        progress("a stage")
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    text = path.read_text()
    for expected in ("calibrator chatter", "WARNING root: quantizer warning", "Device set to use cpu",
                     "UserWarning: tracer warning", "[distilrt] a stage"):
        assert expected in text
    assert lines == [f"build log (library output): {path}", "a stage"]
    assert logging.getLogger().handlers == root_handlers


def test_steps_print_plain_lines_off_a_terminal():
    lines = []
    with Steps(lines.append, "calibrating", 4, "inputs", every_seconds=0) as steps:
        for _ in range(4):
            steps.advance()
    assert lines == [f"  calibrating: {n}/4 inputs" for n in (1, 2, 3, 4)]
    lines.clear()
    with Steps(lines.append, "calibrating", 50, "inputs", every_seconds=3600) as steps:
        for _ in range(50):
            steps.advance()
    assert lines == ["  calibrating: 50/50 inputs"]  # only the last where the stage is quick


def test_steps_draw_a_bar_on_a_terminal(monkeypatch, capsys):
    monkeypatch.setattr(build_log_module, "to_terminal", lambda progress: True)
    lines = []
    with Steps(lines.append, "sensitivity", 3, "layers") as steps:
        for _ in range(3):
            steps.advance()
    assert lines == [] and "sensitivity" in capsys.readouterr().err


def test_a_build_that_cannot_start_leaves_no_artifacts_directory(tmp_path, capsys):
    """The build log is made on its first line: a checkpoint that does not exist leaves nothing behind."""
    assert main(["build", str(tmp_path / "missing"), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("distilrt: error: ") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()
