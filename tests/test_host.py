"""The default thread count: physical cores in this process's affinity mask, from sysfs or /proc/cpuinfo, with
the logical count (and why) where neither says; ONNX Runtime sessions opened without a count get it, and the
bench and the manifests record it with its source."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from distilrt.errors import UserInputError
from distilrt.host import GIVEN, default_threads, resolve_threads

PROC_CPUINFO = Path("/proc/cpuinfo")


def _fake_sysfs(root: Path, cores: dict[int, tuple[int, int]], siblings: bool) -> Path:
    """cpu<N>/topology files for ``cores``: logical CPU -> (package, core id)."""
    for cpu, (package, core) in cores.items():
        topology = root / f"cpu{cpu}" / "topology"
        topology.mkdir(parents=True)
        (topology / "physical_package_id").write_text(f"{package}\n")
        (topology / "core_id").write_text(f"{core}\n")
        if siblings:
            same = sorted(c for c, where in cores.items() if where == (package, core))
            (topology / "thread_siblings_list").write_text(",".join(map(str, same)) + "\n")
    return root


# 2 packages x 2 cores x 2 hardware threads: CPUs 0-3 on package 0, 4-7 on package 1; core ids repeat per package.
SMT_MACHINE = {0: (0, 0), 1: (0, 1), 2: (0, 0), 3: (0, 1), 4: (1, 0), 5: (1, 1), 6: (1, 0), 7: (1, 1)}


@pytest.mark.parametrize("siblings", [True, False], ids=["thread_siblings_list", "package-and-core-id"])
def test_counts_physical_cores_of_a_made_up_smt_machine(tmp_path, siblings):
    sysfs = _fake_sysfs(tmp_path, SMT_MACHINE, siblings)
    threads = default_threads(cpus=range(8), sysfs=sysfs, cpuinfo=tmp_path / "absent")
    assert (threads.count, threads.source) == (4, "physical cores (4 of 8 logical)")


def test_counts_only_the_cores_the_affinity_mask_allows(tmp_path):
    sysfs = _fake_sysfs(tmp_path, SMT_MACHINE, siblings=True)
    # Both hardware threads of one core, and one of another core on the second package.
    assert default_threads(cpus={0, 2, 5}, sysfs=sysfs, cpuinfo=tmp_path / "absent").count == 2


def test_falls_back_to_cpuinfo_then_to_logical_cpus_saying_why(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("".join(f"processor\t: {cpu}\nphysical id\t: {package}\ncore id\t\t: {core}\n\n"
                               for cpu, (package, core) in SMT_MACHINE.items()))
    no_sysfs = tmp_path / "no-sysfs"
    assert default_threads(cpus=range(8), sysfs=no_sysfs, cpuinfo=cpuinfo).count == 4

    arm_like = tmp_path / "cpuinfo-arm"  # most ARM kernels write no core ids
    arm_like.write_text("processor\t: 0\nBogoMIPS\t: 50.00\n\nprocessor\t: 1\nBogoMIPS\t: 50.00\n")
    threads = default_threads(cpus=[0, 1], sysfs=no_sysfs, cpuinfo=arm_like)
    assert threads.count == 2
    assert threads.source.startswith("logical CPUs (2): physical cores unknown")
    assert "no-sysfs" in threads.source and "no core id" in threads.source


def _cores_from_proc_cpuinfo(cpus) -> int | None:
    """The same count as distilrt.host, done another way: regular expressions over the whole file."""
    text = PROC_CPUINFO.read_text()
    processors = [int(n) for n in re.findall(r"^processor\s*:\s*(\d+)", text, re.M)]
    packages = re.findall(r"^physical id\s*:\s*(\d+)", text, re.M)
    core_ids = re.findall(r"^core id\s*:\s*(\d+)", text, re.M)
    if not core_ids or len(core_ids) != len(processors) or len(packages) != len(processors):
        return None
    return len({(packages[i], core_ids[i]) for i, cpu in enumerate(processors) if cpu in cpus})


def test_this_machine_agrees_with_proc_cpuinfo():
    if not PROC_CPUINFO.is_file() or not hasattr(os, "sched_getaffinity"):
        pytest.skip("needs Linux: /proc/cpuinfo and sched_getaffinity")
    cpus = os.sched_getaffinity(0)
    expected = _cores_from_proc_cpuinfo(cpus)
    if expected is None:
        pytest.skip("/proc/cpuinfo here names no physical and core ids (not x86): nothing to compare with")
    threads = default_threads()
    assert threads.count == expected
    assert threads.source == f"physical cores ({expected} of {len(cpus)} logical)"


def test_a_pinned_process_counts_its_own_cores():
    if not hasattr(os, "sched_setaffinity"):
        pytest.skip("needs sched_setaffinity (Linux) to pin a process")
    cpu = min(os.sched_getaffinity(0))
    code = (f"import os; os.sched_setaffinity(0, {{{cpu}}}); from distilrt.host import default_threads; "
            "t = default_threads(); print(t.count, t.source, sep='|')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "1|physical cores (1 of 1 logical)"


def test_resolve_threads_keeps_a_given_count_and_refuses_bad_ones():
    assert resolve_threads(3).to_dict() == {"threads": 3, "threads_source": GIVEN}
    assert resolve_threads(None) == default_threads()
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(UserInputError, match="intra_op_num_threads must be a positive integer"):
            resolve_threads(bad, name="intra_op_num_threads")


def _tiny_onnx(path: Path) -> Path:
    onnx = pytest.importorskip("onnx", reason="builds a one-node graph to open")
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["input_ids"], ["out"])], "g",
                              [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["b", "s"])],
                              [helper.make_tensor_value_info("out", TensorProto.INT64, ["b", "s"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_onnxruntime_sessions_default_to_physical_cores(tmp_path):
    pytest.importorskip("onnxruntime", reason="opens an ONNX Runtime session")
    from distilrt.backends import open_backend, run_settings

    path = _tiny_onnx(tmp_path / "m.onnx")
    expected = default_threads()
    with open_backend("onnxruntime", path) as model:
        assert model._session.get_session_options().intra_op_num_threads == expected.count
        assert run_settings(model) == {"backend": "onnxruntime", "intra_op_num_threads": expected.count,
                                       "threads_source": expected.source}
    with open_backend("onnxruntime", path, intra_op_num_threads=1) as model:
        assert model._session.get_session_options().intra_op_num_threads == 1
        assert run_settings(model)["threads_source"] == GIVEN
    with pytest.raises(UserInputError, match="intra_op_num_threads"):
        open_backend("onnxruntime", path, intra_op_num_threads=0)


def test_bench_config_resolves_threads_with_their_source():
    from distilrt.bench.runner import BenchConfig

    expected = default_threads()
    config = BenchConfig(references=())
    assert (config.resolved_threads, config.threads_source) == (expected.count, expected.source)
    assert (BenchConfig(threads=3).resolved_threads, BenchConfig(threads=3).threads_source) == (3, GIVEN)
