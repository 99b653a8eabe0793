"""Export of components to ONNX and TensorRT, and runtimes that run the exported artefacts."""
