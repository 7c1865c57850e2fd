"""Test-only backend: runs a transformers torch model on the runtime's numpy feed.

It lets the parity tests drive the runtime heads with the very model the reference pipeline uses, so any
difference in the outputs comes from the heads' pre- and post-processing, not from an export.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping

import numpy as np
import torch

_MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class TorchBackend:
    name = "torch"

    def __init__(self, model: torch.nn.Module, output_names: tuple[str, ...]):
        self._model = model.eval()
        accepted = inspect.signature(model.forward).parameters
        self.input_names = tuple(name for name in _MODEL_INPUTS if name in accepted)
        self.output_names = output_names

    def run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        inputs = {name: torch.from_numpy(np.asarray(feed[name], dtype=np.int64)) for name in self.input_names}
        with torch.no_grad():
            outputs = self._model(**inputs)
        return {name: outputs[name].numpy() for name in self.output_names}
