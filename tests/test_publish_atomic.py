"""Publishing a bundle over an older one: a reader finds the old bundle or the new one at every instant, even when
the publishing process is SIGKILLed at its worst moment; the next publish removes what a killed one left."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import distilrt
from distilrt import files
from distilrt.errors import CapabilityError

OLD_QA = Path(__file__).parent / "data" / "bundles-0.1.0" / "distilbert-base-uncased-distilled-squad" / "fp32"

# Publishes SOURCE at DESTINATION, stopping (until killed) at POINT: after the staged bundle is complete, or right
# after the exchange step, when the old bundle sits under the staging name and nothing is cleaned up yet.
PUBLISHER = """
import shutil, sys, time
from pathlib import Path
from distilrt import files
destination, source, point, marker = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
def stop(*args):
    marker.write_text(point)
    time.sleep(600)
if point == "after-exchange":
    files._after_exchange = stop
with files.staging_dir(destination) as staging:
    shutil.copytree(source, staging, dirs_exist_ok=True)
    if point == "staged":
        stop()
    files.replace_dir(staging, destination)
"""


def _version(tmp_path: Path, label: str) -> Path:
    """A real bundle whose manifest says ``label`` (tools.label: the manifest is not among the hashed files)."""
    bundle = shutil.copytree(OLD_QA, tmp_path / "versions" / label)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["tools"]["label"] = label
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    return bundle


def _label(path: Path) -> str:
    return distilrt.read_bundle(path, check_hashes=False).manifest.tools["label"]


class Reader(threading.Thread):
    """Reads the destination in a loop; every failure is kept."""

    def __init__(self, path: Path):
        super().__init__(daemon=True)
        self.path, self.reads, self.failures, self.stopped = path, 0, [], threading.Event()

    def run(self):
        while not self.stopped.is_set():
            try:
                distilrt.read_bundle(self.path, check_hashes=False)
                self.reads += 1
            except Exception as e:
                self.failures.append(repr(e))


def _leftovers(destination: Path) -> list[str]:
    return sorted(p.name for p in destination.parent.iterdir() if p.name.startswith(f".{destination.name}-"))


def _publish_and_kill(destination: Path, source: Path, point: str, tmp_path: Path) -> None:
    marker = tmp_path / f"stopped-{point}"
    process = subprocess.Popen([sys.executable, "-c", PUBLISHER, str(destination), str(source), point, str(marker)])
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert process.poll() is None, "the publisher exited before its stop point"
            assert time.monotonic() < deadline, "the publisher never reached its stop point"
            time.sleep(0.01)
        distilrt.read_bundle(destination)  # at the stop point itself, with every hash checked
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()


@pytest.mark.parametrize("point, label_after", [("after-exchange", "new"), ("staged", "old")])
def test_a_publish_killed_at_its_worst_moment_leaves_a_readable_bundle(tmp_path, point, label_after):
    destination = tmp_path / "artifacts" / "bundle"
    shutil.copytree(_version(tmp_path, "old"), destination)
    new = _version(tmp_path, "new")
    reader = Reader(destination)
    reader.start()
    _publish_and_kill(destination, new, point, tmp_path)
    time.sleep(0.2)
    reader.stopped.set()
    reader.join()
    assert reader.failures == [] and reader.reads > 0
    assert _label(destination) == label_after
    assert [name.rpartition("-")[0] for name in _leftovers(destination)] == [".bundle-staging"]  # what it left

    with files.staging_dir(destination) as staging:  # the next publish of that destination cleans up
        shutil.copytree(_version(tmp_path, "next"), staging, dirs_exist_ok=True)
        files.replace_dir(staging, destination)
    assert _leftovers(destination) == []
    assert _label(destination) == "next"
    distilrt.read_bundle(destination)


def test_a_live_build_is_not_cleaned_up_by_a_concurrent_one(tmp_path):
    destination = tmp_path / "artifacts" / "bundle"
    marker = tmp_path / "stopped"
    process = subprocess.Popen([sys.executable, "-c", PUBLISHER, str(destination), str(_version(tmp_path, "a")),
                                "staged", str(marker)])
    try:
        while not marker.exists():
            assert process.poll() is None
            time.sleep(0.01)
        (live,) = _leftovers(destination)
        with files.staging_dir(destination) as staging:
            shutil.copytree(_version(tmp_path, "b"), staging, dirs_exist_ok=True)
            files.replace_dir(staging, destination)
        assert _leftovers(destination) == [live]  # still locked by its live process: kept
        assert distilrt.read_bundle(destination / ".." / live)  # and whole
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    with files.staging_dir(destination):
        pass
    assert _leftovers(destination) == []  # its process is gone: removed


def test_without_exchange_the_bundle_is_a_symlink_replaced_in_one_rename(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "_renameat2", lambda: None)
    destination = tmp_path / "artifacts" / "bundle"
    for label in ("one", "two"):
        with files.staging_dir(destination) as staging:
            shutil.copytree(_version(tmp_path, label), staging, dirs_exist_ok=True)
            files.replace_dir(staging, destination)
        assert destination.is_symlink() and _label(destination) == label
    assert _leftovers(destination) == [os.readlink(destination)]  # the one version in use; "one" was removed
    distilrt.read_bundle(destination)


def test_without_exchange_a_real_directory_is_refused_not_replaced_with_a_window(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "_renameat2", lambda: None)
    destination = tmp_path / "artifacts" / "bundle"
    shutil.copytree(_version(tmp_path, "old"), destination)
    with pytest.raises(CapabilityError, match="cannot be replaced atomically"):
        with files.staging_dir(destination) as staging:
            shutil.copytree(_version(tmp_path, "new"), staging, dirs_exist_ok=True)
            files.replace_dir(staging, destination)
    assert _label(destination) == "old" and _leftovers(destination) == []
