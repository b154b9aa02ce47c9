"""Export: one module per format (ONNX, TFLite, SavedModel, bioimage.io), each verified against Keras."""
