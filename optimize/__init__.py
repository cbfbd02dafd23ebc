"""optimize: turn a trained model into a served artifact (ONNX model + manifest).

Kept free of heavy imports so that `serve` can import `optimize.manifest`
without pulling in torch.
"""
