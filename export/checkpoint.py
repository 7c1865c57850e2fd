"""Resolve a checkpoint (hub id or local directory) and load its model and tokenizer for export."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from distilrt.bundle import sha256_file
from distilrt.errors import CheckpointError, UnsupportedError
from distilrt.export.specs import TASKS, ArchitectureSpec, TaskSpec, get_spec, get_task
from distilrt.tokenization import TokenizerSettings

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
# Any one of these lets transformers build the fast tokenizer (tokenizer.json directly, or converted from the
# WordPiece vocab, the byte-level BPE files, or the SentencePiece model).
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model")
_HUB_PATTERNS = [
    "config.json", "*.safetensors", "*.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json",
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "vocab.json",
    "merges.txt", "spiece.model", "sentencepiece.bpe.model", "added_tokens.json",
]


@dataclass(frozen=True)
class Checkpoint:
    id: str  # what the user named: hub id or directory
    directory: Path  # local files (the hub snapshot for a hub id)
    revision: str | None  # hub commit; None for a local directory
    config: dict
    spec: ArchitectureSpec
    task: TaskSpec

    @property
    def name(self) -> str:
        return checkpoint_name(self.id)

    @property
    def stand_in(self) -> dict | None:
        """The recipe of a RANDOM-weight stand-in made by distilrt.export.random_checkpoint, else None."""
        return self.config.get("distilrt_stand_in")

    @property
    def random_weights(self) -> bool:
        return self.stand_in is not None

    def source_record(self) -> dict:
        return {
            "id": self.id,
            "revision": self.revision,
            "config_sha256": sha256_file(self.directory / "config.json"),
            "random_weights": self.random_weights,
            "stand_in": self.stand_in,
        }


def checkpoint_name(id_or_path: str) -> str:
    """Directory name for artifacts/: the hub id's last part, or the local directory's name."""
    return Path(str(id_or_path).rstrip("/")).name


def resolve_checkpoint(id_or_path: str, *, task: str | None = None, revision: str | None = None) -> Checkpoint:
    if Path(id_or_path).exists():
        directory, resolved_revision = Path(id_or_path), None
    else:
        directory, resolved_revision = _download(id_or_path, revision)
    config = _read_config(directory)
    _check_files(directory)
    spec = get_spec(config.get("model_type", "<missing model_type>"))
    task_spec = _choose_task(config, task, directory)
    spec.task(task_spec.name)  # the architecture must support it
    return Checkpoint(id_or_path, directory, resolved_revision, config, spec, task_spec)


def _download(repo_id: str, revision: str | None) -> tuple[Path, str]:
    from huggingface_hub import snapshot_download

    try:
        path = snapshot_download(repo_id, revision=revision, allow_patterns=_HUB_PATTERNS)
    except Exception as e:  # offline mode, unknown repo, network errors: all the same fix for the user
        offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
        why = "HF_HUB_OFFLINE is set" if offline else "the hub could not be reached or has no such model"
        raise CheckpointError(
            f"{repo_id!r} is not a local directory and could not be fetched from the Hugging Face hub ({why}: "
            f"{type(e).__name__}). Pass a local checkpoint directory with config.json, weights and tokenizer "
            f"files, or run `distilrt demo` for offline stand-ins"
        ) from e
    return Path(path), Path(path).name


def _read_config(directory: Path) -> dict:
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"checkpoint {directory} has no config.json; point at a transformers checkpoint directory")
    try:
        return json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{config_path} is not valid JSON: {e}") from e


def _check_files(directory: Path) -> None:
    if not any((directory / f).is_file() for f in WEIGHT_FILES):
        raise CheckpointError(
            f"checkpoint {directory} has no weights: expected one of {', '.join(WEIGHT_FILES)}"
        )
    if not any((directory / f).is_file() for f in TOKENIZER_FILES):
        raise CheckpointError(
            f"checkpoint {directory} has no tokenizer files: expected one of {', '.join(TOKENIZER_FILES)}"
        )


def _choose_task(config: dict, task: str | None, directory: Path) -> TaskSpec:
    """The task follows the checkpoint's head; an explicit task must match it (a missing head would be random)."""
    architectures = config.get("architectures") or []
    heads = [t for t in TASKS.values() if any(a.endswith(t.architecture_suffix) for a in architectures)]
    if task is None:
        if len(heads) != 1:
            raise CheckpointError(
                f"cannot tell the task of {directory} from its architectures {architectures}; "
                f"pass --task with one of: {', '.join(TASKS)}"
            )
        return heads[0]
    chosen = get_task(task)
    if chosen not in heads:
        raise UnsupportedError(
            f"checkpoint {directory} has no {task} head (architectures: {architectures}); exporting it would "
            f"give a randomly initialised head. Use a checkpoint fine-tuned for {task}"
        )
    return chosen


