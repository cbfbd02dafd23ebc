"""LitServe with batching: LitAPI(max_batch_size, batch_timeout) and batch/unbatch.

LitServe's docs (LitServer docstring): for CPU, `workers_per_device` = cores;
`fast_queue=True` (ZeroMQ) above ~100 req/s; `server.run(log_level="warning",
generate_client_file=False)` for production. Started as `python service.py PORT`.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import litserve as ls  # noqa: E402
from common import BATCH_WAIT_S, INFER_PATH, MAX_BATCH, WORKERS, PeerModel, request_item  # noqa: E402


class OnnxAPI(ls.LitAPI):
    def setup(self, device) -> None:
        self.model = PeerModel()

    def decode_request(self, request: dict):
        return request_item(self.model, request)

    def batch(self, items: list) -> list:
        return items

    def predict(self, items: list) -> list:
        return self.model.infer(items)

    def unbatch(self, outputs: list) -> list:
        return outputs

    def encode_response(self, output) -> dict:
        return self.model.response(output)


if __name__ == "__main__":
    api = OnnxAPI(max_batch_size=MAX_BATCH, batch_timeout=BATCH_WAIT_S, api_path=INFER_PATH)
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=WORKERS, fast_queue=True)
    server.run(host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", generate_client_file=False)
