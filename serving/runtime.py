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
import hashlib
import ipaddress
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from stylepress.errors import StylepressError

PYTRITON = "nvidia-pytriton==0.7.0"
# The generator's runtime: the same onnxruntime build as the project's (OpenVINO on x86-64 Linux).
ENV_PACKAGES = ("numpy<2", "pillow", "onnxruntime-openvino" if sys.platform == "linux" and
                os.uname().machine == "x86_64" else "onnxruntime")
DONE = ".complete"
PRELOAD = Path(__file__).with_name("preload.c")  # keys out of `ps`, the server dies with its parent
LOGS_KEPT = 5  # earlier server logs kept as LOG.1 … LOG.5: a crashed server's log survives the next start
# Log lines that explain a failure; the rest of the startup chatter (CUDA, NVML, option tables) is noise.
FAILURE_LINE = re.compile(r"failed to load|^error:|Signal \(\d+\)|Segmentation fault|terminate called|"
                          r"Stub process|Unexpected|Error:|exited", re.IGNORECASE)

# Triton's API groups (--http-restricted-api / --grpc-restricted-protocol). Health stays open for probes.
ADMIN_APIS = ("model-repository", "model-config", "shared-memory", "statistics", "trace", "logging")
INFERENCE_APIS = ("inference", "metadata")
ADMIN_HEADER, INFERENCE_HEADER = "admin-key", "inference-key"  # lowercase: Triton matches them so
GRPC_HEADER = "triton-grpc-protocol-{}"  # how gRPC clients send a restricted-protocol key
KEY_PATTERN = re.compile(r"[A-Za-z0-9._~-]{16,512}")  # no separators Triton's option syntax uses


@dataclass(frozen=True)
class Access:
    """Who may call what. Without an admin key only shared-memory is closed (every admin API when not
    `admin_open`, e.g. a server bound beyond loopback), with a random key nobody holds (registering the
    server's own memory crashed it); without an inference key inference and metadata are open. gRPC
    TLS uses Triton's own flags (its HTTP front end has no TLS: a proxy's job)."""
    admin_key: str | None = field(default=None, repr=False)
    inference_key: str | None = field(default=None, repr=False)
    admin_open: bool = True  # without an admin key: True leaves all but shared-memory open (loopback tools)
    grpc_cert: Path | None = None
    grpc_key: Path | None = None
    grpc_ca: Path | None = None  # set: clients must present a certificate signed by it (mutual TLS)

    def server_args(self) -> tuple[list[str], dict[str, str]]:
        """tritonserver options with `@STYLEPRESS_KEY_<NAME>@` placeholders, and the values by variable."""
        closed = ADMIN_APIS if self.admin_key or not self.admin_open else ("shared-memory",)
        groups = [(closed, ADMIN_HEADER, self.admin_key or secrets.token_hex(32))]
        if self.inference_key:
            groups.append((INFERENCE_APIS, INFERENCE_HEADER, self.inference_key))
        args, values = [], {}
        for apis, header, value in groups:
            values[key_variable(header)] = value
            args += restriction_args(apis, header, f"@{key_variable(header)}@")
        if self.grpc_cert or self.grpc_key:
            if not (self.grpc_cert and self.grpc_key):
                raise StylepressError("gRPC TLS needs both a certificate and its private key")
            args += ["--grpc-use-ssl=true", f"--grpc-server-cert={Path(self.grpc_cert).resolve()}",
                     f"--grpc-server-key={Path(self.grpc_key).resolve()}"]
            if self.grpc_ca:
                args += [f"--grpc-root-cert={Path(self.grpc_ca).resolve()}", "--grpc-use-ssl-mutual=true"]
        return args, values


def key_variable(header: str) -> str:
    """The environment variable preload.c reads a key from; argv holds `@<it>@` instead of the key."""
    return "STYLEPRESS_KEY_" + header.upper().replace("-", "_")


def restriction_args(apis: tuple[str, ...], header: str, value: str) -> list[str]:
    spec = f"{','.join(apis)}:{header}={value}"
    return [f"--http-restricted-api={spec}", f"--grpc-restricted-protocol={spec}"]


