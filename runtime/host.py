"""How many threads a CPU backend runs by default: one per physical core this process may use.

A core's second hardware thread (SMT) shares its vector units, so on the matrix products an encoder spends its
time in it adds contention, not throughput; and a process pinned to some CPUs (taskset, a container's cpuset)
must not size its pool by the whole machine. So the default is the number of distinct physical cores among the
CPUs in this process's affinity mask, read from sysfs, else /proc/cpuinfo; where neither says, the logical CPU
count, with the reason in ``Threads.source``. Standard library only: the lean runtime's backends use it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from distilrt.errors import UserInputError

SYSFS_CPU = Path("/sys/devices/system/cpu")
CPUINFO = Path("/proc/cpuinfo")
GIVEN = "given"


@dataclass(frozen=True)
class Threads:
    """A thread count and where it came from: "given", "physical cores (N of M logical)", or the fallback."""

    count: int
    source: str

    def to_dict(self) -> dict:
        return {"threads": self.count, "threads_source": self.source}


def resolve_threads(given: int | None = None, *, name: str = "threads") -> Threads:
    """``given`` if it is set (a positive integer, else UserInputError naming ``name``), else the default."""
    if given is None:
        return default_threads()
    if isinstance(given, bool) or not isinstance(given, int) or given < 1:
        raise UserInputError(f"{name} must be a positive integer, or None for one thread per physical core; "
                             f"got {given!r}")
    return Threads(int(given), GIVEN)


def default_threads(*, cpus: Iterable[int] | None = None, sysfs: Path = SYSFS_CPU,
                    cpuinfo: Path = CPUINFO) -> Threads:
    """The physical cores among ``cpus`` (default: this process's affinity mask). ``sysfs`` and ``cpuinfo`` are
    parameters so that other topologies can be checked against made-up files."""
    logical = available_cpus() if cpus is None else sorted(set(cpus))
    cores, sysfs_problem = _cores_from_sysfs(sysfs, logical)
    cpuinfo_problem = None
    if cores is None:
        cores, cpuinfo_problem = _cores_from_cpuinfo(cpuinfo, logical)
    if cores:
        return Threads(cores, f"physical cores ({cores} of {len(logical)} logical)")
    return Threads(len(logical), f"logical CPUs ({len(logical)}): physical cores unknown "
                                 f"({sysfs_problem}; {cpuinfo_problem})")


def available_cpus() -> list[int]:
    """The logical CPUs this process may run on: its affinity mask where the OS has one, else all of them."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def _cores_from_sysfs(sysfs: Path, cpus: list[int]) -> tuple[int | None, str | None]:
    """Distinct cores among ``cpus``: a core is the set of its hardware threads (core_cpus_list, called
    thread_siblings_list before Linux 5.7), or where neither file exists (package, core_id)."""
    cores = set()
    for cpu in cpus:
        topology = sysfs / f"cpu{cpu}" / "topology"
        try:
            siblings = _first_readable(topology / "core_cpus_list", topology / "thread_siblings_list")
            core = siblings if siblings is not None else (
                (topology / "physical_package_id").read_text().strip(), (topology / "core_id").read_text().strip())
        except OSError as e:
            return None, f"{topology} unreadable: {e.strerror or e}"
        cores.add(core)
    return len(cores), None


def _first_readable(*paths: Path) -> str | None:
    for path in paths:
        try:
            return path.read_text().strip()
        except FileNotFoundError:
            continue
    return None


def _cores_from_cpuinfo(cpuinfo: Path, cpus: list[int]) -> tuple[int | None, str | None]:
    """Distinct (physical id, core id) among ``cpus`` in /proc/cpuinfo (x86 writes them; most ARM kernels not)."""
    try:
        text = cpuinfo.read_text()
    except OSError as e:
        return None, f"{cpuinfo} unreadable: {e.strerror or e}"
    by_cpu = {}
    for block in text.split("\n\n"):
        fields = dict(line.split(":", 1) for line in block.splitlines() if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        if "processor" in fields and fields["processor"].isdigit():
            by_cpu[int(fields["processor"])] = (fields.get("physical id"), fields.get("core id"))
    missing = [cpu for cpu in cpus if cpu not in by_cpu or by_cpu[cpu][1] is None]
    if missing:
        return None, f"{cpuinfo} gives no core id for CPUs {missing}"
    return len({by_cpu[cpu] for cpu in cpus}), None
