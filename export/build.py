"""Build a verified bundle from a checkpoint: export → verify tensors → verify the task end to end → publish."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import distilrt
from distilrt.backends import open_bundle_model, run_settings
from distilrt.bundle import Bundle
from distilrt.calib.synthetic import padded_feeds
from distilrt.export import checkpoint as ckpt
from distilrt.export import invariance
from distilrt.export.config import ExportConfig, InvarianceConfig, ShapeProfile, Tolerances, VerifyConfig
from distilrt.export.onnx_export import export_onnx, resolve_attn_implementation
from distilrt.export.probes import task_probes, tokenizer_samples
from distilrt.export.publish import finish_bundle, write_manifest
from distilrt.export.task_reference import task_reference
from distilrt.export.tokenizer_check import verify_tokenizer
from distilrt.export.transformers_support import transformers_version
from distilrt.export.verify import verify_task, verify_tensors
from distilrt.files import staging_dir
from distilrt.manifest import SCHEMA_VERSION
from distilrt.progress import Progress, print_progress
from distilrt.provenance import cpu_isa, tool_versions
from distilrt.tokenization import MASK_POSITIONS


@dataclass(frozen=True)
class BuildOptions:
    task: str | None = None
    revision: str | None = None
    out_dir: Path = Path("artifacts")
    export: ExportConfig = field(default_factory=ExportConfig)
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    tolerances: Tolerances = field(default_factory=Tolerances.fp32)
    shape_profile: ShapeProfile | None = None  # None: up to the model's maximum sequence length
    invariance: InvarianceConfig = field(default_factory=InvarianceConfig)


@dataclass(frozen=True)
class BuildResult(Bundle):
    """The published fp32 bundle (a ``Bundle``) and how long it took."""

    seconds: float = 0.0

    @property
    def bundle(self) -> Path:
        return self.path


def build_fp32(checkpoint_id: str, options: BuildOptions = BuildOptions(), progress: Progress = print_progress) -> BuildResult:
    started = time.perf_counter()
    checkpoint = ckpt.resolve_checkpoint(checkpoint_id, task=options.task, revision=options.revision)
    label = f"{checkpoint.name} ({checkpoint.spec.model_type}, {checkpoint.task.name}"
    label += ", RANDOM weights)" if checkpoint.random_weights else ")"
    progress(f"loading {label}")
    attn_implementation = resolve_attn_implementation(options.export)
    model = ckpt.load_model(checkpoint, attn_implementation)
    hf_tokenizer = ckpt.load_tokenizer(checkpoint)
    settings = ckpt.tokenizer_settings(hf_tokenizer, checkpoint.spec.max_sequence(checkpoint.config))
    profile = options.shape_profile or ShapeProfile(max_sequence=settings.model_max_length)
    vocab_size = model.config.vocab_size
    destination = Path(options.out_dir) / checkpoint.name / "fp32"

    with staging_dir(destination) as staging:
        progress("exporting ONNX fp32 (TorchScript exporter)")
        export_onnx(model, checkpoint.spec, checkpoint.task, options.export, staging / "model.onnx",
                    vocab_size, settings.pad_token_id)
        # The tokenizer transformers runs (AutoTokenizer's backend), which may differ from the checkpoint's file.
        hf_tokenizer.backend_tokenizer.save(str(staging / "tokenizer.json"))
        probes = task_probes(checkpoint.task.name, settings.mask_token, options.verify.task_samples,
                             options.verify.seed)
        samples = tokenizer_samples(checkpoint.task.name, probes, settings.mask_token)
        progress(f"checking tokenizer.json against AutoTokenizer on {len(samples)} texts")
        tokenizer_check = verify_tokenizer(hf_tokenizer, staging / "tokenizer.json", samples, checkpoint.directory,
                                           transformers_version())

        progress(f"verifying ONNX against PyTorch on {len(options.verify.shapes)} seeded (batch, sequence) shapes")
        tensors = _verify_onnx_against_torch(model, checkpoint, staging / "model.onnx", options, vocab_size,
                                             settings.pad_token_id)
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "variant": "fp32",
            "task": checkpoint.task.name,
            "architecture": checkpoint.spec.model_type,
            "source": checkpoint.source_record(),
            "model": _model_record(checkpoint, vocab_size),
            "shape_profile": profile.to_dict(),
            "tokenizer": {"file": "tokenizer.json", "settings": settings.to_dict()},
            "stages": {
                "export": {**options.export.to_dict(), "attn_implementation": attn_implementation},
                "verify": options.verify.to_dict(),
                "tolerances": options.tolerances.to_dict(),
            },
            # cpu_isa: calibration and gates computed with that CPU's kernels (tests/test_compatibility.py)
            "tools": {**tool_versions(), "cpu_isa": cpu_isa()},
        }
        write_manifest(staging, manifest)

        reference = task_reference(checkpoint.task, model, hf_tokenizer, settings)
        progress(f"verifying the bundle's runtime against the {reference.kind} on {len(probes)} inputs")
        staged = distilrt.read_bundle(staging)
        model = open_bundle_model(staged, staged.manifest.model_file.backend)  # as distilrt.load opens it
        with distilrt.head_for(staged, model) as candidate:
            task = verify_task(checkpoint.task.name, probes, reference.run, candidate,
                               options.tolerances.score_atol, reference_name=reference.description)
            invariant = _check_invariance(staged, model, options.invariance, progress)
        # What the verification ran with (threads and where the count came from), beside how it was built, and
        # the invariance check that `distilrt serve` reads before it batches requests.
        manifest = {**manifest, "stages": {**manifest["stages"], "run": run_settings(model),
                                           "invariance": invariance.manifest_record(options.invariance, invariant)}}

        report = {"tensors": tensors.to_dict(), "tokenizer": tokenizer_check.to_dict(), "task": task.to_dict(),
                  "batch_invariance": invariant.to_dict()}
        manifest = finish_bundle(staging, destination, manifest, report, _summary(tensors, tokenizer_check, task))
    seconds = time.perf_counter() - started
    progress(f"published {destination} in {seconds:.1f}s")
    return BuildResult(destination, manifest, seconds)


def _check_invariance(staged: Bundle, model, config: InvarianceConfig, progress: Progress):
    """fp32 alone vs in mixed-length batches on the first items of the evaluation split (export/invariance.py)."""
    progress(f"checking answers alone vs in mixed-length batches ({config.fp32_items} evaluation items)")
    invariant = invariance.check(staged, model, invariance.fp32_split(staged, model, config), config)
    invariance.require_invariant("fp32", invariant, config)
    return invariant


def _verify_onnx_against_torch(model, checkpoint, onnx_path: Path, options: BuildOptions, vocab_size: int,
                               pad_token_id: int):
    import torch

    from distilrt.backends import open_backend

    feeds = padded_feeds(checkpoint.spec.model_input_names(checkpoint.task), options.verify.shapes,
                         options.verify.seed, vocab_size, pad_token_id)

    def run_torch(feed):
        token_inputs = {k: torch.from_numpy(v) for k, v in feed.items() if k != MASK_POSITIONS}
        with torch.no_grad():
            outputs = model(**token_inputs, return_dict=True)
        return {name: _at_mask_positions(outputs[name].numpy(), feed.get(MASK_POSITIONS))
                for name in checkpoint.task.output_names}

    onnx_model = open_backend("onnxruntime", onnx_path)
    return verify_tensors(run_torch, onnx_model.run, feeds, checkpoint.task.output_names, options.tolerances,
                          source_name="pytorch", target_name="onnx fp32 (onnxruntime CPU)")


def _at_mask_positions(logits: np.ndarray, positions: np.ndarray | None) -> np.ndarray:
    """PyTorch's logits of every token, [batch, sequence, ...], taken at ``positions`` [batch, masks] when the
    graph takes them: the masked-positions graph is checked against the unmodified model's own full output."""
    if positions is None:
        return logits
    return np.take_along_axis(logits, positions[:, :, None], axis=1)


