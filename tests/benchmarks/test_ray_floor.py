"""The do-nothing replica app of benchmarks/ray_floor.py, on plain asyncio (the benchmark itself needs Ray)."""

import asyncio
import json

from benchmarks.ray_floor import ANSWER, answer_fixed


def test_the_fixed_app_reads_the_whole_body_then_answers_one_v2_response():
    chunks = [{"type": "http.request", "body": b'{"inputs":', "more_body": True},
              {"type": "http.request", "body": b"[]}", "more_body": False}]
    sent = []

    async def receive():
        return chunks.pop(0)

    async def send(message):
        sent.append(message)

    asyncio.run(answer_fixed({"type": "http", "method": "POST"}, receive, send))
    assert chunks == []  # every chunk read before answering
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert sent[0]["status"] == 200
    assert dict(sent[0]["headers"])[b"content-length"] == str(len(ANSWER)).encode()
    assert json.loads(sent[1]["body"])["outputs"][0]["shape"] == [1, 10]
