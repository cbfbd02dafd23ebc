"""What every peer server shares: the artifact loaded into onnxruntime, V2 bodies in and out.

Each peer's service.py imports this module (benchmarks/peers is on its
PYTHONPATH) and adds only its own framework's glue, so every peer serves the
same ONNX file with the same onnxruntime settings and the same request and
response handling. Needs numpy, onnxruntime and tokenizers only.

Environment, set by the harness (benchmarks/peer_systems.py):
    PEER_ARTIFACT      artifact directory (manifest.json + the ONNX file [+ tokenizer.json])
    PEER_THREADS       onnxruntime intra-op threads per worker (optiserve's per-replica default: 1)
    PEER_WORKERS       worker processes (or replicas) per server
    PEER_MAX_BATCH     largest batch a batching peer may form
    PEER_BATCH_WAIT_S  longest a batching peer waits to fill a batch
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

MAX_TOKENS = 256  # all-MiniLM-L6-v2's truncation length, unless the manifest says otherwise


def setting(name: str, default: str) -> str:
    return os.environ.get(f"PEER_{name}", default)


ARTIFACT = Path(setting("ARTIFACT", "artifacts/digits"))
THREADS = int(setting("THREADS", "1"))
WORKERS = int(setting("WORKERS", "2"))
MAX_BATCH = int(setting("MAX_BATCH", "32"))
BATCH_WAIT_S = float(setting("BATCH_WAIT_S", "0.01"))
MODEL_NAME = json.loads((ARTIFACT / "manifest.json").read_text())["name"]
INFER_PATH = f"/v2/models/{MODEL_NAME}/infer"


class PeerModel:
    """The artifact's ONNX model; `items` are per-request inputs, `infer` runs one batch of them."""

    def __init__(self, artifact: Path = ARTIFACT, threads: int = THREADS) -> None:
        manifest = json.loads((artifact / "manifest.json").read_text())
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(
            str(artifact / manifest["model_file"]), options, providers=["CPUExecutionProvider"])
        self.name = manifest["name"]
        self.output_name = manifest["outputs"][0]["name"]
        self.tokenizer = None
        text = manifest.get("text_input")  # a text model: V2 BYTES input, tokenized here
        self.input = {"name": text["name"]} if text else manifest["inputs"][0]
        if text:
            from tokenizers import Tokenizer

            self.tokenizer = Tokenizer.from_file(str(artifact / text.get("tokenizer_file", "tokenizer.json")))
            self.tokenizer.enable_truncation(text.get("max_length", MAX_TOKENS))
            self.tokenizer.enable_padding()  # to the longest sequence of each batch
            self.feeds = (text.get("ids_input", "input_ids"), text.get("mask_input", "attention_mask"))

    @property
    def is_text(self) -> bool:
        return self.tokenizer is not None

    def item(self, tensor: dict):
        """One V2 input tensor (a parsed JSON dict) as a request's rows: float32 [n, ...] or a list of strings."""
        if tensor.get("name") != self.input["name"]:
            raise ValueError(f"expected input {self.input['name']!r}, got {tensor.get('name')!r}")
        data = tensor["data"]
        if self.is_text:
            return [str(text) for text in data]
        return np.asarray(data, dtype=np.float32).reshape(tensor["shape"])

    def infer(self, items: list) -> list[np.ndarray]:
        """Run every request's rows in one onnxruntime call; one output array per request."""
        if self.is_text:
            texts = [text for item in items for text in item]
            feeds = self._tokenize(texts)
        else:
            feeds = {self.input["name"]: np.concatenate(items) if len(items) > 1 else items[0]}
        output = self.session.run([self.output_name], feeds)[0]
        sizes = np.cumsum([len(item) for item in items])[:-1]
        return np.split(output, sizes)

    def _tokenize(self, texts: list[str]) -> dict[str, np.ndarray]:
        encodings = self.tokenizer.encode_batch_fast(texts)  # no offsets, as optiserve
        ids, mask = self.feeds
        return {
            ids: np.array([e.ids for e in encodings], dtype=np.int64),
            mask: np.array([e.attention_mask for e in encodings], dtype=np.int64),
        }

    def output_tensor(self, output: np.ndarray) -> dict:
        return {"name": self.output_name, "datatype": "FP32", "shape": list(output.shape),
                "data": output.ravel().tolist()}

    def response(self, output: np.ndarray) -> dict:
        """A KServe V2 response body for one request's output."""
        return {"model_name": self.name, "outputs": [self.output_tensor(output)]}


def request_item(model: PeerModel, body: dict):
    """A V2 request body's single input tensor as model rows."""
    inputs = body.get("inputs") or []
    if len(inputs) != 1:
        raise ValueError(f"expected 1 input tensor, got {len(inputs)}")
    return model.item(inputs[0])
