"""The guard in front of Triton's HTTP port: nginx (Debian's package) as a reverse proxy.

It terminates TLS, checks the inference key, passes only the v2 inference, health and metadata routes
of the named models with their methods and content types, caps the body at the upload limit and drops
half-sent bodies. Triton's HTTP front end crashed on one >= 4 MiB form-encoded POST (and this build
cannot be patched): behind the proxy it never sees one. Hand-written text because nginx's config has no
well-kept generator; `nginx -t` checks every file this writes.

The key never goes into nginx.conf: the config includes `inference-key.map` beside it, one line
`"~^KEY$" 1;` (an anchored regex with the key's dots escaped: nginx matches plain map strings
case-insensitively), written with mode 0600 by `write_config`, or by the operator on a production host.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

from stylepress.errors import StylepressError
from stylepress.fsutil import atomic_write

from .runtime import INFERENCE_HEADER

CONFIG, KEY_MAP = "nginx.conf", "inference-key.map"
HEADER_SLACK = 64 * 1024  # the JSON inference header beside the image bytes
BODY_TIMEOUT_S = 10  # a body (or header) not sent within this is dropped: no slow-loris on Triton
# tritonclient sends no Content-Type with binary tensors; JSON clients send application/json.
CONTENT_TYPES = ("", "application/json", "application/octet-stream")


def nginx_binary() -> str:
    found = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)
    if found is None:
        raise StylepressError("nginx not found: install Debian's nginx-light (or nginx) package "
                              "(`make setup` does, as root)")
    return found


def nginx_conf(upstream: str, listen: str, models: list[str], max_bytes: int, tls: tuple[Path, Path] | None,
               key_required: bool = True, key_map: str = KEY_MAP) -> str:
    """The proxy's nginx.conf; paths without a slash resolve in the config's folder (nginx -p)."""
    host = urlsplit(upstream if "://" in upstream else f"http://{upstream}").netloc
    names = "|".join(m.replace(".", r"\.") for m in models)
    check_key = "        if ($key_ok = 0) { return 401; }\n" if key_required else ""
    header_var = "$http_" + INFERENCE_HEADER.replace("-", "_")
    ssl = ""
    if tls is not None:
        ssl = (f"        ssl_certificate {tls[0]};\n        ssl_certificate_key {tls[1]};\n"
               "        ssl_protocols TLSv1.2 TLSv1.3;\n")
    types = "\n".join(f'        "{t}" 1;' for t in CONTENT_TYPES)
    return f"""# stylepress: the guard in front of Triton's HTTP port (serving/proxy.py). Start with
#   nginx -p <this folder> -c nginx.conf -g 'daemon off;'
# {KEY_MAP} beside this file holds the inference key as one line `"~^KEY$" 1;`: the key, regex-escaped (mode 0600).
worker_processes 1;
pid nginx.pid;
error_log error.log warn;
events {{ worker_connections 1024; }}
http {{
    server_tokens off;
    access_log access.log;  # the default format logs no request headers, so no keys
    client_max_body_size {max_bytes + HEADER_SLACK};
    client_body_buffer_size {max_bytes + HEADER_SLACK};  # in memory: no temporary files
    client_body_timeout {BODY_TIMEOUT_S}s;
    client_header_timeout {BODY_TIMEOUT_S}s;
    send_timeout 60s;
    keepalive_timeout 30s;
    client_body_temp_path body_temp;
    proxy_temp_path proxy_temp;
    fastcgi_temp_path fastcgi_temp;
    uwsgi_temp_path uwsgi_temp;
    scgi_temp_path scgi_temp;
    map {header_var} $key_ok {{
        default 0;
        include {key_map};
    }}
    map $content_type $type_ok {{
        default 0;
{types}
    }}
    upstream triton {{
        server {host};
        keepalive 16;
    }}
    server {{
        listen {listen}{' ssl' if tls else ''};
{ssl}        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_read_timeout 120s;
        location ~ ^/v2/health/(live|ready)$ {{
            limit_except GET {{ deny all; }}
            proxy_pass http://triton;
        }}
        location ~ ^/v2/models/({names})(/versions/[0-9]+)?/infer$ {{
            limit_except POST {{ deny all; }}
{check_key.replace('        ', '            ', 1)}            if ($type_ok = 0) {{ return 415; }}
            proxy_pass http://triton;
        }}
        location ~ ^/v2(/models/({names})(/versions/[0-9]+)?(/ready)?)?$ {{
            limit_except GET {{ deny all; }}
{check_key.replace('        ', '            ', 1)}            proxy_pass http://triton;
        }}
        location / {{ return 404; }}
    }}
}}
"""


def write_config(folder: Path, upstream: str, listen: str, models: list[str], max_bytes: int,
                 tls: tuple[Path, Path] | None, key: str | None) -> Path:
    """nginx.conf (and the key map, 0600, when `key` is given) in `folder`, checked with `nginx -t`."""
    folder.mkdir(parents=True, exist_ok=True)
    conf = folder / CONFIG
    atomic_write(conf, lambda tmp: Path(tmp).write_text(nginx_conf(upstream, listen, models, max_bytes, tls,
                                                                   key is not None)))
    key_map = folder / KEY_MAP
    if key is not None:
        # An anchored, escaped regex: nginx compares plain map strings case-insensitively.
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{KEY_MAP}.")  # 0600, a fresh name: no symlink games
        with os.fdopen(fd, "w") as f:
            f.write(f'"~^{re.escape(key)}$" 1;\n')
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, key_map)
    elif not key_map.exists():
        key_map.write_text("")  # no key: nothing maps to 1, but no route asks
    result = subprocess.run([nginx_binary(), "-t", "-q", "-p", str(folder), "-c", str(conf)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise StylepressError(f"nginx rejects {conf}: {' '.join(result.stderr.split())[:300]}")
    return conf


class Proxy:
    """nginx running a config in a private folder (0711: workers reach their temp folders in it, not the
    key map); a
    context manager that stops it gracefully."""

    def __init__(self, upstream: str, listen: str, models: list[str], max_bytes: int, key: str | None,
                 tls: tuple[Path, Path] | None = None):
        self.folder = Path(tempfile.mkdtemp(prefix="stylepress-proxy-"))
        self.folder.chmod(0o711)
        self.listen, self.process = listen, None
        try:  # a failed start leaves no folder (and no key map) behind
            conf = write_config(self.folder, upstream, listen, models, max_bytes, tls, key)
            self.process = subprocess.Popen([nginx_binary(), "-p", str(self.folder), "-c", str(conf), "-g",
                                             "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                            start_new_session=True)
            self._wait_listening()
        except BaseException:
            self.stop()
            raise

    def _wait_listening(self, timeout: float = 10.0) -> None:
        host, _, port = self.listen.rpartition(":")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise StylepressError(f"nginx exited: {' '.join(self.process.stderr.read().decode().split())[:300]}")
            try:
                socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise StylepressError(f"nginx is not listening on {self.listen} after {timeout:.0f} s")

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)  # nginx's graceful shutdown
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)
        return None if self.process is None else self.process.returncode

    def __enter__(self) -> Proxy:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
