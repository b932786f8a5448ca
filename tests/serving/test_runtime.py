"""The managed CPU Triton runtime: idempotent install, server discovery."""

import os

import pytest
from conftest import run_cli

from stylepress.errors import StylepressError
from stylepress.serving import find_runtime, install


@pytest.mark.serving  # installs the runtime (the network, on a cold cache)
def test_install_is_idempotent_and_cli_reports_the_server():
    first, second = install(log=lambda *_: None), install(log=lambda *_: None)
    assert first == second and first.server.is_file() and os.access(first.server, os.X_OK)
    assert (first.env_bin / "python").is_file() and (first.backend_dir / "python").is_dir()
    result = run_cli("triton", "install")
    assert result.returncode == 0 and str(first.server) in result.stderr.replace("\n", "")


def test_explicit_tritonserver_must_be_executable(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(StylepressError, match="not an executable file"):
        find_runtime(tmp_path / "tritonserver")
    fake = tmp_path / "tritonserver"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    assert find_runtime().server == fake  # PATH comes before the managed install


def test_the_suite_keeps_its_caches_out_of_the_users_home():
    """conftest points STYLEPRESS_CACHE (and XDG/matplotlib caches) at the repository's .cache/."""
    from pathlib import Path

    from stylepress.serving.runtime import cache_dir

    assert not cache_dir().resolve().is_relative_to(Path.home() / ".cache")
    assert not Path(os.environ["MPLCONFIGDIR"]).resolve().is_relative_to(Path.home())
