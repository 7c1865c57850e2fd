"""Bundles built with two transformers versions from the same checkpoints give the same answers.

    python ci/cross_version.py write DIR     # with one transformers (CI: 4.57): checkpoints, bundles, answers
    python ci/cross_version.py compare DIR   # with another (CI: the newest 5.x): build again, same answers?
    python ci/cross_version.py write DIR --full-size   # full-size stand-ins (minutes per checkpoint)

`write` makes tiny RANDOM-weight stand-ins of the five seed checkpoints in DIR/checkpoints (made once, so both
sides export the very same weights), builds their fp32 bundles and records each bundle's answers to the probe
inputs in DIR/answers.json, with the transformers version. `compare` builds fp32 bundles from those checkpoint
directories with the running transformers and checks that they answer the same: answer text, offsets, token
ids and strings exactly, scores within the build's score tolerance.

Each bundle tokenizes as its own transformers does (the build checks that), and transformers 5 tokenizes some
texts otherwise than 4.57 (ALBERT: literal special tokens, offsets; docs/design.md#transformers-4-and-5). An
input the two bundles' tokenizers encode differently is counted and reported, not compared; every other input
must give the same answers, and question-answering inputs must all tokenize the same. Exit 1 on any
difference, naming it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import distilrt
from distilrt.config import default_of
from distilrt.errors import DistilrtError, one_line
from distilrt.export.assets import SEED_CHECKPOINTS
from distilrt.export.build import BuildOptions, build_fp32
from distilrt.export.config import Tolerances
from distilrt.export.probes import fill_mask_probes, question_answering_probes
from distilrt.export.random_checkpoint import make_random_checkpoint
from distilrt.export.transformers_support import transformers_version
from distilrt.export.verify import verify_task
from distilrt.files import write_json
from distilrt.progress import print_progress
from distilrt.tokenization import load_tokenizer

PROBES_PER_CHECKPOINT = 40
SEED = 11


def _probes(bundle) -> list[tuple[tuple, dict]]:
    if bundle.task == "question-answering":
        probes = question_answering_probes(PROBES_PER_CHECKPOINT, SEED)
        return probes + [((), {**kwargs, "max_seq_len": 64, "doc_stride": 16, "top_k": 3}) for _, kwargs in probes[:4]]
    return fill_mask_probes(bundle.tokenizer_settings.mask_token, PROBES_PER_CHECKPOINT, SEED)


def _tokens(tokenizer, probe) -> list:
    """What a probe's answers depend on: the token ids of its text (fill-mask), or the ids and character offsets
    of its question and context (question answering: answers are spans of the context)."""
    args, kwargs = probe
    if "question" in kwargs:
        encoding = tokenizer.encode(kwargs["question"], kwargs["context"])
        return [(encoding.ids, encoding.offsets)]
    texts = args[0] if isinstance(args[0], list) else [args[0]]
    return [tokenizer.encode(text).ids for text in texts]


def _replay(answers: list):
    """A stand-in reference that gives the recorded answers in order."""
    remaining = iter(answers)
    return lambda *args, **kwargs: next(remaining)


def _build(checkpoint: Path, out: Path):
    """The published fp32 bundle (a BuildResult is the Bundle it wrote)."""
    return build_fp32(str(checkpoint), BuildOptions(out_dir=out), progress=lambda message: None)


def write(directory: Path, *, tiny: bool) -> int:
    record = {"transformers": transformers_version(), "tiny": tiny, "checkpoints": {}}
    for name in SEED_CHECKPOINTS:
        print_progress(f"{name}: stand-in checkpoint and fp32 bundle (transformers {record['transformers']})")
        checkpoint = make_random_checkpoint(name, directory / "checkpoints" / name, tiny=tiny)
        bundle = _build(checkpoint, directory / "bundles")
        head = distilrt.load(bundle.path)
        record["checkpoints"][name] = {
            "attn_implementation": bundle.manifest.stage("export")["attn_implementation"],
            "answers": [head(*args, **kwargs) for args, kwargs in _probes(bundle)],
        }
    write_json(directory / "answers.json", record)
    print(f"wrote {directory / 'answers.json'}: {len(SEED_CHECKPOINTS)} checkpoints")
    return 0


def compare(directory: Path) -> int:
    recorded = json.loads((directory / "answers.json").read_text(encoding="utf-8"))
    here = transformers_version()
    failures = []
    with tempfile.TemporaryDirectory(prefix="distilrt-cross-version-") as scratch:
        for name, expected in recorded["checkpoints"].items():
            print_progress(f"{name}: building with transformers {here}, comparing with {recorded['transformers']}")
            bundle = _build(directory / "checkpoints" / name, Path(scratch))
            probes = _probes(bundle)
            old_tokenizer = load_tokenizer(directory / "bundles" / name / "fp32" / "tokenizer.json")
            new_tokenizer = load_tokenizer(bundle.tokenizer_path)
            same = [_tokens(old_tokenizer, probe) == _tokens(new_tokenizer, probe) for probe in probes]
            retokenized = len(probes) - sum(same)
            if retokenized and bundle.task == "question-answering":
                failures.append(f"{name}: {retokenized} of {len(probes)} question-answering inputs tokenize "
                                f"differently with transformers {here}")
                continue
            answers = [answer for answer, compared in zip(expected["answers"], same) if compared]
            try:
                result = verify_task(bundle.task, [p for p, compared in zip(probes, same) if compared],
                                     _replay(answers), distilrt.load(bundle.path),
                                     default_of(Tolerances, "score_atol"),
                                     reference_name=f"the bundle built with transformers {recorded['transformers']}")
            except DistilrtError as e:
                failures.append(f"{name}: {one_line(e)}")
                continue
            attention = f"{expected['attn_implementation']} -> {bundle.manifest.stage('export')['attn_implementation']}"
            print(f"{name}: {result.matched}/{result.inputs} answers identical (attention {attention}, "
                  f"max score diff {result.max_score_diff:.1e}); {retokenized} of {len(probes)} inputs tokenize "
                  f"differently (not compared)")
    for failure in failures:
        print(f"cross-version: {failure}", file=sys.stderr)
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("write", "compare"))
    parser.add_argument("directory", type=Path)
    parser.add_argument("--full-size", action="store_true", help="write: full-size stand-ins instead of tiny ones")
    args = parser.parse_args(argv)
    if args.action == "compare" and not (args.directory / "answers.json").is_file():
        raise SystemExit(f"cross-version: {args.directory / 'answers.json'} does not exist; run `write` first")
    return write(args.directory, tiny=not args.full_size) if args.action == "write" else compare(args.directory)


if __name__ == "__main__":
    sys.exit(main())
