"""ci/constraints-artifacts.txt pins the build stack the artifact job's gates were measured with: exact pins for
the tools that move gate values, within pyproject's ranges and .ci/run's set-up commands, in the form
ci/freeze_constraints.py writes; and drift from it is told apart from a mere local version label."""

from __future__ import annotations

import importlib.util
import shlex
from importlib import metadata
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
CONSTRAINTS = ROOT / "ci" / "constraints-artifacts.txt"
# The tools whose versions moved gate values (onnxruntime 1.31.1 -> 1.32.0) or write the model bytes.
MUST_PIN = ("onnxruntime", "onnx", "torch", "transformers", "tokenizers", "numpy", "protobuf", "sentencepiece")


def _freeze():
    spec = importlib.util.spec_from_file_location("freeze_constraints", ROOT / "ci" / "freeze_constraints.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


freeze = _freeze()


def test_the_build_tools_are_pinned_exactly():
    pins = freeze.read_constraints(CONSTRAINTS)  # refuses any line that is not name==version
    assert set(MUST_PIN) <= set(pins), f"not pinned: {sorted(set(MUST_PIN) - set(pins))}"
    lines = {canonicalize_name(line.split("==")[0]): line for line in CONSTRAINTS.read_text().splitlines()
             if line and not line.startswith("#")}
    for name in MUST_PIN:
        assert lines[name] == f"{name}=={pins[name]}"


def test_the_file_is_what_freeze_constraints_writes():
    """Sorted, canonical names, public versions, the header that says how to regenerate it: not hand-edited."""
    assert CONSTRAINTS.read_text(encoding="utf-8") == freeze.render(freeze.read_constraints(CONSTRAINTS))


def _pyproject_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    texts = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        texts += extra
    return [Requirement(text) for text in texts]


def test_pins_are_within_pyprojects_ranges():
    pins = freeze.read_constraints(CONSTRAINTS)
    checked = set()
    for requirement in _pyproject_requirements():
        name = canonicalize_name(requirement.name)
        if name in pins:
            assert requirement.specifier.contains(pins[name], prereleases=True), \
                f"{name}=={pins[name]} is outside pyproject.toml's {requirement}"
            checked.add(name)
    assert {"onnxruntime", "onnx", "torch", "transformers"} <= checked


def test_ci_sets_up_the_default_environment_with_the_constraints_and_they_satisfy_its_commands():
    pins = freeze.read_constraints(CONSTRAINTS)
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    default_venv = script.split("deactivate", 1)[0]  # after it: the transformers 5 venv, unconstrained on purpose
    installs = [shlex.split(line) for line in default_venv.splitlines() if line.startswith("pip install")]
    assert len(installs) == 2, installs
    checked = set()
    for words in installs:
        assert "-c" in words and words[words.index("-c") + 1] == "ci/constraints-artifacts.txt", words
        skip = {words.index(flag) + 1 for flag in ("-c", "-e", "--extra-index-url", "--index-url") if flag in words}
        for index, word in enumerate(words[2:], 2):
            if word.startswith("-") or index in skip:
                continue
            requirement = Requirement(word)
            name = canonicalize_name(requirement.name)
            assert requirement.specifier.contains(pins[name]), f"{word} in .ci/run refuses the pinned {pins[name]}"
            checked.add(name)
    assert checked == {"torch", "transformers"}


def test_drift_names_each_difference_and_ignores_local_labels():
    pins = {"onnxruntime": "1.32.0", "torch": "2.13.0", "numpy": "1.26.4"}
    assert freeze.drift(pins, {"onnxruntime": "1.32.0", "torch": "2.13.0+cpu", "numpy": "1.26.4"}) == []
    assert freeze.drift(pins, {"onnxruntime": "1.31.1", "torch": "2.13.0+cpu", "numpy": None}) == [
        "numpy not installed, pinned 1.26.4", "onnxruntime installed 1.31.1, pinned 1.32.0"]


def test_a_loose_or_missing_constraints_file_is_refused_naming_the_fix(tmp_path):
    loose = tmp_path / "loose.txt"
    loose.write_text("# header\nonnxruntime>=1.31\n")
    with pytest.raises(SystemExit, match=r"loose.txt:2: 'onnxruntime>=1.31' is not an exact pin.*freeze_constraints"):
        freeze.read_constraints(loose)
    with pytest.raises(SystemExit, match="does not exist; write it with python ci/freeze_constraints.py"):
        freeze.read_constraints(tmp_path / "absent.txt")


def test_build_stack_follows_requirements_to_their_installed_versions():
    pytest.importorskip("onnx", reason="walks onnx's installed requirements")
    stack = freeze.build_stack({"onnx": set()})
    assert {"onnx", "numpy", "protobuf"} <= set(stack)
    assert all(version == metadata.version(name) for name, version in stack.items())
