"""Seldon MLServer with adaptive batching: a custom runtime (MLModel) on the V2 protocol it speaks natively.

MLServer's docs: adaptive batching by `max_batch_size` and `max_batch_time` in
model-settings.json (off by default, values found by experiment: we use the
same batch size as every batching system here and a 10 ms window);
`parallel_workers` (settings.json) inference processes to use multiple cores.
Started as `python service.py PORT`: writes both settings files to a temporary
folder and runs `mlserver start` on it.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import BATCH_WAIT_S, MAX_BATCH, MODEL_NAME, WORKERS, PeerModel  # noqa: E402
from mlserver import MLModel  # noqa: E402
from mlserver.codecs import NumpyCodec, StringCodec  # noqa: E402
from mlserver.types import InferenceRequest, InferenceResponse  # noqa: E402


class OnnxRuntimePeer(MLModel):
    async def load(self) -> bool:
        self.peer = PeerModel()
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        tensor = payload.inputs[0]
        codec = StringCodec if self.peer.is_text else NumpyCodec
        rows = codec.decode_input(tensor)
        output = self.peer.infer([rows])[0]
        return InferenceResponse(model_name=self.name,
                                 outputs=[NumpyCodec.encode_output(self.peer.output_name, output)])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


if __name__ == "__main__":
    folder = Path(tempfile.mkdtemp(prefix="mlserver-peer-"))
    (folder / "settings.json").write_text(json.dumps({
        "host": "127.0.0.1", "http_port": int(sys.argv[1]), "grpc_port": _free_port(),
        "metrics_port": _free_port(), "parallel_workers": WORKERS, "debug": False,
    }))
    (folder / "model-settings.json").write_text(json.dumps({
        "name": MODEL_NAME, "implementation": "service.OnnxRuntimePeer",
        "max_batch_size": MAX_BATCH, "max_batch_time": BATCH_WAIT_S,
    }))
    here = Path(__file__).resolve().parent
    os.environ["PYTHONPATH"] = os.pathsep.join([str(here), str(here.parent), os.environ.get("PYTHONPATH", "")])
    cli = str(Path(sys.executable).parent / "mlserver")
    os.execv(cli, [cli, "start", str(folder)])
