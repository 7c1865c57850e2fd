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


@pytest.mark.slow
@pytest.mark.parametrize("variant", VARIANTS)
def test_an_old_bundle_rebuilds_byte_identically(variant, tmp_path):
    from distilrt.export.rebuild import rebuild

    old = distilrt.read_bundle(OLD_BUNDLES / variant)
    drift = _tool_drift(old.manifest)
    if drift:
        pytest.skip("byte identity holds only with the build tools the bundle was made with; changed: "
                    + ", ".join(drift))
    rebuilt = rebuild(old.path, tmp_path, progress=lambda message: None)
    for name in ("model.onnx", "tokenizer.json"):
        assert sha256_file(rebuilt / name) == sha256_file(old.path / name), f"{variant}/{name} differs"
