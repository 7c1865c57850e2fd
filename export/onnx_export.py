"""Export a transformers model to ONNX fp32 with dynamic batch and sequence axes."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from distilrt.calib.synthetic import padded_feed
from distilrt.errors import ExportError
from distilrt.export.config import ExportConfig
from distilrt.export.specs import ArchitectureSpec, TaskSpec
from distilrt.export.transformers_support import fusable_attn_implementation

AXES = {0: "batch", 1: "sequence"}


def resolve_attn_implementation(config: ExportConfig) -> str:
    """The configured attention implementation, or the one this transformers exports in a fusable form."""
    if config.attn_implementation is not None:
        return config.attn_implementation
    return fusable_attn_implementation()


class _NamedOutputs:
    """Wraps the model so the exporter sees positional inputs in the spec's order and a tuple of named outputs."""

    def __new__(cls, model, spec: ArchitectureSpec, task: TaskSpec):
        import torch

        class Wrapper(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.model = model

            def forward(self, *inputs):
                outputs = self.model(**dict(zip(spec.input_names, inputs)), return_dict=True)
                return tuple(outputs[name] for name in task.output_names)

        return Wrapper().eval()


def export_onnx(model, spec: ArchitectureSpec, task: TaskSpec, config: ExportConfig, path: Path,
                vocab_size: int, pad_token_id: int) -> None:
    import torch

    wrapper = _NamedOutputs(model, spec, task)
    rng = np.random.default_rng(0)
    example = padded_feed(spec.input_names, config.trace_batch, config.trace_sequence, vocab_size, pad_token_id, rng)
    dynamic_axes = {name: AXES for name in (*spec.input_names, *task.output_names)}
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # The TorchScript exporter is deprecated in favour of dynamo, but only its graphs fuse
            # (docs/design.md#export-and-attention-implementation).
            warnings.simplefilter("ignore", category=DeprecationWarning)
            warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
            torch.onnx.export(
                wrapper,
                tuple(torch.from_numpy(example[name]) for name in spec.input_names),
                str(path),
                dynamo=False,  # config.exporter == "torchscript", explicit since torch 2.14 defaults to dynamo
                opset_version=config.opset,
                input_names=list(spec.input_names),
                output_names=list(task.output_names),
                dynamic_axes=dynamic_axes,
                do_constant_folding=True,
            )
    except Exception as e:
        raise ExportError(f"torch.onnx.export failed for {type(model).__name__}: {e}") from e
    finally:
        model.eval()  # the TorchScript exporter resets the train/eval flag (docs/design.md#export-and-attention-implementation)
