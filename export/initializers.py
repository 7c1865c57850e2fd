"""Duplicate weights in a graph: find them, and make every node read one copy.

Two sources measured on the seed checkpoints (docs/design.md#shared-weights): masked-LM exports that held the
tied word-embedding matrix twice (the exporter's transposed copy; the masked-positions head no longer needs
it), and ALBERT after fusion, where each fused Attention packs its own Q, K, V weights although all layers
share one set.

Exact by design. onnxruntime's ``OnnxModel.remove_duplicated_initializer`` also merges tensors that are merely
``allclose`` (rtol 1e-5) and converts every pair of same-shaped tensors to compare them; a bundle must keep
exactly the weights it was verified with, so here tensors are grouped by their bytes, and ONNX Runtime's own
graph edits (``replace_input_of_all_nodes``, ``update_graph``) do the rewiring.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict

import numpy as np

# Weight matrices only: smaller tensors (biases, scales, zero points) repeat by nature (a random stand-in's zero
# biases, int8 zero points) and all of them together are a rounding error in a bundle of tens of megabytes.
MIN_BYTES = 64 * 1024


def duplicate_initializers(model) -> list[list[str]]:
    """Groups of initializer names whose dtype, shape and bytes are identical (first name first), largest first."""
    from onnx import numpy_helper

    groups: dict[tuple, list[str]] = defaultdict(list)
    for initializer in model.graph.initializer:
        values = numpy_helper.to_array(initializer)
        if values.nbytes < MIN_BYTES:
            continue
        digest = hashlib.sha256(np.ascontiguousarray(values).tobytes()).hexdigest()
        groups[(values.nbytes, initializer.data_type, tuple(initializer.dims), digest)].append(initializer.name)
    return [names for _, names in sorted(groups.items(), key=lambda item: -item[0][0]) if len(names) > 1]


def remove_duplicate_initializers(model) -> int:
    """Point every reader of a duplicate at the group's first initializer and drop the rest; the number dropped."""
    from onnxruntime.transformers.onnx_model import OnnxModel

    groups = duplicate_initializers(model)
    if not groups:
        return 0
    editor = OnnxModel(model)
    for keep, *copies in groups:
        for copy in copies:
            editor.replace_input_of_all_nodes(copy, keep)
    editor.update_graph()  # removes the initializers nothing reads any more
    return sum(len(copies) for _, *copies in groups)

