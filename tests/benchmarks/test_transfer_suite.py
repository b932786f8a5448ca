import json
import subprocess
import sys

import pytest
from conftest import write_config

from stylepress import train
from stylepress.config import load_config

pytestmark = pytest.mark.e2e


def test_the_transfer_suite_compares_transfer_with_training_from_scratch(tmp_path, demo_photos):
    config = write_config(tmp_path, demo_photos, styles=("sketch",), steps=2)
    train.run(load_config(config), tmp_path / "run", show_progress=False)
    args = ("-m", "stylepress.benchmarks", "transfer", config, "--from", tmp_path / "run", "--out", tmp_path / "bench",
            "--style", "cartoon", "--steps", "2", "--few", "1", "--set", f'data.val_photos="{demo_photos}"')
    result = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "bench" / "transfer" / "cartoon" / "transfer.json").read_text())
    runs = {r["run"]: r for r in report["runs"]}
    assert list(runs) == ["style-2", "fresh-2", "few1-style-2", "few1-decoder-2", "few1-lora-2", "fresh-16"]
    assert all(r["state"] == "done" and 0 < r["psnr"] < 100 and r["wall_s"] > 0 for r in runs.values())
    trained = [runs[name]["params_trained"] for name in ("style-2", "few1-decoder-2", "fresh-2")]
    assert trained == sorted(trained) and len(set(trained)) == 3
    assert runs["fresh-2"]["styles"] == ["sketch", "cartoon"] == runs["style-2"]["styles"]
    # Style mode leaves the old style exactly as the source teacher has it; the others score it too.
    assert set(report["source_styles"]) == {"sketch"} and runs["style-2"]["old_styles"] == report["source_styles"]
    assert all(set(r["old_styles"]) == {"sketch"} for r in runs.values())
    assert len(list((tmp_path / "bench" / "transfer" / "cartoon" / "photos-1").iterdir())) == 1
    assert (tmp_path / "bench" / "transfer" / "cartoon" / "samples.png").is_file()
    # A second call finds every run finished and only rewrites the report.
    again = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "| style-2 |" in again.stdout
