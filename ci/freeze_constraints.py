"""ci/constraints-artifacts.txt: the exact build stack the artifact job's gates were measured with.

    python ci/freeze_constraints.py            # rewrite ci/constraints-artifacts.txt from this environment
    python ci/freeze_constraints.py --check    # exit 1, naming each package that differs, if this environment
                                               # is not the one the file pins

The build stack is what a build runs: the runtime's dependencies (numpy, tokenizers) and the `export` extra
(torch, transformers, onnx, onnxruntime, sentencepiece, protobuf), with everything they require, at the
versions installed here. Gate values move with these versions (onnxruntime 1.31.1 → 1.32.0 moved them), so
the artifact job installs with `pip install -c ci/constraints-artifacts.txt ...` (.ci/run) and
ci/build_artifacts.py refuses an environment that drifted from the file. Regenerate the file in an environment
set up by the README's commands when a version is bumped on purpose, and commit it with the new figures.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

CONSTRAINTS = Path(__file__).resolve().parent / "constraints-artifacts.txt"
# The distilrt extras whose dependencies make the build stack, besides the runtime's own.
BUILD_EXTRAS = ("export",)
HEADER = """\
# The build stack the artifact job's gates were measured with (ci/freeze_constraints.py writes this file).
# .ci/run installs with `pip install -c ci/constraints-artifacts.txt ...`; ci/build_artifacts.py fails when the
# installed versions differ. Regenerate after a deliberate bump, in an environment set up as the README says:
#     python ci/freeze_constraints.py
# Local version labels (torch's +cpu) are left out: ==2.13.0 matches the CPU wheel and PyPI's alike.
"""


def build_stack(roots: Mapping[str, set[str]] | None = None) -> dict[str, str]:
    """name -> installed version of the build stack: distilrt's runtime and ``BUILD_EXTRAS`` requirements and
    everything they require in turn (with their markers evaluated here), as installed in this environment."""
    pending = [(Requirement(r), set()) for r in _distilrt_requirements()] if roots is None else \
        [(Requirement(name), set(extras)) for name, extras in roots.items()]
    found: dict[str, str] = {}
    seen: set[tuple[str, frozenset]] = set()
    while pending:
        requirement, extras = pending.pop()
        name = canonicalize_name(requirement.name)
        extras = extras | set(requirement.extras)
        if (name, frozenset(extras)) in seen:
            continue
        seen.add((name, frozenset(extras)))
        try:
            distribution = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise SystemExit(f"freeze_constraints: {name} (required by the build stack) is not installed; set up "
                             "the environment with the README's commands first") from None
        found[name] = distribution.version
        for text in distribution.requires or ():
            child = Requirement(text)
            if _applies(child, extras):
                pending.append((child, set()))
    return dict(sorted(found.items()))


def _distilrt_requirements() -> list[str]:
    """distilrt's own requirements that apply with ``BUILD_EXTRAS``, as strings without their extra markers."""
    wanted = []
    for text in metadata.requires("distilrt") or ():
        requirement = Requirement(text)
        if requirement.marker is None or any(requirement.marker.evaluate({"extra": e}) for e in BUILD_EXTRAS):
            requirement.marker = None
            wanted.append(str(requirement))
    return wanted


def _applies(requirement: Requirement, extras: set[str]) -> bool:
    """Whether a dependency applies here: its marker holds for this Python and platform and, for a dependency of
    an extra, the extra was asked for."""
    if requirement.marker is None:
        return True
    return any(requirement.marker.evaluate({"extra": extra}) for extra in (extras or {""}))


def render(pins: Mapping[str, str]) -> str:
    return HEADER + "".join(f"{name}=={Version(version).public}\n" for name, version in sorted(pins.items()))


def read_constraints(path: Path = CONSTRAINTS) -> dict[str, str]:
    """name -> pinned version of a constraints file of ``name==version`` lines; SystemExit naming a bad line."""
    if not path.is_file():
        raise SystemExit(f"the constraints file {path} does not exist; write it with python ci/freeze_constraints.py")
    pins = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        requirement = Requirement(text)
        specifiers = list(requirement.specifier)
        if len(specifiers) != 1 or specifiers[0].operator != "==" or "*" in specifiers[0].version:
            raise SystemExit(f"{path}:{number}: {line!r} is not an exact pin (name==version); regenerate the file "
                             "with python ci/freeze_constraints.py")
        pins[canonicalize_name(requirement.name)] = specifiers[0].version
    return pins


def drift(pins: Mapping[str, str], installed: Mapping[str, str | None]) -> list[str]:
    """'name installed X, pinned Y' for every pinned package whose installed version differs (a local label
    such as +cpu is not a difference); names missing from ``installed`` are looked up in this environment."""
    problems = []
    for name, pinned in sorted(pins.items()):
        version = installed[name] if name in installed else _installed(name)
        if version is None:
            problems.append(f"{name} not installed, pinned {pinned}")
        elif Version(version).public != Version(pinned).public:
            problems.append(f"{name} installed {version}, pinned {pinned}")
    return problems


def _installed(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=CONSTRAINTS)
    parser.add_argument("--check", action="store_true", help="compare this environment with --out; write nothing")
    args = parser.parse_args(argv)
    if args.check:
        problems = drift(read_constraints(args.out), {})
        for problem in problems:
            print(problem, file=sys.stderr)
        print(f"{args.out}: {'differs from this environment' if problems else 'matches this environment'}")
        return 1 if problems else 0
    tmp = args.out.with_name(args.out.name + ".tmp")  # whole or absent, like every file distilrt writes
    tmp.write_text(render(build_stack()), encoding="utf-8")
    os.replace(tmp, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
