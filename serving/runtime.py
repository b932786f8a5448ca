"""A real `tritonserver` on machines without containers or GPUs (DESIGN.md).

The nvidia-pytriton wheel carries tritonserver 2.51 with the Python backend. It is unpacked into a
cache folder, never into the project's environment (it pins numpy < 2), and Python-backend models
run in a separate numpy < 2 virtualenv beside it. `install()` is idempotent and crash-safe: each
part is marked complete only after it is fully in place.
"""

from __future__ import annotations

import contextlib
import fcntl
import filecmp
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from stylepress.errors import StylepressError

PYTRITON = "nvidia-pytriton==0.7.0"
# The generator's runtime: the same onnxruntime build as the project's (OpenVINO on x86-64 Linux).
ENV_PACKAGES = ("numpy<2", "pillow", "onnxruntime-openvino" if sys.platform == "linux" and
                os.uname().machine == "x86_64" else "onnxruntime")
DONE = ".complete"


@dataclass(frozen=True)
class Runtime:
    server: Path
    backend_dir: Path | None = None  # None: the server's own default (/opt/tritonserver/backends)
    env_bin: Path | None = None  # put first on PATH: the interpreter Python-backend models run in


def cache_dir() -> Path:
    if os.environ.get("STYLEPRESS_CACHE"):
        return Path(os.environ["STYLEPRESS_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "stylepress"


def install(cache: Path | None = None, log=print) -> Runtime:
    """Provision the CPU Triton runtime under `cache` (once; later calls return at once)."""
    cache = Path(cache) if cache is not None else cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    triton, env = cache / "triton", cache / f"triton-env-py{py}"
    with open(cache / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two processes installing at once would corrupt both
        if not (triton / DONE).is_file():
            log(f"installing tritonserver ({PYTRITON}) into {triton}")
            shutil.rmtree(triton, ignore_errors=True)
            _pip([sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(triton), PYTRITON])
            (triton / DONE).touch()
        server_root = triton / "pytriton" / "tritonserver"
        stub = server_root / "python_backend_stubs" / py / "triton_python_backend_stub"
        if not stub.is_file():
            raise StylepressError(f"the Triton Python backend has no stub for Python {py}")
        installed = server_root / "backends" / "python" / stub.name
        if not installed.is_file() or not filecmp.cmp(stub, installed, shallow=False):
            shutil.copy2(stub, f"{installed}.tmp")
            os.replace(f"{installed}.tmp", installed)  # a running server may be using the old one
        stamp = "\n".join(ENV_PACKAGES)  # an environment built for another package list is rebuilt
        if not (env / DONE).is_file() or (env / DONE).read_text() != stamp:
            log(f"creating the Python-backend environment {env}")
            shutil.rmtree(env, ignore_errors=True)
            _pip([sys.executable, "-m", "venv", str(env)])
            _pip([str(env / "bin" / "python"), "-m", "pip", "install", "--quiet", *ENV_PACKAGES])
            (env / DONE).write_text(stamp)
    return Runtime(server_root / "bin" / "tritonserver", server_root / "backends", env / "bin")


def _pip(cmd: list[str]) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        tail = " ".join(result.stderr.strip().splitlines()[-1:])
        raise StylepressError(f"{' '.join(cmd[:4])} … failed: {tail}")


def find_runtime(tritonserver: str | Path | None = None, log=print) -> Runtime:
    """The server to use: the given path, else `tritonserver` on PATH, else the managed install."""
    if tritonserver is not None:
        path = Path(tritonserver)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise StylepressError(f"--tritonserver {path}: not an executable file")
        return Runtime(path)
    on_path = shutil.which("tritonserver")
    if on_path:
        return Runtime(Path(on_path))
    return install(log=log)


def free_port(address: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]


class Server:
    """A running tritonserver; a context manager that stops it gracefully."""

    def __init__(self, runtime: Runtime, repo: Path, log_path: Path, address: str = "127.0.0.1",
                 http_port: int = 8000, grpc_port: int = 8001, metrics_port: int = 8002):
        self.address, self.log_path = address, Path(log_path)
        self.http_port, self.grpc_port, self.metrics_port = http_port, grpc_port, metrics_port
        cmd = [str(runtime.server), f"--model-repository={Path(repo).resolve()}", "--model-control-mode=none",
               "--disable-auto-complete-config", "--strict-readiness=true", "--exit-on-error=true",
               f"--http-address={address}", f"--http-port={http_port}",
               f"--grpc-address={address}", f"--grpc-port={grpc_port}",
               f"--metrics-address={address}", f"--metrics-port={metrics_port}"]
        if runtime.backend_dir is not None:
            cmd.append(f"--backend-directory={runtime.backend_dir}")
        env = dict(os.environ)
        if runtime.env_bin is not None:
            env["PATH"] = f"{runtime.env_bin}{os.pathsep}{env.get('PATH', '')}"
            env.pop("VIRTUAL_ENV", None)
            env.pop("PYTHONPATH", None)
        env["PYTHONDONTWRITEBYTECODE"] = "1"  # the repository stays exactly as written (and verifiable)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                            start_new_session=True)  # our Ctrl-C is forwarded, not duplicated

    @property
    def http_url(self) -> str:
        return f"http://{_host(self.address)}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{_host(self.address)}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{_host(self.address)}:{self.metrics_port}/metrics"

    def is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.http_url}/v2/health/ready", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def wait_ready(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise StylepressError(f"tritonserver exited with code {self.process.returncode} while loading "
                                      f"models; last lines of {self.log_path}: {self.log_tail()}")
            if self.is_ready():
                return
            time.sleep(0.25)
        self.stop()
        raise StylepressError(f"tritonserver not ready after {timeout:.0f} s; last lines of {self.log_path}: "
                              f"{self.log_tail()}")

    def log_tail(self, lines: int = 5) -> str:
        """The log's model-load failures if any, else its last lines, joined into one line."""
        text = self.log_path.read_text(errors="replace") if self.log_path.is_file() else ""
        failures = [line for line in text.splitlines() if "failed to load" in line or line.startswith("error:")]
        return " | ".join(line.strip() for line in (failures or text.strip().splitlines())[-lines:])

    def stop(self, timeout: float = 30.0) -> int:
        """SIGINT (Triton's graceful shutdown: finish in-flight requests), then SIGKILL after `timeout`."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        return self.process.returncode

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def local_server(repo: Path, log_path: Path, log=print) -> Server:
    """The managed runtime serving `repo` on free loopback ports (started; wait_ready() next)."""
    runtime = install(log=log)
    ports = {k: free_port() for k in ("http_port", "grpc_port", "metrics_port")}
    return Server(runtime, repo, log_path, **ports)


def _host(address: str) -> str:
    return "127.0.0.1" if address in ("0.0.0.0", "") else address
