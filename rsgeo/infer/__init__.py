"""Inference: ONNX export with self-describing metadata, ORT/torch runners, predict-height."""
