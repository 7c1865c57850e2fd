"""Same-shaped stand-ins for the seed checkpoints, built offline from their real configs and tokenizers.

The published weights cannot be downloaded on machines without hub access, so tests, benchmarks and the
demo use models with the real architecture, vocabulary and tokenizer but RANDOM weights. Everything written
here says so (``distilrt_stand_in`` in config.json, with the recipe; the bundle manifest repeats it).

Random weights give near-tied task logits, so an argmax comparison between two correct implementations would
be decided by float noise. The task head is therefore scaled (``head_scale``) until the logit spread is far
above numerical error: that makes the comparison meaningful without loosening any tolerance.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from distilrt.export.assets import config_path, tokenizer_dir

# Shrunk shapes for unit tests: few layers, small hidden size, the real vocabulary.
TINY_OVERRIDES = {
    "distilbert": {"n_layers": 2, "dim": 32, "n_heads": 2, "hidden_dim": 64},
    "roberta": {"num_hidden_layers": 2, "hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64},
    "bert": {"num_hidden_layers": 2, "hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64},
    "albert": {
        "num_hidden_layers": 2,
        "hidden_size": 32,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "embedding_size": 16,
    },
}

# Multiplier for the task head's weights so that random-weight logits are decisive (see module docstring).
DEFAULT_HEAD_SCALE = 20.0


def make_random_checkpoint(
    checkpoint: str,
    directory: Path,
    *,
    tiny: bool = True,
    seed: int = 0,
    head_scale: float = DEFAULT_HEAD_SCALE,
) -> Path:
    """Write a loadable checkpoint directory (config, safetensors weights, tokenizer files) and return it."""
    import torch
    from transformers import AutoConfig, AutoModelForMaskedLM, AutoModelForQuestionAnswering

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config_dict = json.loads(config_path(checkpoint).read_text())
    if tiny:
        config_dict.update(TINY_OVERRIDES[config_dict["model_type"]])
    # The recipe is kept in config.json (and so in the bundle manifest): the stand-in can be made again.
    config_dict["distilrt_stand_in"] = {"checkpoint": checkpoint, "tiny": tiny, "seed": seed, "head_scale": head_scale}
    config = AutoConfig.for_model(**config_dict)

    torch.manual_seed(seed)
    architecture = config_dict["architectures"][0]
    auto_class = AutoModelForQuestionAnswering if "QuestionAnswering" in architecture else AutoModelForMaskedLM
    model = auto_class.from_config(config).eval()
    _scale_task_head(model, head_scale)
    model.save_pretrained(directory)

    for source in tokenizer_dir(checkpoint).iterdir():
        shutil.copy(source, directory / source.name)
    return directory


def _scale_task_head(model, scale: float) -> None:
    import torch

    with torch.no_grad():
        if hasattr(model, "qa_outputs"):
            model.qa_outputs.weight.mul_(scale)
            return
        # Masked LM heads end in a decoder tied to the word embeddings; scaling the tied matrix would also
        # scale the inputs, so scale the head's last transform instead (its LayerNorm weight).
        head_norm = _mlm_head_layer_norm(model)
        head_norm.weight.mul_(scale)
        head_norm.bias.mul_(scale)


def _mlm_head_layer_norm(model):
    for name in ("vocab_layer_norm", "lm_head.layer_norm", "predictions.LayerNorm", "cls.predictions.transform.LayerNorm"):
        module = model
        try:
            for part in name.split("."):
                module = getattr(module, part)
        except AttributeError:
            continue
        return module
    raise AttributeError(f"no masked-LM head LayerNorm found on {type(model).__name__}")