def load_model(checkpoint: Checkpoint, attn_implementation: str):
    """The checkpoint's model with its task head, in eval mode and float32; every head weight must come from the
    checkpoint."""
    import torch
    import transformers

    auto_class = getattr(transformers, checkpoint.task.auto_class)
    try:
        # float32 whatever dtype the checkpoint was saved in: transformers 5 loads the saved dtype by default,
        # and the fp32 bundle is the reference every variant is measured against.
        model, info = auto_class.from_pretrained(
            checkpoint.directory, attn_implementation=attn_implementation, dtype=torch.float32,
            output_loading_info=True,
        )
    except Exception as e:
        raise CheckpointError(f"transformers could not load {checkpoint.directory}: {e}") from e
    missing = [k for k in info.get("missing_keys", []) if "position_ids" not in k]
    if missing:
        raise CheckpointError(
            f"checkpoint {checkpoint.directory} lacks weights {missing[:5]}{'…' if len(missing) > 5 else ''}; "
            f"the exported model would be partly random"
        )
    return model.eval()


def load_tokenizer(checkpoint: Checkpoint):
    """The transformers fast tokenizer: its backend is what the bundle's tokenizer.json holds."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(checkpoint.directory, use_fast=True)
    except Exception as e:
        raise CheckpointError(
            f"could not build a fast tokenizer for {checkpoint.directory} ({e}); SentencePiece checkpoints "
            f"need `pip install sentencepiece protobuf`"
        ) from e
    if not tokenizer.is_fast:
        raise CheckpointError(f"{checkpoint.directory} has no fast (tokenizers) tokenizer; the runtime needs one")
    return tokenizer


def tokenizer_settings(tokenizer, max_sequence: int) -> TokenizerSettings:
    """What the runtime needs beyond tokenizer.json. ``model_max_length`` is capped by what the model's position
    embeddings allow (some tokenizers, ALBERT's, record no limit), so over-long inputs get a clear error."""
    return TokenizerSettings(
        model_input_names=tuple(tokenizer.model_input_names),
        padding_side=tokenizer.padding_side,
        pad_token_id=tokenizer.pad_token_id,
        cls_token_id=tokenizer.cls_token_id,
        mask_token=tokenizer.mask_token,
        mask_token_id=tokenizer.mask_token_id,
        model_max_length=int(min(tokenizer.model_max_length, max_sequence)),
        clean_up_tokenization_spaces=decode_cleans_up(tokenizer),
    )


def decode_cleans_up(tokenizer) -> bool:
    """Whether the tokenizer's decode removes spaces before punctuation, as the running transformers does it:
    5.x skips that clean-up for BPE models (it corrupts their text) unless a flag forces it, whatever
    ``clean_up_tokenization_spaces`` says."""
    if not tokenizer.clean_up_tokenization_spaces:
        return False
    force = getattr(tokenizer, "clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output", None)
    if force is None:  # transformers 4.x: no BPE exception
        return True
    return bool(force) or type(tokenizer.backend_tokenizer.model).__name__ != "BPE"
