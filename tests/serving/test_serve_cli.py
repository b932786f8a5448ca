"""`stylepress serve`: a real tritonserver in the foreground, stopped gracefully by a signal."""

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from stylepress.serving import Client, free_port


def _serve(repo, *extra):
    ports = [free_port() for _ in range(3)]
    cmd = [sys.executable, "-m", "stylepress", "serve", str(repo), "--http-port", str(ports[0]),
           "--grpc-port", str(ports[1]), "--metrics-port", str(ports[2]), *extra]
    return subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env={**os.environ, "COLUMNS": "200"}), ports


def _wait_for(proc, text, timeout=120):
    deadline, seen = time.monotonic() + timeout, []
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line and proc.poll() is not None:
            break
        seen.append(line)
        if text in line:
            return "".join(seen)
    pytest.fail(f"no {text!r} from serve: {''.join(seen)}")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_serve_prints_urls_answers_and_stops_gracefully_on_a_signal(served, sig):
    proc, (http, grpc, metrics) = _serve(served.repo)
    try:
        out = _wait_for(proc, "ready:")
        assert f"http://127.0.0.1:{http}" in out and f"127.0.0.1:{grpc}" in out and f":{metrics}/metrics" in out
        photo = sorted(served.photos.iterdir())[0].read_bytes()
        assert Client(f"http://127.0.0.1:{http}").stylize(photo, "oil").startswith(b"\x89PNG")
        proc.send_signal(sig)
        assert proc.wait(60) == 0
        assert "stopped" in proc.stderr.read()
    finally:
        proc.kill()


def test_serve_exits_nonzero_with_the_log_when_a_model_fails_to_load(served, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(served.repo, repo)
    (repo / "tiny_generator" / "1" / "model.onnx").write_bytes(b"not an onnx model")  # passes the file check
    proc, _ = _serve(repo)
    try:
        assert proc.wait(120) == 2
        err = proc.stderr.read()
        assert err.count("\n") == 1 and "tritonserver exited" in err and "tiny_generator" in err
    finally:
        proc.kill()


def test_serve_rejects_an_invalid_repository_before_starting(tmp_path):
    (tmp_path / "empty").mkdir()
    proc, _ = _serve(tmp_path / "empty")
    assert proc.wait(60) == 2 and "no models" in proc.stderr.read()
