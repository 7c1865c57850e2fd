"""The wheel path (README: "Install from a wheel"): build the wheel, install it in a fresh venv away from the
source tree, and run the main job from there.

Offline: the wheel goes in with --no-index --no-deps, and the new venv sees this environment's packages
(numpy, tokenizers, onnxruntime, torch, transformers...) through a .pth file, appended after its own
site-packages, so `import distilrt` can only be the installed wheel. .ci/run does the same with the
dependencies resolved from the package index."""

from __future__ import annotations

import importlib.util
import os
import shutil
import site
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# What a clean clone has, less what `pip wheel` would package by mistake (a stale build/ keeps removed modules).
_NOT_SOURCE = shutil.ignore_patterns(".git", ".venv*", "artifacts", "build", "dist", "*.egg-info", "__pycache__",
                                     ".pytest_cache", ".ruff_cache")


def _dependency_paths() -> list[str]:
    """This environment's site-packages (and what their .pth files add), without the source tree."""
    paths = [p for p in sys.path if p and Path(p).is_dir() and "site-packages" in p]
    paths += site.getsitepackages()
    return [p for p in dict.fromkeys(paths) if Path(p).resolve() != ROOT]


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory):
    if importlib.util.find_spec("setuptools") is None:  # the build backend, used from this env (offline)
        pytest.skip("building the wheel offline needs setuptools in this environment (torch requires it)")
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    shutil.copytree(ROOT, source, ignore=_NOT_SOURCE)
    dist = work / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "-w", str(dist), str(source)], check=True, timeout=300)
    (wheel,) = dist.glob("distilrt-*.whl")
    env_dir = work / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-index", "--no-deps",
                    str(wheel)], check=True, timeout=300)
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             check=True, capture_output=True, text=True).stdout.strip()
    (Path(purelib) / "zz-test-dependencies.pth").write_text("\n".join(_dependency_paths()) + "\n")
    return env_dir, wheel


def _run(env_dir: Path, cwd: Path, *argv: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PATH=f"{env_dir / 'bin'}{os.pathsep}{env['PATH']}")
    return subprocess.run(list(argv), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow  # builds a wheel and runs the demo in a new interpreter
def test_the_wheel_installs_and_runs_the_demo_away_from_the_source(wheel_venv, tmp_path):
    env_dir, wheel = wheel_venv
    where = _run(env_dir, tmp_path, str(env_dir / "bin" / "python"), "-c",
                 "import distilrt, distilrt.export.assets as a; print(distilrt.__file__); print(a.ASSETS_DIR)")
    assert where.returncode == 0, where.stderr
    for line in where.stdout.split():
        assert Path(line).resolve().is_relative_to(env_dir.resolve()), f"{line} is not the installed wheel"

    version = _run(env_dir, tmp_path, "distilrt", "--version")
    assert version.returncode == 0 and version.stdout.strip() == f"distilrt {wheel.name.split('-')[1]}"

    demo = _run(env_dir, tmp_path, "distilrt", "demo", "--tiny", "--checkpoint", "distilbert-base-uncased-distilled-squad",
                "--out", "demo")
    assert demo.returncode == 0, demo.stderr[-3000:]
    assert "| distilbert-base-uncased-distilled-squad | question-answering | distilbert |" in demo.stdout
    bundle = tmp_path / "demo" / "distilbert-base-uncased-distilled-squad" / "fp32"
    answer = _run(env_dir, tmp_path, "distilrt", "run", str(bundle), "--question", "Who wrote it?",
                  "--context", "It was written by Ada Lovelace.")
    assert answer.returncode == 0 and '"answer"' in answer.stdout, answer.stderr
    assert (tmp_path / "demo" / "summary.md").is_file()


def test_the_wheel_has_the_package_data(wheel_venv):
    """The shipped configs, tokenizers and data sets (pyproject.toml's package-data) are in the wheel."""
    import zipfile

    _, wheel = wheel_venv
    names = zipfile.ZipFile(wheel).namelist()
    for expected in ("distilrt/export/assets/seed_examples.json", "distilrt/export/assets/NOTICE.md",
                     "distilrt/calib/data/NOTICE.md", "distilrt/cli/__init__.py", "distilrt/heads/__init__.py"):
        assert expected in names
    assert any(n.startswith("distilrt/export/assets/tokenizers/") for n in names)
    assert any(n.startswith("distilrt/calib/data/") and n.endswith(".gz") for n in names)
    assert not any(n.startswith(("tests/", "ci/")) for n in names)
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "distilrt = distilrt.cli:main" in entry_points



def test_the_container_recipe_installs_the_wheel_with_a_real_extra():
    """ci/tritonserver.Dockerfile cannot be built here (no Docker daemon, no nvcr.io): check what it installs."""
    import importlib.metadata
    import re

    recipe = (ROOT / "ci" / "tritonserver.Dockerfile").read_text()
    assert re.search(r"^FROM nvcr\.io/nvidia/tritonserver:\$\{TRITON_RELEASE\}-py3$", recipe, re.M)
    assert re.search(r"^ARG TRITON_RELEASE=\d\d\.\d\d$", recipe, re.M)
    extras = re.search(r"^ARG DISTILRT_EXTRAS=(\S*)$", recipe, re.M).group(1)
    optional = importlib.metadata.metadata("distilrt").get_all("Provides-Extra")
    assert all(extra in optional for extra in extras.split(",") if extra)
    assert "COPY distilrt-*.whl" in recipe and 'pip install "distilrt' not in recipe  # not on an index
