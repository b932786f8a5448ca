"""`stylepress build` and `verify`: incremental reruns, --force, kills, tampering."""

import json
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from conftest import DEMO_PHOTOS, run_cli
from PIL import Image

pytestmark = pytest.mark.slow


def _config(tmp_path, extra: str = "") -> tuple:
    photos = tmp_path / "photos"
    photos.mkdir(exist_ok=True)
    for name, src in DEMO_PHOTOS.items():
        (photos / name).write_bytes(src.read_bytes())
    config = tmp_path / "build.toml"
    config.write_text(textwrap.dedent(f"""\
        name = "tiny"
        [data]
        photos = "{photos}"
        val_photos = "{photos}"
        styles = ["sketch", "oil"]
        resolution = 64
        [model]
        ngf = 8
        n_blocks = 1
        ndf = 8
        [train]
        steps = 12
        batch_size = 2
        val_every = 6
        checkpoint_every = 6
        [export]
        precisions = ["fp32", "int8"]
        [export.int8]
        max_fallback = 1
        [bench]
        repeats = 3
        threads = 1
        resolutions = [64]
        batches = [1, 2]
        """) + extra)
    return config, tmp_path / "run"


def _stages(result):
    return {line.split()[0]: line.split()[1] for line in result.stdout.splitlines() + result.stderr.splitlines()
            if line.split() and line.split()[0] in ("train", "compress", "export", "repo", "bench")
            and len(line.split()) > 1 and line.split()[1] in ("ran", "skipped", "not")}


def _manifest(run_dir):
    return json.loads((run_dir / "manifest.json").read_text())


def test_unchanged_rerun_skips_every_stage_and_force_reruns_the_chosen_ones(tmp_path):
    config, run_dir = _config(tmp_path)
    first = run_cli("build", config, "--out", run_dir)
    assert first.returncode == 0, first.stderr
    assert _stages(first) == {"train": "ran", "compress": "not", "export": "ran", "repo": "ran", "bench": "ran"}
    manifest = _manifest(run_dir)
    assert set(manifest["stages"]) == {"train", "export", "repo", "bench"}
    entry = manifest["stages"]["export"]
    assert "export/tiny.fp32.onnx" not in entry["outputs"] and "export/teacher.int8.onnx" in entry["outputs"]
    assert entry["inputs"] == manifest["stages"]["train"]["outputs"] and entry["versions"]["torch"]
    assert all(len(h) == 64 for h in entry["outputs"].values()) and entry["wall_s"] > 0

    again = run_cli("build", config, "--out", run_dir)
    assert again.returncode == 0, again.stderr
    assert set(_stages(again).values()) <= {"skipped", "not"}
    assert _manifest(run_dir) == manifest  # nothing ran, nothing was rewritten

    forced = run_cli("build", config, "--out", run_dir, "--force", "--from", "export", "--until", "repo")
    assert forced.returncode == 0, forced.stderr
    assert _stages(forced) == {"export": "ran", "repo": "ran"}
    after = _manifest(run_dir)["stages"]
    assert after["train"] == manifest["stages"]["train"] and after["bench"] == manifest["stages"]["bench"]
    assert after["export"]["finished"] >= manifest["stages"]["export"]["finished"]

    # A serving change reruns the repository (and the bench reading it), not training or export.
    config.write_text(config.read_text() + "[serving]\nmax_batch_size = 4\n")
    edited = run_cli("build", config, "--out", run_dir)
    assert edited.returncode == 0, edited.stderr
    assert _stages(edited) == {"train": "skipped", "compress": "not", "export": "skipped", "repo": "ran",
                               "bench": "ran"}
    assert run_cli("verify", run_dir).returncode == 0
    report = json.loads((run_dir / "report" / "report.json").read_text())
    assert report["schema"] == 1 and report["selected"] and (run_dir / "report" / "pareto.png").stat().st_size
    assert {v["name"] for v in report["variants"]} >= {"teacher-fp32-default", "teacher-int8-default"}
    served = [v for v in report["variants"] if v["name"].startswith("triton-")]
    assert len(served) == 1 and {(p["protocol"], p["concurrency"]) for p in served[0]["points"]} == {
        (proto, c) for proto in ("http", "grpc") for c in (1, 2, 4, 8)}

    _renders_in_chromium(run_dir / "report" / "report.html", tmp_path)

    # A gate that cannot pass: exit code 3 and the gate table; only the bench stage reran.
    config.write_text(config.read_text() + "[gates]\nmin_speedup_vs_teacher = 1000.0\n")
    gated = run_cli("build", config, "--out", run_dir)
    assert gated.returncode == 3, gated.stderr
    assert "min_speedup_vs_teacher" in gated.stderr and "FAIL" in gated.stderr
    assert _stages(gated)["bench"] == "ran" and _stages(gated)["export"] == "skipped"