def _model_record(checkpoint, vocab_size: int) -> dict:
    axes = ["batch", "sequence"]
    masked_axes = ["batch", "masks"]
    output_shape = masked_axes + [vocab_size] if checkpoint.task.name == "fill-mask" else axes
    layers, heads, hidden = checkpoint.spec.layers_heads_hidden(checkpoint.config)
    return {
        "layers": layers,
        "attention_heads": heads,
        "hidden_size": hidden,
        "vocab_size": vocab_size,
        "file": "model.onnx",
        "format": "onnx",
        "precision": "fp32",
        "backend": "onnxruntime",
        "inputs": [{"name": n, "dtype": "int64", "shape": masked_axes if n == MASK_POSITIONS else axes}
                   for n in checkpoint.spec.model_input_names(checkpoint.task)],
        "outputs": [{"name": n, "dtype": "float32", "shape": output_shape} for n in checkpoint.task.output_names],
    }


def _summary(tensors, tokenizer_check, task) -> dict:
    return {
        "passed": bool(tensors) and tokenizer_check.passed and bool(task),
        "tensors": {"against": tensors.source, "worst": tensors.worst()},
        "tokenizer": {"against": tokenizer_check.against, "inputs": tokenizer_check.inputs,
                      "matched": tokenizer_check.matched},
        "task": {"against": task.reference, "inputs": task.inputs, "matched": task.matched,
                 "max_score_diff": task.max_score_diff, "score_atol": task.score_atol},
    }
