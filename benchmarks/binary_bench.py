"""Binary tensor data against JSON numbers: decoding cost in-process, and round trips through the server.

    .venv/bin/python benchmarks/binary_bench.py [--rows 256] [--seconds 6]

In-process: parse + decode of one request of `rows` x 64 FP32 values, each
format timed in turn (A B A B), medians. Through the server: tritonclient.http
at concurrency 1 sending the same `rows`-row request, binary and JSON
interleaved on one server, medians of 3 rounds. Prints markdown.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from optimize.manifest import read_manifest  # noqa: E402
from optimize.measure import cpu_name  # noqa: E402
from optiserve.local_server import start_server, stop_server  # noqa: E402
from serve.http.binary import binary_inputs, split_body  # noqa: E402
from serve.http.protocol import decode_inputs, parse_request  # noqa: E402


def in_process(manifest, rows: np.ndarray, repeats: int = 300) -> dict[str, float]:
    json_body = json.dumps({"inputs": [{"name": "input", "shape": list(rows.shape), "datatype": "FP32",
                                        "data": rows.ravel().tolist()}]}).encode()
    header = json.dumps({"inputs": [{"name": "input", "shape": list(rows.shape), "datatype": "FP32",
                                     "parameters": {"binary_data_size": rows.nbytes}}]}).encode()
    binary_body, header_length = header + rows.tobytes(), str(len(header))

    def decode_json():
        decode_inputs(parse_request(json_body), manifest)

    def decode_binary():
        head, tail = split_body(binary_body, header_length)
        request = parse_request(head)
        decode_inputs(request, manifest, binary_inputs(request, tail))

    times = {"JSON": [], "binary": []}
    for _ in range(repeats):
        for name, run in (("JSON", decode_json), ("binary", decode_binary)):
            started = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(t) * 1e3 for name, t in times.items()} | {
        "JSON bytes": len(json_body), "binary bytes": len(binary_body)}


def through_server(artifact: Path, rows: np.ndarray, seconds: float) -> dict[str, float]:
    import tritonclient.http as triton

    with tempfile.TemporaryDirectory() as logs:
        server = start_server([artifact], Path(logs) / "server.log", "--cache-max-bytes", "0")
        client = triton.InferenceServerClient(urlsplit(server.url).netloc)
        try:
            rates: dict[str, list[float]] = {"JSON": [], "binary": []}
            for _ in range(3):
                for name, binary in (("JSON", False), ("binary", True)):
                    request = triton.InferInput("input", list(rows.shape), "FP32")
                    request.set_data_from_numpy(rows, binary_data=binary)
                    wanted = [triton.InferRequestedOutput("logits", binary_data=binary)]
                    count, stop_at = 0, time.monotonic() + seconds / 3
                    began = time.monotonic()
                    while time.monotonic() < stop_at:
                        client.infer("digits", [request], outputs=wanted)
                        count += 1
                    rates[name].append(count / (time.monotonic() - began))
            return {name: statistics.median(r) for name, r in rates.items()}
        finally:
            client.close()
            stop_server(server)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifact", type=Path, default=Path("artifacts/digits"))
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=6.0)
    args = parser.parse_args()
    rows = np.random.default_rng(0).random((args.rows, 64), dtype=np.float32)
    local = in_process(read_manifest(args.artifact), rows)
    served = through_server(args.artifact, rows, args.seconds)
    print(f"\n{cpu_name()}, {os.cpu_count()} cores, {datetime.date.today()}, one request of {args.rows} x 64 FP32\n")
    print("| | JSON | binary | binary gain |\n|---|---|---|---|")
    print(f"| request size | {local['JSON bytes']:,} B | {local['binary bytes']:,} B | "
          f"{local['JSON bytes'] / local['binary bytes']:.1f}x smaller |")
    print(f"| parse + decode in the replica (median) | {local['JSON']:.3f} ms | {local['binary']:.3f} ms | "
          f"{local['JSON'] / local['binary']:.1f}x faster |")
    print(f"| tritonclient round trips, concurrency 1 | {served['JSON']:,.0f} req/s | {served['binary']:,.0f} req/s | "
          f"{served['binary'] / served['JSON']:.2f}x |")


if __name__ == "__main__":
    main()