def _chromium() -> str:
    """Debian's chromium, installed here when missing (the test machines run Debian as root)."""
    path = shutil.which("chromium")
    if path is None:
        subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], check=True, capture_output=True, timeout=900)
        path = shutil.which("chromium")
    assert path, "chromium is not installed and apt-get could not install it"
    return path


def _renders_in_chromium(page, tmp_path):
    """Headless Chromium: the page loads without console errors, its embedded images decode, its
    tables are there, and the screenshot is not blank."""
    base = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
            f"--user-data-dir={tmp_path / 'chromium'}"]
    dom = subprocess.run([*base, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert 'data-images-ok="true"' in dom.stdout and dom.stdout.count("<table>") >= 1
    assert "Uncaught" not in dom.stderr and ":CONSOLE" not in dom.stderr
    shot = tmp_path / "report.png"
    subprocess.run([*base, f"--screenshot={shot}", "--window-size=1280,1600", page.as_uri()],
                   capture_output=True, timeout=120, check=True)
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert pixels.std() > 10 and (pixels < 128).mean() > 0.01  # text, tables and plots, not a blank page


def test_a_tampered_or_missing_artifact_is_caught_by_verify(tmp_path):
    config, run_dir = _config(tmp_path)
    assert run_cli("build", config, "--out", run_dir, "--until", "repo").returncode == 0
    ok = run_cli("verify", run_dir)
    assert ok.returncode == 0, ok.stderr
    onnx_path = run_dir / "export" / "teacher.int8.onnx"
    data = bytearray(onnx_path.read_bytes())
    data[-1] ^= 1
    onnx_path.write_bytes(bytes(data))
    (run_dir / "teacher" / "arch.json").unlink()
    bad = run_cli("verify", run_dir)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "export: export/teacher.int8.onnx differs from the manifest" in bad.stderr
    assert "train: teacher/arch.json is missing" in bad.stderr
    # The next build notices too, and redoes what is stale.
    rebuilt = run_cli("build", config, "--out", run_dir, "--until", "repo")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert _stages(rebuilt)["train"] == "ran" and run_cli("verify", run_dir).returncode == 0


def test_a_build_killed_mid_export_reruns_to_a_verified_manifest(tmp_path):
    config, run_dir = _config(tmp_path)
    cmd = [sys.executable, "-m", "stylepress", "build", str(config), "--out", str(run_dir), "--until", "repo"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while not (run_dir / "export").is_dir():  # the export stage has started writing
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    manifest = _manifest(run_dir)
    assert "export" not in manifest["stages"] and "train" in manifest["stages"]
    rerun = run_cli("build", config, "--out", run_dir, "--until", "repo")
    assert rerun.returncode == 0, rerun.stderr
    assert _stages(rerun) == {"train": "skipped", "compress": "not", "export": "ran", "repo": "ran"}
    assert not [p for p in run_dir.rglob(".*") if p.name.endswith(".tmp")]  # no temporaries left
    assert run_cli("verify", run_dir).returncode == 0


def test_bad_stage_names_are_one_line_errors(tmp_path):
    config, run_dir = _config(tmp_path)
    result = run_cli("build", config, "--out", run_dir, "--from", "deploy")
    assert result.returncode == 2 and "not a stage" in result.stderr and "Traceback" not in result.stderr
    result = run_cli("verify", tmp_path / "nowhere")
    assert result.returncode == 2 and "manifest.json not found" in result.stderr
