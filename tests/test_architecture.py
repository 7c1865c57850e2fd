"""The import rules of docs/design.md#layout-and-import-rules, checked on the source and in a real process.

The import graph is read from the source with ``ast`` (every ``import`` and ``from ... import``, at module level
or inside a function), so a new edge fails here before it ships:
- no cycle between the packages, nor between modules at import time;
- runtime imports none of export, calib, bench, cli; calib imports none of export, bench, cli;
- bench imports export only inside functions (the PyTorch reference's checkpoint), never at module level;
- serve imports the runtime only (none of export, calib, bench, cli), and nothing but cli imports serve;
- nothing but cli imports cli.
Then the benchmark worker runs a distilrt runner with torch and transformers made unimportable.
"""

from __future__ import annotations

import argparse
import ast
import json
import subprocess
import sys
import textwrap
from collections import defaultdict
from pathlib import Path

import pytest
import tomllib
from conftest import BUILD_TIME_PACKAGES

ROOT = Path(__file__).resolve().parents[1]


def _package_dirs() -> dict[str, Path]:
    """Package name -> folder, as pyproject.toml maps them (the folders are not named like the packages)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return {name: ROOT / folder for name, folder in config["tool"]["setuptools"]["package-dir"].items()}


def _modules() -> dict[str, Path]:
    """Every module of the distribution by dotted name."""
    modules = {}
    for package, folder in _package_dirs().items():
        for path in folder.glob("*.py"):
            modules[package if path.stem == "__init__" else f"{package}.{path.stem}"] = path
    return modules


MODULES = _modules()


def _imports(path: Path, module: str) -> list[tuple[str, bool]]:
    """(imported distilrt module, at module level?) for every import in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    # Module level: statements of the module body itself. Imports in functions, and under `if TYPE_CHECKING:`,
    # do not run when the module is imported.
    top_level = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: use absolute imports (from distilrt...)"
            # `from distilrt.x import y` imports the module distilrt.x.y when y is one
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module
                     for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in MODULES:  # a name inside a module: the module itself
                name = name.rpartition(".")[0]
            if name and name != module:
                found.append((name, id(node) in top_level))
    return found


EDGES = {module: _imports(path, module) for module, path in MODULES.items()}

# The top-level folders as packages: what each module belongs to.
LAYERS = {"distilrt.export": "export", "distilrt.calib": "calib", "distilrt.bench": "bench", "distilrt.cli": "cli",
          "distilrt.serve": "serve"}


def layer(module: str) -> str:
    for prefix, name in LAYERS.items():
        if module == prefix or module.startswith(prefix + "."):
            return name
    return "runtime"


FORBIDDEN = {  # importer layer -> layers it must never import, lazily or not
    "runtime": {"export", "calib", "bench", "cli", "serve"},
    "calib": {"export", "bench", "cli", "serve"},
    "export": {"bench", "cli", "serve"},
    "bench": {"cli", "serve"},
    "serve": {"export", "calib", "bench", "cli"},
}
MODULE_LEVEL_FORBIDDEN = {"bench": {"export"}}  # bench may reach export only inside functions


def test_the_graph_reads_every_package():
    assert {layer(m) for m in MODULES} == {"runtime", "calib", "export", "bench", "cli", "serve"}
    assert "distilrt.bench.worker" in MODULES and "distilrt.heads.question_answering" in MODULES
    assert any(target == "distilrt.calib.sets" for target, _ in EDGES["distilrt.export.derived_bundles"])


def test_no_forbidden_edge():
    bad = [f"{source} -> {target}" for source, targets in EDGES.items() for target, _ in targets
           if layer(target) in FORBIDDEN.get(layer(source), set())]
    bad += [f"{source} -> {target} (at module level)" for source, targets in EDGES.items() for target, top in targets
            if top and layer(target) in MODULE_LEVEL_FORBIDDEN.get(layer(source), set())]
    assert not bad, "imports against docs/design.md#layout-and-import-rules:\n" + "\n".join(bad)


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle in the graph as a path, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_package_cycle():
    graph = defaultdict(set)
    for source, targets in EDGES.items():
        graph[layer(source)].update(layer(t) for t, _ in targets if layer(t) != layer(source))
    assert _cycle(graph) is None, f"package cycle: {' -> '.join(_cycle(graph))}"


def test_no_module_cycle_at_import_time():
    graph = {source: {t for t, top in targets if top} for source, targets in EDGES.items()}
    cycle = _cycle(graph)
    assert cycle is None, f"modules import each other at import time: {' -> '.join(cycle)}"


def test_the_cycle_finder_finds_cycles():
    """The checks above prove nothing if the finder cannot see a cycle."""
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


