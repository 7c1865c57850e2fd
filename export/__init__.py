"""The build side: checkpoint → ONNX fp32 → fused / fp16 / int8 variants → TensorRT engines, each verified and
gated before it is published as a bundle. Needs torch, transformers and onnx (pip install distilrt[export]);
may import the runtime and calib, which never import it."""
