"""Inference: tiles and stitching, one loader for every backend (Keras, ONNX, TFLite, SavedModel), prediction."""
