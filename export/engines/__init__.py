"""The TensorRT build side: the readiness lint (CPU), TensorRT's ONNX parser op list, EngineConfig → builder
settings (plain data), the thin builder (full TensorRT + GPU only) and the engine stage that verifies, gates
and publishes engine bundles. The runtime side is distilrt.backends.tensorrt and distilrt.compat."""
