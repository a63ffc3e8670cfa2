"""Deployment: ONNX export checked in ONNX Runtime, int8 quantisation (imports onnx only when used)."""
