"""Bundles built before the restructure (tests/data/bundles-0.1.0) still load, and rebuild byte-identically.

The rebuild compares model files byte for byte, which only means something with the tool versions the bundles
were built with: with another torch, transformers, onnx or onnxruntime the exporter and quantizer may write
other bytes for reasons that have nothing to do with distilrt, so the test skips and says which version moved.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import distilrt
from distilrt.files import sha256_file

OLD_BUNDLES = Path(__file__).parent / "data" / "bundles-0.1.0" / "distilbert-base-uncased-distilled-squad"
VARIANTS = ("fp32", "int8-qdq-trt")
# The libraries that write the model and tokenizer bytes. numpy only feeds them: these bundles (numpy 2.4.6)
# rebuilt byte for byte with numpy 1.26.4, which nvidia-pytriton (the serve extra) requires.
_BUILD_TOOLS = ("torch", "transformers", "onnx", "onnxruntime", "tokenizers")


@pytest.mark.parametrize("variant", VARIANTS)
def test_an_old_bundle_loads_and_answers(variant):
    assert distilrt.read_bundle(OLD_BUNDLES / variant).manifest.run_settings is None  # recorded only since
    qa = distilrt.load(OLD_BUNDLES / variant)
    answer = qa(question="Who wrote it?", context="It was written by Ada Lovelace in 1843.")
    assert set(answer) == {"score", "start", "end", "answer"}
    assert 0.0 <= answer["score"] <= 1.0


def _tool_drift(manifest) -> list[str]:
    from importlib import metadata

    recorded = manifest.tools
    installed = {name: metadata.version(name) for name in _BUILD_TOOLS}
    return [f"{name} {recorded[name]} -> {installed[name]}" for name in _BUILD_TOOLS if recorded[name] != installed[name]]


def _calibration_rounding(old_model: Path, new_model: Path) -> list[str]:
    """How two int8 graphs differ beyond the last bits of their calibrated scales (empty: they do not)."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    old, new = onnx.load(str(old_model)), onnx.load(str(new_model))
    if [n.SerializeToString() for n in old.graph.node] != [n.SerializeToString() for n in new.graph.node]:
        return ["the nodes differ"]
    before = {i.name: numpy_helper.to_array(i) for i in old.graph.initializer}
    after = {i.name: numpy_helper.to_array(i) for i in new.graph.initializer}
    if before.keys() != after.keys():
        return ["the initializers differ by name"]
    problems = []
    for name, value in before.items():
        if np.array_equal(value, after[name]):
            continue
        # A few float32 ulps of an activation scale: the percentile of an fp32 histogram, computed with other kernels.
        if not (name.endswith("_scale") and value.dtype == np.float32 and value.shape == after[name].shape
                and np.allclose(value, after[name], rtol=1e-6, atol=0)):
            problems.append(f"{name} differs")
    return problems


@pytest.mark.slow
@pytest.mark.parametrize("variant", VARIANTS)
def test_an_old_bundle_rebuilds_byte_identically(variant, tmp_path):
    """Byte for byte with the same build tools on the same CPU kernels. On other kernels (MLAS picks AVX2,
    AVX-512 or AMX code) fp32 sums round differently, so calibrated scales may differ in their last bits
    (measured: one activation scale of 34, 1.7e-7 relative, AVX-512 VNNI build rebuilt on AVX2); nothing else may."""
    from distilrt.export.rebuild import rebuild
    from distilrt.provenance import cpu_isa

    old = distilrt.read_bundle(OLD_BUNDLES / variant)
    drift = _tool_drift(old.manifest)
    if drift:
        pytest.skip("byte identity holds only with the build tools the bundle was made with; changed: "
                    + ", ".join(drift))
    rebuilt = rebuild(old.path, tmp_path, progress=lambda message: None)
    assert sha256_file(rebuilt / "tokenizer.json") == sha256_file(old.path / "tokenizer.json")
    if sha256_file(rebuilt / "model.onnx") == sha256_file(old.path / "model.onnx"):
        return
    built_on = old.manifest.tools.get("cpu_isa")  # None: these 0.1.0 bundles predate the record
    assert old.manifest.stage("calibration") is not None and built_on != cpu_isa(), (
        f"{variant}/model.onnx differs although rebuilt with the same tools on the same CPU kernels ({built_on})")
    assert _calibration_rounding(old.path / "model.onnx", rebuilt / "model.onnx") == []