def read_key(path: str | Path) -> str:
    """A key from a file (one line); one-line errors, and the key itself never quoted."""
    path = Path(path)
    try:
        key = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise StylepressError(f"key file {path}: cannot read it ({type(exc).__name__})") from None
    if not KEY_PATTERN.fullmatch(key):
        raise StylepressError(f"key file {path}: a key is 16-512 characters of A-Z a-z 0-9 . _ ~ - on one line "
                              "(e.g. `openssl rand -hex 32 > FILE`)")
    return key


def is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


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


def preload_library(cache: Path | None = None) -> Path | None:
    """The library of preload.c, compiled once into the cache; None without a C compiler."""
    cache = Path(cache) if cache is not None else cache_dir()
    lib = cache / f"preload-{os.uname().machine}-{hashlib.sha256(PRELOAD.read_bytes()).hexdigest()[:12]}.so"
    if not lib.is_file():
        compiler = shutil.which("cc") or shutil.which("gcc")
        if compiler is None:
            return None
        cache.mkdir(parents=True, exist_ok=True)
        tmp = lib.with_suffix(f".{os.getpid()}.tmp")
        result = subprocess.run([compiler, "-shared", "-fPIC", "-O2", "-o", str(tmp), str(PRELOAD)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise StylepressError(f"compiling {PRELOAD.name} failed: {' '.join(result.stderr.split())[:300]}")
        os.replace(tmp, lib)
    return lib


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
    """A running tritonserver; a context manager that stops it gracefully.

    Tied to this process: the server gets SIGTERM when the thread that started it exits, even by SIGKILL
    (preload.c; start it from a thread that lives as long as it should). If the server itself dies, the
    process group's leftovers (Python-backend stubs) are killed and their shared-memory regions removed.
    """

    def __init__(self, runtime: Runtime, repo: Path, log_path: Path, address: str = "127.0.0.1",
                 http_port: int = 8000, grpc_port: int = 8001, metrics_port: int = 8002,
                 access: Access = Access(), grpc_address: str | None = None):
        self.address, self.log_path, self.access = address, Path(log_path), access
        self.grpc_address = grpc_address or address  # e.g. gRPC exposed over TLS, HTTP behind the proxy
        self.http_port, self.grpc_port, self.metrics_port = http_port, grpc_port, metrics_port
        # Named regions, so that the ones a killed server leaves in /dev/shm can be found and removed.
        self.shm_prefix = f"stylepress_{os.getpid()}_{secrets.token_hex(4)}_"
        cmd = [str(runtime.server), f"--model-repository={Path(repo).resolve()}", "--model-control-mode=none",
               "--disable-auto-complete-config", "--strict-readiness=true", "--exit-on-error=true",
               f"--http-address={address}", f"--http-port={http_port}",
               f"--grpc-address={self.grpc_address}", f"--grpc-port={grpc_port}",
               f"--metrics-address={address}", f"--metrics-port={metrics_port}",
               f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}"]
        if runtime.backend_dir is not None:
            cmd.append(f"--backend-directory={runtime.backend_dir}")
        restrictions, keys = access.server_args()
        env = dict(os.environ)
        user_keys = bool(access.admin_key or access.inference_key)
        try:
            self.preload = preload_library()
        except StylepressError:
            if user_keys:
                raise
            self.preload = None
        if self.preload is not None:  # keys reach the server through its environment, not its visible argv
            env.update(keys, LD_PRELOAD=str(self.preload), STYLEPRESS_PARENT_PID=str(os.getpid()))
        elif user_keys:
            raise StylepressError("keeping API keys out of `ps` needs a C compiler (cc, with the C library's "
                                  "headers) to build a small preload library: install gcc")
        else:  # only the random shared-memory key, which then shows in `ps` to local users
            restrictions = [re.sub(r"@(STYLEPRESS_KEY_\w+)@", lambda m: keys[m.group(1)], a) for a in restrictions]
        cmd += restrictions
        if runtime.env_bin is not None:
            env["PATH"] = f"{runtime.env_bin}{os.pathsep}{env.get('PATH', '')}"
            env.pop("VIRTUAL_ENV", None)
            env.pop("PYTHONPATH", None)
        env["PYTHONDONTWRITEBYTECODE"] = "1"  # the repository stays exactly as written (and verifiable)
        _rotate(self.log_path)
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                            start_new_session=True)  # our Ctrl-C is forwarded, not duplicated

    @property
    def http_url(self) -> str:
        return f"http://{_host(self.address)}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{_host(self.grpc_address)}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{_host(self.address)}:{self.metrics_port}/metrics"

    def is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.http_url}/v2/health/ready", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def wait_ready(self, timeout: float = 180.0, stop: list | None = None) -> bool:
        """Wait until the models are loaded; False (server stopped) as soon as `stop` gets an entry, e.g.
        from a signal handler: Ctrl-C works while models load."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if stop:
                self.stop()
                return False
            if self.process.poll() is not None:
                self.reap()
                raise StylepressError(f"tritonserver {self.exit_reason()} while loading models")
            if self.is_ready():
                self._check_preload()
                return True
            time.sleep(0.25)
        self.stop()
        raise StylepressError(f"tritonserver not ready after {timeout:.0f} s ({self.log_path}: {self.failure_lines()})")

    def _check_preload(self) -> None:
        """The loader skips a preload it cannot load (a noexec cache, another machine's build) with only a
        warning: the server would then hold the public placeholder as its key. Refuse to serve so."""
        if self.preload is None:
            return
        try:
            mapped = str(self.preload) in Path(f"/proc/{self.process.pid}/maps").read_text()
        except OSError:
            return  # no /proc: nothing to check with
        if not mapped:
            self.stop()
            raise StylepressError(f"tritonserver started without {self.preload} loaded, so its API keys would be "
                                  "the placeholders `ps` shows: refusing to serve (is the cache on a noexec mount?)")

    def exit_reason(self) -> str:
        """How the server ended, with the log lines that explain it: one line for an error message."""
        code = self.process.returncode
        if code is not None and code < 0:
            try:
                how = f"was killed by {signal.Signals(-code).name}"
            except ValueError:  # a real-time signal has no name
                how = f"was killed by signal {-code}"
        else:
            how = f"exited with code {code}"
        return f"{how} ({self.log_path}: {self.failure_lines()})"

    def failure_lines(self, lines: int = 3) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.is_file() else ""
        found = [" ".join(line.split())[:240] for line in text.splitlines() if FAILURE_LINE.search(line)
                 and "CudaDriverHelper" not in line and "NVML" not in line]
        return " | ".join(found[-lines:]) or "no error lines in the log"

    def reap(self) -> None:
        """After the server ended: kill what is left of its process group (stubs a killed server
        orphaned) and remove its shared-memory regions."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        for region in Path("/dev/shm").glob(f"{self.shm_prefix}*"):
            region.unlink(missing_ok=True)

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
        self.reap()
        return self.process.returncode

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _rotate(log: Path) -> None:
    """LOG -> LOG.1 -> … -> LOG.<LOGS_KEPT>: every start gets a fresh log, the last ones are kept."""
    log.parent.mkdir(parents=True, exist_ok=True)
    for i in range(LOGS_KEPT - 1, 0, -1):
        older = log.with_name(f"{log.name}.{i}")
        if older.exists():
            os.replace(older, log.with_name(f"{log.name}.{i + 1}"))
    if log.exists():
        os.replace(log, log.with_name(f"{log.name}.1"))


def local_server(repo: Path, log_path: Path, log=print, access: Access = Access()) -> Server:
    """The managed runtime serving `repo` on free loopback ports (started; wait_ready() next)."""
    runtime = install(log=log)
    ports = {k: free_port() for k in ("http_port", "grpc_port", "metrics_port")}
    return Server(runtime, repo, log_path, access=access, **ports)


def _host(address: str) -> str:
    return "127.0.0.1" if address in ("0.0.0.0", "") else address
