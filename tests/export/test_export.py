import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from conftest import TINY_SPEC, run_cli, tiny_run
from PIL import Image

from stylepress import export
from stylepress.config import load_config
from stylepress.errors import StylepressError
from stylepress.export.parity import check_parity
from stylepress.models import build_generator, load_generator


def test_export_writes_a_checked_onnx_with_dynamic_batch_height_and_width(exported):
    _, run_dir = exported
    path = run_dir / "export" / "teacher.fp32.onnx"
    assert sorted(p.name for p in path.parent.iterdir()) == [  # no external data
        "parity.json", "quant.json", "teacher.fp16.onnx", "teacher.fp32.onnx", "teacher.int8.onnx"]
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version <= 20
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input}
    assert dims["image"][1] == 3 and all(isinstance(d, str) for d in (dims["image"][0], *dims["image"][2:]))
    assert dims["style"] == [dims["image"][0]]
    # Any batch and any size that is a multiple of 4 runs, not only the export example.
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = session.run(None, {"image": np.zeros((5, 3, 36, 100), np.float32), "style": np.zeros(5, np.int64)})[0]
    assert out.shape == (5, 3, 36, 100)


def test_parity_json_covers_sizes_and_batches_within_tolerance(exported):
    _, run_dir = exported
    parity = json.loads((run_dir / "export" / "parity.json").read_text())["teacher"]
    cases = {(c["height"], c["width"], c["batch"]) for c in parity["cases"]}
    assert {(128, 128, 1), (256, 256, 3), (384, 384, 1), (256, 192, 3)} <= cases
    assert parity["passed"] and parity["max_abs_err"] <= 1e-4
    assert max(c["max_abs_err"] for c in parity["cases"]) == parity["max_abs_err"]


def test_parity_fails_when_model_and_onnx_disagree(exported):
    config, run_dir = exported
    model, spec = load_generator(run_dir / "teacher")
    with torch.no_grad():
        model.head[-2].weight.mul_(1.01)  # a 1% change to the output conv
    photos = [Image.open(p).convert("RGB") for p in sorted((config.parent / "photos").iterdir())]
    result = check_parity(model, spec, run_dir / "export" / "teacher.fp32.onnx", photos, 1e-4,
                          sizes=((128, 96),), batches=(1,))
    assert not result["passed"] and result["max_abs_err"] > 1e-4 and result["worst"] == "128x96, batch 1"


def test_export_fails_naming_the_size_and_leaves_no_onnx(tmp_path, monkeypatch):
    config, run_dir = tiny_run(tmp_path)
    other = build_generator(TINY_SPEC)  # different random weights: the ONNX will not match the teacher
    real_export = export.export_onnx
    monkeypatch.setattr(export, "export_onnx", lambda model, spec, path, opset: real_export(other, spec, path, opset))
    with pytest.raises(StylepressError, match=r"at \d+x\d+, batch \d"):
        export.run(load_config(config), run_dir, show_progress=False)
    assert not (run_dir / "export" / "teacher.fp32.onnx").exists()
    assert json.loads((run_dir / "export" / "parity.json").read_text())["teacher"]["passed"] is False


def test_export_without_a_teacher_is_a_one_line_error(tmp_path):
    config, run_dir = tiny_run(tmp_path)
    result = run_cli("export", config, "--out", tmp_path / "empty")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "stylepress train" in result.stderr
