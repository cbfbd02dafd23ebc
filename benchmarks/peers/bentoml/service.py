"""BentoML with adaptive batching: @bentoml.api(batchable=True, max_batch_size, max_latency_ms).

BentoML's docs: a batchable API takes one list-typed parameter that BentoML
concatenates across requests (here `inputs`, the V2 body's own field, one
tensor per request) and splits the returned list back; `workers` processes
per service for multiple CPU cores. The request body is the KServe V2 body; the
response is the V2 `outputs` list itself (`[{"name",...}]`, BentoML returns
the API's return value as the body), not wrapped in `{"outputs": ...}`.
Started as `python service.py PORT` (which runs `bentoml serve`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bentoml  # noqa: E402
from common import INFER_PATH, MAX_BATCH, WORKERS, PeerModel  # noqa: E402
from pydantic import BaseModel  # noqa: E402


class Tensor(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list[Any]


@bentoml.service(workers=WORKERS, traffic={"timeout": 60})
class OnnxService:
    def __init__(self) -> None:
        self.model = PeerModel()

    @bentoml.api(route=INFER_PATH, batchable=True, max_batch_size=MAX_BATCH, max_latency_ms=1000)
    def infer(self, inputs: list[Tensor]) -> list[dict]:
        items = [self.model.item(tensor.model_dump()) for tensor in inputs]
        return [self.model.output_tensor(output) for output in self.model.infer(items)]


if __name__ == "__main__":
    here = Path(__file__).resolve().parent
    os.chdir(here)
    bentoml_cli = str(Path(sys.executable).parent / "bentoml")
    os.execv(bentoml_cli, [bentoml_cli, "serve", "service:OnnxService", "--host", "127.0.0.1",
                           "--port", sys.argv[1]])
