"""A transformers PyTorch model as a runtime backend: the runtime's numpy feed in, the model's logits out.

The runtime's task heads on this backend are the question-answering reference where transformers has no
pipeline for it (5.3 and newer): the same pre- and post-processing as the bundle's head, on the PyTorch model's
logits, so a difference comes from the export or the tokenizer file, which the build checks separately.
The parity tests drive the heads with it too, next to the transformers pipeline where there is one.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping

import numpy as np

from distilrt.backends import Closable

_MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class TorchBackend(Closable):
    name = "torch"

    def __init__(self, model, output_names: tuple[str, ...]):
        self._model = model.eval()
        accepted = inspect.signature(model.forward).parameters
        self.input_names = tuple(name for name in _MODEL_INPUTS if name in accepted)
        self.output_names = tuple(output_names)

    def run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        inputs = {name: torch.from_numpy(np.asarray(feed[name], dtype=np.int64)) for name in self.input_names}
        with torch.no_grad():
            outputs = self._model(**inputs)
        return {name: outputs[name].numpy() for name in self.output_names}

    def close(self) -> None:
        """Nothing to free: the model belongs to the caller."""
