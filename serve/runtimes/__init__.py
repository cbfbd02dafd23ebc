"""The models: an artifact loaded into onnxruntime, torch or TensorRT, with its providers, CUDA graphs and
text tokenization. Nothing here imports Ray."""
