"""Optimum's best CPU configuration of a checkpoint, made as its documentation makes it: export with
ORTModelFor*, optionally ORTOptimizer with ``AutoOptimizationConfig.O2()``, then ORTQuantizer with
``AutoQuantizationConfig.avx2(is_static=False, per_channel=True)`` (dynamic int8, no calibration data).

Imported only inside the Optimum int8 bench workers (it needs torch, transformers and optimum).
"""

from __future__ import annotations

import time
from pathlib import Path


def quantize(model_class, checkpoint: str, scratch: Path, *, optimize: bool) -> tuple[Path, dict]:
    """The directory holding the int8 model and what was made: file name, settings and seconds taken."""
    from optimum.onnxruntime import ORTOptimizer, ORTQuantizer
    from optimum.onnxruntime.configuration import AutoOptimizationConfig, AutoQuantizationConfig

    started = time.perf_counter()
    exported = scratch / "exported"
    model_class.from_pretrained(checkpoint, export=True).save_pretrained(exported)
    source, file_name = exported, "model.onnx"
    if optimize:
        # optimize() and quantize() return their save_dir; the file is named <input stem>_<suffix>.onnx
        source = ORTOptimizer.from_pretrained(exported).optimize(
            optimization_config=AutoOptimizationConfig.O2(), save_dir=scratch / "o2")
        file_name = "model_optimized.onnx"
    config = AutoQuantizationConfig.avx2(is_static=False, per_channel=True)
    try:
        directory = ORTQuantizer.from_pretrained(source, file_name=file_name).quantize(
            quantization_config=config, save_dir=scratch / "int8")
    except RuntimeError as e:
        if optimize and "Unable to find data type" in str(e):
            # O2's fused com.microsoft ops defeat ONNX shape inference, and ORTQuantizer.quantize gives the ONNX
            # Runtime quantizer no DefaultTensorType to fall back on (optimum PR 1959, never merged).
            raise RuntimeError("Optimum's ORTQuantizer cannot quantize its own O2-optimized model with this ONNX "
                               "Runtime (shape inference gives no type for the fused operators' tensors and "
                               f"ORTQuantizer passes no DefaultTensorType): {e}") from e
        raise
    made = {"file": f"{Path(file_name).stem}_quantized.onnx", "optimization": "O2" if optimize else None,
            "quantization": "dynamic int8, AutoQuantizationConfig.avx2(is_static=False, per_channel=True)",
            "prepare_seconds": time.perf_counter() - started}
    if not (Path(directory) / made["file"]).is_file():
        raise FileNotFoundError(f"Optimum's quantizer wrote no {made['file']} in {directory}")
    return Path(directory), made
