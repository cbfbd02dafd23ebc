"""Plain FastAPI + uvicorn + onnxruntime: one request, one onnxruntime call (no batching).

FastAPI's docs: a blocking handler is a plain `def`, which FastAPI runs in its
threadpool; uvicorn's docs: `workers` processes for multiple cores. Access log
off, as optiserve runs. Started by the harness as `python service.py PORT`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import INFER_PATH, WORKERS, PeerModel, request_item  # noqa: E402
from fastapi import FastAPI  # noqa: E402

app = FastAPI()
model = PeerModel()


@app.post(INFER_PATH)
def infer(body: dict[str, Any]) -> dict:
    return model.response(model.infer([request_item(model, body)])[0])


if __name__ == "__main__":
    import uvicorn

    uvicorn.run("service:app", host="127.0.0.1", port=int(sys.argv[1]), workers=WORKERS,
                access_log=False, log_level="warning", app_dir=str(Path(__file__).parent))
