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
def test_serve_prints_urls_answers_and_stops_gracefully_on_a_signal(served, sig, tmp_path):
    repo = shutil.copytree(served.repo, tmp_path / "repo")  # its log goes beside the copy
    proc, (http, grpc, metrics) = _serve(repo)
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


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _alive(pid: int) -> bool:
    """Running (a zombie nobody reaped counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _gone(pids, timeout=60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(_alive(p) for p in pids):
            return True
        time.sleep(0.2)
    return False


def _shm_regions(pid: int) -> list[str]:
    return [p for p in os.listdir("/dev/shm") if p.startswith(f"stylepress_{pid}_")]


def test_a_killed_server_is_reported_in_one_line_and_leaves_no_stub_shared_memory_or_lost_log(served, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(served.repo, repo)
    proc, _ = _serve(repo)
    try:
        _wait_for(proc, "ready:")
        (server,) = _children(proc.pid)
        stubs = _children(server)
        assert stubs and _shm_regions(proc.pid)  # the Python-backend stubs and their regions exist
        os.kill(server, signal.SIGKILL)
        assert proc.wait(60) == 2
        err = [line for line in proc.stderr.read().splitlines() if not line.startswith("log: ")]
        assert len(err) == 1 and "tritonserver was killed by SIGKILL" in err[0]
        assert _gone(stubs, 10) and not _shm_regions(proc.pid)
    finally:
        proc.kill()
    first_log = (tmp_path / "tritonserver.log").read_text()
    proc, _ = _serve(repo)  # the next start keeps the crashed server's log
    try:
        _wait_for(proc, "ready:")
        assert (tmp_path / "tritonserver.log.1").read_text() == first_log
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
    finally:
        proc.kill()


def test_ctrl_c_while_models_load_stops_the_server_at_once(served, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(served.repo, repo)
    proc, _ = _serve(repo)
    try:
        deadline = time.monotonic() + 60
        while not _children(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        (server,) = _children(proc.pid)
        proc.send_signal(signal.SIGINT)  # models are still loading
        assert proc.wait(60) == 0
        assert "ready:" not in proc.stderr.read()
        assert _gone([server], 5)
    finally:
        proc.kill()


def test_a_server_dies_with_the_process_that_started_it(served, tmp_path):
    """SIGKILL of the starter (e.g. `build` during its serving bench) must not leave tritonserver or
    its stubs running."""
    script = ("import sys, time\nfrom pathlib import Path\nfrom stylepress import serving\n"
              f"s = serving.local_server(Path({str(served.repo)!r}), Path({str(tmp_path / 'log')!r}))\n"
              "s.wait_ready()\nprint(s.process.pid, flush=True)\ntime.sleep(600)\n")
    starter = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        server = int(starter.stdout.readline())
        stubs = _children(server)
        assert stubs
        starter.kill()
        starter.wait()
        assert _gone([server, *stubs], 60)
    finally:
        starter.kill()
