"""Fill-mask graphs compute the vocabulary projection at the given masked positions only
(docs/design.md#masked-positions), and no bundle holds a weight twice (docs/design.md#shared-weights)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import MLM_CHECKPOINTS

import distilrt
from distilrt.export.assets import SEED_CHECKPOINTS
from distilrt.export.initializers import duplicate_initializers, remove_duplicate_initializers
from distilrt.tokenization import MASK_POSITIONS


def _graph_io(path):
    graph = onnx.load(str(path), load_external_data=False).graph
    weights = {i.name for i in graph.initializer}
    shape = lambda value: [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]  # noqa: E731
    return ({i.name: shape(i) for i in graph.input if i.name not in weights},
            {o.name: shape(o) for o in graph.output})


@pytest.mark.parametrize("name", MLM_CHECKPOINTS)
def test_fill_mask_graph_takes_mask_positions(tiny_bundles, name):
    bundle = tiny_bundles[name]
    inputs, outputs = _graph_io(bundle.path / "model.onnx")
    assert inputs[MASK_POSITIONS] == ["batch", "masks"]
    assert outputs["logits"] == ["batch", "masks", bundle.manifest.vocab_size]
    assert bundle.input_names[-1] == MASK_POSITIONS


@pytest.mark.parametrize("name", MLM_CHECKPOINTS)
def test_masked_logits_equal_pytorch_full_logits_at_those_positions(tiny_checkpoints, tiny_bundles, name):
    """Positions in any order, repeated, and a different count per row (padded with 0)."""
    import torch
    from transformers import AutoModelForMaskedLM

    bundle = tiny_bundles[name]
    model = AutoModelForMaskedLM.from_pretrained(tiny_checkpoints[name]).eval()
    rng = np.random.default_rng(7)
    ids = rng.integers(1000, bundle.manifest.vocab_size, size=(2, 12))
    mask = np.ones_like(ids)
    mask[1, 9:] = 0
    feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    positions = np.array([[11, 0, 5, 5], [8, 1, 0, 0]])
    with torch.no_grad():
        full = model(**{k: torch.from_numpy(feed[k]) for k in bundle.input_names if k != MASK_POSITIONS}).logits
    with distilrt.load(bundle.path) as head:
        got = head._backend.run({**feed, MASK_POSITIONS: positions})["logits"]
    expected = np.take_along_axis(full.numpy(), positions[:, :, None], axis=1)
    assert got.shape == (2, 4, bundle.manifest.vocab_size)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)
    # Each row's logits come from its own position: shifting one position changes that row only.
    with distilrt.load(bundle.path) as head:
        shifted = head._backend.run({**feed, MASK_POSITIONS: positions + np.array([[0, 1, 0, 0], [0, 0, 0, 0]])})
    assert not np.allclose(shifted["logits"][0, 1], got[0, 1])
    np.testing.assert_allclose(shifted["logits"][1], got[1], atol=1e-5)


@pytest.mark.parametrize("name", MLM_CHECKPOINTS)
def test_head_answers_the_same_on_a_full_logits_model(tiny_checkpoints, tiny_bundles, name):
    """The head on a model that gives every token's logits (bundles from before, the PyTorch model) picks the mask
    rows itself and answers as on the masked-positions graph."""
    from transformers import AutoModelForMaskedLM

    from distilrt.export.torch_backend import TorchBackend
    from distilrt.heads.fill_mask import FillMask

    bundle = tiny_bundles[name]
    torch_model = AutoModelForMaskedLM.from_pretrained(tiny_checkpoints[name])
    mask = bundle.tokenizer_settings.mask_token
    texts = [f"The {mask} sat on the mat.", f"{mask} and {mask} went up the hill to fetch a pail of water.",
             f"A much longer sentence, written here so that this text pads the others in its batch: {mask}."]
    with distilrt.load(bundle.path) as onnx_head:
        on_graph = onnx_head(texts, top_k=3)
        head = FillMask(TorchBackend(torch_model, ("logits",)), onnx_head.tokenizer_copy(), bundle.tokenizer_settings)
    assert MASK_POSITIONS not in head._backend.input_names
    on_torch = head(texts, top_k=3)
    assert [[p["token"] for p in _flat(r)] for r in on_torch] == [[p["token"] for p in _flat(r)] for r in on_graph]
    assert max(abs(a["score"] - b["score"]) for r, s in zip(on_torch, on_graph)
               for a, b in zip(_flat(r), _flat(s))) < 1e-4


def _flat(result):
    return [p for row in result for p in (row if isinstance(row, list) else [row])]


@pytest.mark.parametrize("name", list(SEED_CHECKPOINTS))
def test_no_fp32_bundle_holds_a_weight_twice(tiny_bundles, name):
    model = onnx.load(str(tiny_bundles[name].path / "model.onnx"))
    assert duplicate_initializers(model) == []


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SEED_CHECKPOINTS))
def test_no_variant_bundle_holds_a_weight_twice(tiny_variant_builds, name):
    _, outcomes = tiny_variant_builds[name]
    published = [outcome for outcome in outcomes if outcome.published]
    assert published, f"no variant of {name} was published"
    for outcome in published:
        model = onnx.load(str(outcome.bundle / "model.onnx"))
        assert duplicate_initializers(model) == [], f"{name} {outcome.variant}"


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["fused", "fp16", "int8-dynamic", "int8-qdq", "int8-qdq-trt"])
@pytest.mark.parametrize("name", MLM_CHECKPOINTS)
def test_every_fill_mask_variant_takes_mask_positions(tiny_variant_builds, name, variant):
    _, outcomes = tiny_variant_builds[name]
    outcome = next(o for o in outcomes if o.variant == variant)
    if not outcome.published:
        pytest.skip(f"{name} {variant} was not published: {outcome.reason}")  # test_variants lists which may not be
    inputs, outputs = _graph_io(outcome.bundle / "model.onnx")
    assert inputs[MASK_POSITIONS] == ["batch", "masks"]
    assert outputs["logits"][:2] == ["batch", "masks"]


def test_duplicates_are_found_and_removed_exactly(tmp_path):
    """Two readers of byte-identical weights end up reading one; a weight that differs in one value is kept."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    weight = np.arange(128 * 128, dtype=np.float32).reshape(128, 128) / 1000  # 64 KiB, the smallest kept apart
    nearly = weight.copy()
    nearly[0, 0] += 1e-7  # allclose to weight, yet another weight
    initializers = [numpy_helper.from_array(weight, "w1"), numpy_helper.from_array(weight.copy(), "w2"),
                    numpy_helper.from_array(nearly, "w3")]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["a"]), helper.make_node("MatMul", ["a", "w2"], ["b"]),
             helper.make_node("MatMul", ["b", "w3"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 128])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 128])], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = np.random.default_rng(0).standard_normal((1, 128)).astype(np.float32)
    before = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]

    assert duplicate_initializers(model) == [["w1", "w2"]]
    assert remove_duplicate_initializers(model) == 1
    assert sorted(i.name for i in model.graph.initializer) == ["w1", "w3"]
    assert [n.input[1] for n in model.graph.node] == ["w1", "w1", "w3"]
    after = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_array_equal(after, before)
