"""Triton serving: the model repository writer and checker, the CPU Triton runtime, and a client.

Entry points: `write_repository(cfg, run_dir)`, `check_repository(path)`, `install()`, `Server`,
`Client(url)`.
"""

from .check import check_repository
from .client import Client
from .repository import REPOSITORY, write_repository
from .runtime import Access, Runtime, Server, find_runtime, free_port, install, is_loopback, local_server, read_key

__all__ = ["REPOSITORY", "Access", "Client", "Runtime", "Server", "check_repository", "find_runtime", "free_port",
           "install", "is_loopback", "local_server", "read_key", "write_repository"]
