"""The `optiserve` command refuses bad artifacts and settings before starting anything."""

import shutil
import socket
import subprocess
import sys


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "optiserve.cli", *args], capture_output=True, text=True, timeout=120)


def test_serve_refuses_an_artifact_whose_sha256_does_not_match(digits_artifact, tmp_path):
    tampered = tmp_path / "digits"
    shutil.copytree(digits_artifact, tampered)
    with open(tampered / "model.onnx", "r+b") as model:
        model.seek(-1, 2)
        last = model.read(1)
        model.seek(-1, 2)
        model.write(bytes([last[0] ^ 0xFF]))
    result = run_cli("serve", str(tampered), "--port", "1")
    assert result.returncode == 2
    assert "sha256 mismatch: manifest expects" in result.stderr


def test_serve_refuses_settings_that_keep_batches_small(digits_artifact, monkeypatch):
    monkeypatch.setenv("OPTISERVE_MAX_ONGOING_REQUESTS", "4")
    result = run_cli("serve", str(digits_artifact), "--max-batch-size", "16")
    assert result.returncode == 2
    assert "max_ongoing_requests must be at least max_batch_size" in result.stderr


def test_serve_refuses_a_directory_without_artifacts(tmp_path):
    result = run_cli("serve", str(tmp_path))
    assert result.returncode == 2 and "expected an artifact directory (manifest.json) or a repository" in result.stderr


def test_serve_refuses_a_port_that_is_taken_before_starting_ray(digits_artifact):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = run_cli("serve", str(digits_artifact), "--port", str(taken.getsockname()[1]))
    assert result.returncode == 2
    assert "cannot listen on 127.0.0.1:" in result.stderr and "expected a free port" in result.stderr
