"""`distilrt bench` on tiny bundles: well-formed JSON with every cell, the PyTorch reference and the ratios.
No test asserts a speed: the figures are checked for shape and consistency only."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import MLM_NAME, QA_NAME

from distilrt.bench.inputs import mlm_texts, qa_examples
from distilrt.bench.runner import (
    BENCH_SCHEMA,
    BenchConfig,
    add_ratios,
    bench_bundles,
    optimum_installed,
    reference_checkpoint,
)
from distilrt.bench.worker import time_calls
from distilrt.calib.synthetic import full_feed
from distilrt.cli import main
from distilrt.errors import DistilrtError, UserInputError
from distilrt.files import sha256_file
from distilrt.tokenization import load_tokenizer

QA, MLM = QA_NAME, MLM_NAME
OPTIMUM_INSTALLED = optimum_installed()


@pytest.mark.slow  # a benchmark with the PyTorch reference
def test_bench_cli_writes_every_cell_with_reference_and_ratios(tiny_bundles, tmp_path, capsys):
    out = tmp_path / "bench.json"
    bundles = [str(tiny_bundles[name].bundle) for name in (QA, MLM)]
    argv = ["bench", *bundles, "--batch", "1", "2", "--sequence", "16", "32", "--warmup", "1", "--repeats", "3",
            "--threads", "1", "--json", str(out)]
    assert main(argv) == 0
    stdout = capsys.readouterr().out
    assert "| runner | variant | mode |" in stdout and f"results: {out}" in stdout

    bench = json.loads(out.read_text())
    assert bench["schema"] == BENCH_SCHEMA
    assert {"platform", "cpu", "cores", "memory_gb"} <= set(bench["machine"])
    assert bench["settings"]["threads"] == 1 and bench["settings"]["repeats"] == 3
    assert "VmHWM" in bench["memory_note"] and bench["tools"]["onnxruntime"]
    assert [b["variant"] for b in bench["bundles"]] == ["fp32", "fp32"]
    assert all(b["verification"]["passed"] for b in bench["bundles"])

    cells = {(mode, batch, sequence) for mode in ("model", "end_to_end") for batch in (1, 2) for sequence in (16, 32)}
    for name in (QA, MLM):
        rows = [r for r in bench["results"] if r["checkpoint"] == name]
        by_runner = {runner: [r for r in rows if r["runner"] == runner] for runner in ("pytorch", "optimum", "distilrt")}
        for runner in ("pytorch", "distilrt"):
            assert {(r["mode"], r["batch"], r["sequence"]) for r in by_runner[runner]} == cells
            for row in by_runner[runner]:
                latency = row["latency_ms"]
                assert row["skipped_reason"] is None and row["repeats"] == 3
                assert latency["min"] <= latency["p50"] <= latency["p90"] <= latency["p99"]
                assert row["throughput_seq_per_s"] > 0 and row["peak_rss_mb"] > 0
        assert all(r["ratios"]["speedup_vs_pytorch"] > 0 for r in by_runner["distilrt"])
        assert all(r["backend"] == "onnxruntime" and r["bundle"] for r in by_runner["distilrt"])
        assert all(r["checkpoint_matches_bundle"] for r in by_runner["pytorch"])
        # Each runner's memory is its own process's: the lean runtime never imports torch, so it stays below the
        # PyTorch pipeline's (and neither reports the size of the test process that started them).
        assert max(r["peak_rss_mb"] for r in by_runner["distilrt"]) < min(r["peak_rss_mb"] for r in by_runner["pytorch"])
        assert {(r["mode"], r["batch"], r["sequence"]) for r in by_runner["optimum"]} == cells
        if OPTIMUM_INSTALLED:
            assert all(r["latency_ms"] and r["backend"] == "onnxruntime (optimum)" for r in by_runner["optimum"])
            assert all(r["ratios"]["speedup_vs_optimum"] > 0 for r in by_runner["distilrt"])
        else:
            assert all(r["latency_ms"] is None and "not installed" in r["skipped_reason"] for r in by_runner["optimum"])


def test_a_bundle_that_cannot_run_here_and_too_long_sequences_are_skipped_with_reasons(tiny_bundles, tmp_path):
    source = tiny_bundles[QA].bundle
    gpu_only = _copy_with_manifest(source, tmp_path / "gpu-only", lambda m: m["model"].update(backend="onnxruntime-gpu"))
    short = _copy_with_manifest(source, tmp_path / "short", lambda m: m["shape_profile"].update(opt_sequence=16, max_sequence=20))
    messages = []
    config = BenchConfig(batches=(1,), sequences=(16, 32), warmup=0, repeats=1, threads=1, modes=("model",),
                         references=())
    bench = bench_bundles([gpu_only, short], config, progress=messages.append)
    assert (bench["settings"]["threads"], bench["settings"]["threads_source"]) == (1, "given")

    rows = {(r["bundle"], r["sequence"]): r for r in bench["results"]}
    assert len(rows) == 4
    for sequence in (16, 32):
        skipped = rows[(str(gpu_only), sequence)]
        assert skipped["latency_ms"] is None and "CUDAExecutionProvider" in skipped["skipped_reason"]
        assert not skipped["failed"]
    assert rows[(str(short), 16)]["latency_ms"]["p50"] > 0
    assert rows[(str(short), 16)]["ratios"] == {"speedup_vs_pytorch": None, "speedup_vs_optimum": None}
    assert "longer than 20" in rows[(str(short), 32)]["skipped_reason"]
    assert any("skipped" in m and "CUDAExecutionProvider" in m for m in messages)
    assert any("model batch 1 sequence 16: p50" in m for m in messages)


def _copy_with_manifest(bundle, destination, change):
    shutil.copytree(bundle, destination)
    manifest = json.loads((destination / "manifest.json").read_text())
    change(manifest)  # manifest.json itself is not hashed: the bundle still reads
    (destination / "manifest.json").write_text(json.dumps(manifest))
    return destination


def test_reference_checkpoint_is_remade_from_the_stand_in_recipe(tiny_bundles, tiny_checkpoints, tmp_path):
    manifest = json.loads((tiny_bundles[QA].bundle / "manifest.json").read_text())
    moved = {**manifest, "source": {**manifest["source"], "id": str(tmp_path / "gone")}}
    made = reference_checkpoint(moved, tmp_path / "remade", progress=lambda message: None)
    # The recipe is deterministic: the same config and weights as the checkpoint the bundle was built from.
    assert sha256_file(made / "config.json") == manifest["source"]["config_sha256"]
    assert sha256_file(made / "model.safetensors") == sha256_file(tiny_checkpoints[QA] / "model.safetensors")
    hub_only = {**manifest, "source": {**manifest["source"], "id": "nobody/no-such-model", "stand_in": None}}
    with pytest.raises(DistilrtError, match="could not be fetched"):
        reference_checkpoint(hub_only, tmp_path / "hub", progress=lambda message: None)


def test_end_to_end_inputs_fill_the_sequence_and_never_exceed_it(tiny_bundles):
    tokenizer = load_tokenizer(tiny_bundles[QA].bundle / "tokenizer.json")
    for sequence in (16, 64):
        examples = qa_examples(tokenizer, 3, sequence, seed=0)
        lengths = [len(tokenizer.encode(e["question"], e["context"]).ids) for e in examples]
        assert len(examples) == 3 and all(sequence - 3 <= n <= sequence for n in lengths)
        texts = mlm_texts(tokenizer, "[MASK]", 3, sequence, seed=0)
        assert all(text.count("[MASK]") == 1 and len(tokenizer.encode(text).ids) <= sequence for text in texts)
    assert qa_examples(tokenizer, 2, 32, seed=0) == qa_examples(tokenizer, 2, 32, seed=0)


def test_random_feed_is_exact_seeded_and_names_only_model_inputs():
    feed = full_feed(("input_ids", "attention_mask"), 2, 16, vocab_size=30522, seed=0)
    assert set(feed) == {"input_ids", "attention_mask"} and feed["input_ids"].shape == (2, 16)
    assert feed["attention_mask"].all() and (feed["input_ids"] == full_feed(("input_ids",), 2, 16, 30522, 0)["input_ids"]).all()


def test_time_calls_stops_early_after_the_minimum_runs():
    calls = []
    times = time_calls(lambda: calls.append(1), warmup=2, repeats=20, max_seconds=1e-12, min_runs=5)
    assert len(times) == 5 and len(calls) == 7
    assert len(time_calls(lambda: None, warmup=0, repeats=3, max_seconds=60, min_runs=3)) == 3


def test_ratios_are_measured_against_the_same_cell_of_the_same_checkpoint():
    def row(runner, p50, checkpoint_id="a", batch=1):
        return {"checkpoint_id": checkpoint_id, "runner": runner, "mode": "model", "batch": batch, "sequence": 128,
                "latency_ms": {"p50": p50}, "ratios": None}

    rows = [row("pytorch", 10.0), row("optimum", 4.0), row("distilrt", 2.0), row("distilrt", 2.0, batch=8),
            row("distilrt", 5.0, checkpoint_id="b")]
    add_ratios(rows)
    assert rows[2]["ratios"] == {"speedup_vs_pytorch": 5.0, "speedup_vs_optimum": 2.0}
    assert rows[1]["ratios"] == {"speedup_vs_pytorch": 2.5}
    assert rows[3]["ratios"]["speedup_vs_pytorch"] is None and rows[4]["ratios"]["speedup_vs_pytorch"] is None


@pytest.mark.parametrize("settings", [
    {"batches": ()}, {"batches": (0,)}, {"sequences": (8,)}, {"repeats": 0}, {"warmup": -1},
    {"max_seconds_per_cell": 0}, {"threads": 0}, {"modes": ()}, {"modes": ("fast",)}, {"references": ("onnx",)},
])
def test_bench_config_rejects_bad_settings(settings):
    with pytest.raises(UserInputError):
        BenchConfig(**settings)


def test_bench_config_round_trips_and_resolves_threads():
    config = BenchConfig(batches=(1, 4), threads=None, references=())
    assert BenchConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert config.resolved_threads >= 1 and len(config.cells()) == 2 * 2 * 2


def test_bench_cli_rejects_a_path_without_bundles(tmp_path, capsys):
    assert main(["bench", str(tmp_path), "--json", str(tmp_path / "out.json")]) == 1
    assert "neither a bundle nor a directory of bundles" in capsys.readouterr().err
