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
MASKED_AXES = {0: "batch", 1: "masks"}  # mask_positions, and the logits of a masked-positions graph


def resolve_attn_implementation(config: ExportConfig) -> str:
    """The configured attention implementation, or the one this transformers exports in a fusable form."""
    if config.attn_implementation is not None:
        return config.attn_implementation
    return fusable_attn_implementation()


class _NamedOutputs:
    """Wraps the model so the exporter sees positional inputs in the spec's order and a tuple of named outputs."""

    def __new__(cls, model, spec: ArchitectureSpec, task: TaskSpec):
        import torch

        if task.extra_input_names:
            return _MaskedLMOutputs(model, spec)

        class Wrapper(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.model = model

            def forward(self, *inputs):
                outputs = self.model(**dict(zip(spec.input_names, inputs)), return_dict=True)
                return tuple(outputs[name] for name in task.output_names)

        return Wrapper().eval()


class _MaskedLMOutputs:
    """The masked-LM model with its head run only at ``mask_positions`` ([batch, masks]): logits [batch, masks, vocab].

    transformers' forward projects every token onto the vocabulary, a third of the encoder's work at 128 tokens
    and the largest activation ([batch, sequence, vocab]) although fill-mask reads the masked rows only; no export
    option selects rows, so the wrapper runs the model's own modules (encoder, then ``spec.mlm_head``) with a
    gather between them. The head runs on a 2-D [batch x masks, hidden] input, which the exporter writes as Gemm
    on the tied word-embedding matrix itself, not a transposed copy of it (a MatMul on a 3-D input needs one).
    """

    def __new__(cls, model, spec: ArchitectureSpec):
        import torch

        if not spec.mlm_head:
            raise ExportError(f"the {spec.model_type} spec names no mlm_head modules, so its masked-LM head cannot be "
                              "run on the masked positions alone; add them to its spec")

        class Wrapper(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.model = model

            def forward(self, *inputs):
                encoder = getattr(self.model, self.model.base_model_prefix)
                hidden = encoder(**dict(zip(spec.input_names, inputs)), return_dict=True).last_hidden_state
                positions = inputs[len(spec.input_names)]
                index = positions.unsqueeze(-1).expand(-1, -1, hidden.shape[-1])
                states = torch.gather(hidden, 1, index).reshape(-1, hidden.shape[-1])
                for name in spec.mlm_head:
                    states = getattr(self.model, name)(states)
                return (states.reshape(positions.shape[0], positions.shape[1], self.model.config.vocab_size),)

        return Wrapper().eval()


def export_onnx(model, spec: ArchitectureSpec, task: TaskSpec, config: ExportConfig, path: Path,
                vocab_size: int, pad_token_id: int) -> None:
    import torch

    wrapper = _NamedOutputs(model, spec, task)
    rng = np.random.default_rng(0)
    input_names = spec.model_input_names(task)
    example = padded_feed(input_names, config.trace_batch, config.trace_sequence, vocab_size, pad_token_id, rng)
    masked = bool(task.extra_input_names)
    dynamic_axes = {**{name: AXES for name in spec.input_names},
                    **{name: MASKED_AXES for name in task.extra_input_names},
                    **{name: MASKED_AXES if masked else AXES for name in task.output_names}}
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # The TorchScript exporter is deprecated in favour of dynamo, but only its graphs fuse
            # (docs/design.md#export-and-attention-implementation).
            warnings.simplefilter("ignore", category=DeprecationWarning)
            warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
            torch.onnx.export(
                wrapper,
                tuple(torch.from_numpy(example[name]) for name in input_names),
                str(path),
                dynamo=False,  # config.exporter == "torchscript", explicit since torch 2.14 defaults to dynamo
                opset_version=config.opset,
                input_names=list(input_names),
                output_names=list(task.output_names),
                dynamic_axes=dynamic_axes,
                do_constant_folding=True,
            )
    except Exception as e:
        raise ExportError(f"torch.onnx.export failed for {type(model).__name__}: {e}") from e
    finally:
        model.eval()  # the TorchScript exporter resets the train/eval flag (docs/design.md#export-and-attention-implementation)
