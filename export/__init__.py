"""Export to ONNX, FP16/INT8 and TensorRT (not yet implemented)."""