BLOCKED = BUILD_TIME_PACKAGES
WORKER = textwrap.dedent(
    """
    import importlib.abc, json, runpy, sys

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {blocked!r}:
                raise ImportError(f"{{name}} is blocked in this test")
            return None

    sys.meta_path.insert(0, Block())
    sys.argv = ["worker", sys.argv[1], sys.argv[2]]
    try:
        runpy.run_module("distilrt.bench.worker", run_name="__main__")
    except SystemExit:
        pass
    print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {blocked!r})))
    """
)


def test_the_bench_worker_runs_a_distilrt_runner_without_torch(tiny_bundles, tmp_path):
    bundle = tiny_bundles["distilbert-base-uncased-distilled-squad"]
    spec = {"runner": "distilrt", "label": "lean", "bundle": str(bundle.path), "task": bundle.task,
            "input_names": list(bundle.input_names), "vocab_size": bundle.manifest.vocab_size, "threads": 1,
            "warmup": 0, "repeats": 1, "max_seconds": 5.0, "min_runs": 1, "seed": 0,
            "cells": [{"mode": "model", "batch": 1, "sequence": 16, "inputs": None},
                      {"mode": "end_to_end", "batch": 1, "sequence": 64,
                       "inputs": [{"question": "Who wrote it?", "context": "Ada Lovelace wrote it in 1843."}]}]}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    completed = subprocess.run([sys.executable, "-c", WORKER.format(blocked=BLOCKED), str(tmp_path / "spec.json"),
                                str(tmp_path / "out.json")], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout.strip().splitlines()[-1]) == []
    result = json.loads((tmp_path / "out.json").read_text())
    assert result["skipped_reason"] is None, result
    assert [cell["mode"] for cell in result["cells"]] == ["model", "end_to_end"]
    assert all(cell["latency_ms"]["p50"] > 0 for cell in result["cells"])


def test_serve_imports_triton_only_when_used():
    """The serve modules load with the runtime alone: tritonclient and pytriton are imported where used, and
    build-time packages never."""
    blocked = (*BUILD_TIME_PACKAGES, "tritonclient", "pytriton")
    code = ("import sys, distilrt, distilrt.serve.server, distilrt.serve.client, distilrt.serve.repository, "
            "distilrt.serve.python_model, distilrt.cli.serve_commands; "
            f"print([m for m in sys.modules if m.split('.')[0] in {blocked!r}])")
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "[]"


@pytest.mark.parametrize("runner", ["pytorch"])
def test_the_worker_blocker_really_blocks(runner, tmp_path):
    """A reference runner needs torch: under the same blocker it must fail to load, or the test above proves
    nothing."""
    spec = {"runner": runner, "label": "blocked", "checkpoint": str(tmp_path), "task": "fill-mask", "threads": 1,
            "cells": []}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    completed = subprocess.run([sys.executable, "-c", WORKER.format(blocked=BLOCKED), str(tmp_path / "spec.json"),
                                str(tmp_path / "out.json")], capture_output=True, text=True, timeout=120)
    result = json.loads((tmp_path / "out.json").read_text())
    assert "blocked in this test" in result["skipped_reason"], (result, completed.stderr)


def test_one_list_of_tasks():
    """The runtime's TASKS is the list; the specs register one TaskSpec per entry and the CLI offers exactly it."""
    from distilrt.cli.export_commands import add_build_arguments
    from distilrt.export.specs import TASKS as TASK_SPECS
    from distilrt.manifest import TASKS

    assert tuple(TASK_SPECS) == TASKS
    parser = argparse.ArgumentParser()
    add_build_arguments(parser)
    (task_option,) = [a for a in parser._actions if a.dest == "task"]
    assert tuple(task_option.choices) == TASKS


def test_every_design_reference_points_at_a_section():
    """Code cites docs/design.md#<anchor>; each anchor must be a heading of docs/design.md."""
    import re

    headings = re.findall(r"^#{2,3} (.+)$", (ROOT / "docs/design.md").read_text(encoding="utf-8"), re.M)
    anchors = {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-") for h in headings}
    cited = {}
    for folder in ("runtime", "calib", "export", "bench", "cli", "serve", "ci", "tests"):
        for path in (ROOT / folder).rglob("*.py"):
            for anchor in re.findall(r"docs/design\.md#([a-z0-9-]+)", path.read_text(encoding="utf-8")):
                cited.setdefault(anchor, path.relative_to(ROOT))
            assert not re.search(r"(?<![/\w])design\.md(?!#)", path.read_text(encoding="utf-8")), \
                f"{path}: cite docs/design.md#<section>, not the page alone"
    assert cited, "no reference found: the pattern is wrong"
    missing = {anchor: str(path) for anchor, path in cited.items() if anchor not in anchors}
    assert not missing, f"docs/design.md has no section for {missing}"
