"""The Python backend's stub processes of a tritonserver, and the /dev/shm regions it shares with them.

Each model instance of the Python backend is a ``triton_python_backend_stub`` child of tritonserver. When one
dies, Triton does not start it again in a way clients can see: every request to that model gets 500 "Stub
process is not healthy" while /v2/health/ready and the model's ready endpoint keep answering 200 (measured
with pytriton 0.7's tritonserver), and a graceful shutdown then waits its whole exit timeout. So `distilrt
serve` watches the stubs itself (server.serve) and stops when one dies, for its supervisor to restart it.
Linux /proc only, like the Python backend itself.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

STUB_NAME = "triton_python_backend_stub"
SHM_PREFIX = "triton_python_backend_shm_region_"  # the Python backend's region names under /dev/shm
SHM_DIR = Path("/dev/shm")


@dataclass(frozen=True)
class Stub:
    pid: int
    start_time: int  # clock ticks after boot (/proc/PID/stat field 22): with the pid, one process even if reused
    model: str  # the model this stub runs (the repository directory its model.py is in)

    def alive(self) -> bool:
        if self.pid <= 0:  # a stub that should be there and was not
            return False
        stat = _stat(self.pid)
        return stat is not None and stat[2] not in ("Z", "X") and int(stat[21]) == self.start_time


def _stat(pid: int) -> list[str] | None:
    """/proc/PID/stat's fields from the state on (fields 3...), or None if there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return ["", ""] + text.rsplit(")", 1)[1].split()  # the name (field 2) may hold spaces and parentheses


def backend_stubs(server_pid: int, repository: Path) -> list[Stub]:
    """The live stubs that tritonserver ``server_pid`` started for the models of ``repository``."""
    stubs = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        stat = _stat(int(proc.name))
        if stat is None or int(stat[3]) != server_pid or stat[2] in ("Z", "X"):
            continue
        try:
            args = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if not args or Path(args[0]).name != STUB_NAME:
            continue
        stubs.append(Stub(int(proc.name), int(stat[21]), _model_of(args, Path(repository))))
    return stubs


def _model_of(args: list[str], repository: Path) -> str:
    """The model directory named by the stub's model.py argument (REPOSITORY/MODEL/VERSION/model.py)."""
    for arg in args[1:]:
        path = Path(arg)
        if path.is_relative_to(repository) and len(path.relative_to(repository).parts) > 1:
            return path.relative_to(repository).parts[0]
    return "?"


def shm_regions(pids: list[int]) -> set[str]:
    """The Python backend's /dev/shm regions these processes have mapped (names, without the directory)."""
    regions = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
                fields = line.split(maxsplit=5)  # address perms offset dev inode [path]
                path = fields[5].removesuffix(" (deleted)") if len(fields) == 6 else ""
                if path.startswith(f"{SHM_DIR}/{SHM_PREFIX}"):
                    regions.add(Path(path).name)
    return regions


def remove_regions(names: set[str]) -> list[str]:
    """Unlink these regions where they are still there (a killed server cannot); the names removed."""
    removed = []
    for name in sorted(names):
        if not name.startswith(SHM_PREFIX) or "/" in name:
            continue
        with contextlib.suppress(FileNotFoundError):
            (SHM_DIR / name).unlink()
            removed.append(name)
    return removed
