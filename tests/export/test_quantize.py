"""INT8 / FP16 export: TensorRT's quantization rules, the accuracy-aware fallback, fp16 checks."""

import json

import numpy as np
import onnx
import pytest
from conftest import run_cli
from onnx import TensorProto, helper, numpy_helper

from stylepress import export
from stylepress.config import load_config
from stylepress.export.quantize import linear_layers, quantize_with_fallback
from stylepress.export.runtime import available_cpu_providers, feeds_for, session
from stylepress.export.trt_rules import check_trt


def _qdq_model(break_: str = "") -> onnx.ModelProto:
    """A small Q/DQ generator tail: Q/DQ -> Conv -> InstanceNorm -> Relu -> Q/DQ -> ConvTranspose
    -> Conv (output layer, float) -> Tanh, following TensorRT's rules unless `break_` names one."""
    rng = np.random.default_rng(0)
    inits, nodes = [], []

    def const(name, value):
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def qdq(x, name, scale, zp, axis=None):
        kw = {} if axis is None else {"axis": axis}
        nodes.append(helper.make_node("QuantizeLinear", [x, scale, zp], [f"{name}_q"], name=f"{name}_Q", **kw))
        nodes.append(helper.make_node("DequantizeLinear", [f"{name}_q", scale, zp], [f"{name}_dq"],
                                      name=f"{name}_DQ", **kw))
        return f"{name}_dq"

    def weight(name, shape, axis=0):
        n = shape[axis]
        w = const(f"{name}_int8", rng.integers(-127, 128, shape).astype(np.int8))
        s = const(f"{name}_scale", np.full(n, 0.01, np.float32))
        z = const(f"{name}_zp", np.zeros(n, np.int8))
        nodes.append(helper.make_node("DequantizeLinear", [w, s, z], [f"{name}_w"], name=f"{name}_wDQ", axis=axis))
        return f"{name}_w"

    zp_type = np.uint8 if break_ == "uint8" else np.int8
    zp_value = 3 if break_ == "zero_point" else 0
    if break_ == "per_channel_activation":
        x = qdq("x", "in", const("in_s", np.full(3, 0.02, np.float32)), const("in_z", np.zeros(3, np.int8)), axis=1)
    else:
        x = qdq("x", "in", const("in_s", np.float32(0.02)), const("in_z", np.array(zp_value, zp_type)))
    conv_inputs = [x, weight("c1", (4, 3, 3, 3))]
    if break_ == "int32_bias":
        b = const("c1_b_int32", np.zeros(4, np.int32))
        nodes.append(helper.make_node("DequantizeLinear", [b, const("c1_b_s", np.float32(1e-4))], ["c1_b"],
                                      name="c1_bias_DQ"))
    else:
        b = const("c1_b", np.zeros(4, np.float32))
    conv_inputs.append(b if break_ != "int32_bias" else "c1_b")
    nodes.append(helper.make_node("Conv", conv_inputs, ["c1_out"], name="conv1", pads=[1, 1, 1, 1]))
    h = "c1_out"
    if break_ == "quantized_instancenorm":
        h = qdq(h, "c1o", const("c1o_s", np.float32(0.05)), const("c1o_z", np.array(0, np.int8)))
    nodes.append(helper.make_node("InstanceNormalization", [h, const("n_s", np.ones(4, np.float32)),
                                                            const("n_b", np.zeros(4, np.float32))], ["n"],
                                  name="norm"))
    nodes.append(helper.make_node("Relu", ["n"], ["r"], name="relu"))
    r = qdq("r", "mid", const("mid_s", np.float32(0.05)), const("mid_z", np.array(0, np.int8)))
    axis = 1 if break_ == "convtranspose_axis1" else 0
    wt = weight("up", (4, 2, 3, 3), axis=axis)
    nodes.append(helper.make_node("ConvTranspose", [r, wt, const("up_b", np.zeros(2, np.float32))], ["u"],
                                  name="up", strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 1]))
    nodes.append(helper.make_node("Conv", ["u", const("out_w", rng.normal(size=(3, 2, 1, 1)).astype(np.float32))],
                                  ["o"], name="out_conv"))
    nodes.append(helper.make_node("Tanh", ["o"], ["y"], name="tanh"))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 16, 16])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.checker.check_model(model)
    return model


def test_a_model_following_the_rules_passes_the_scanner():
    assert check_trt(_qdq_model()) == []


@pytest.mark.parametrize("break_, node, words", [
    ("zero_point", "in_Q", "non-zero zero point"),
    ("uint8", "in_Q", "UINT8"),
    ("per_channel_activation", "in_Q", "per-channel activation"),
    ("convtranspose_axis1", "up_wDQ", "axis 1"),
    ("int32_bias", "c1_bias_DQ", "quantized bias"),
    ("quantized_instancenorm", "norm", "quantized InstanceNorm"),
])
def test_the_scanner_names_each_broken_rule(break_, node, words):
    problems = check_trt(_qdq_model(break_))
    assert any(p.startswith(f"{node}:") and words in p for p in problems), problems


def test_a_quantized_output_layer_is_named(tmp_path):
    model = _qdq_model()
    # Feed the output conv from a DQ: the output layer is now quantized.
    for n in model.graph.node:
        if n.name == "out_conv":
            n.input[0] = "mid_dq"
    assert any(p.startswith("out_conv:") and "output layer" in p for p in check_trt(model))


def test_check_trt_command_fails_with_the_node_name_and_passes_a_good_model(tmp_path):
    bad, good = tmp_path / "bad.onnx", tmp_path / "good.onnx"
    onnx.save(_qdq_model("uint8"), bad)
    onnx.save(_qdq_model(), good)
    result = run_cli("export", "--check-trt", bad)
    assert result.returncode == 2 and "in_Q" in result.stderr and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()  # every violation listed, then one error line
    assert lines[-1].startswith("stylepress: error:") and sum("error" in line for line in lines) == 1
    assert {f"{node}: UINT8 quantization: TensorRT needs INT8" for node in ("in_Q", "in_DQ")} <= set(lines)
    result = run_cli("export", "--check-trt", good)
    assert result.returncode == 0, result.stderr


def test_export_writes_every_precision_and_the_int8_model_passes_the_scanner(exported):
    config, run_dir = exported
    out = run_dir / "export"
    assert {"teacher.fp32.onnx", "teacher.fp16.onnx", "teacher.int8.onnx", "quant.json"} <= {
        p.name for p in out.iterdir()}
    assert run_cli("export", "--check-trt", out / "teacher.int8.onnx").returncode == 0
    int8 = onnx.load(str(out / "teacher.int8.onnx"))
    assert sum(n.op_type == "QuantizeLinear" for n in int8.graph.node) > 0
    fp16 = onnx.load(str(out / "teacher.fp16.onnx"))
    assert fp16.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT  # I/O stay float32
    assert any(t.data_type == TensorProto.FLOAT16 for t in fp16.graph.initializer)
    quant = json.loads((out / "quant.json").read_text())["teacher"]
    assert quant["fp16"]["psnr_db"] >= load_config(config).export.fp16_min_psnr_db
    report = quant["int8"]
    assert set(report["layer_sqnr_db"]) <= set(linear_layers(onnx.load(str(out / "teacher.fp32.onnx"))))
    assert report["calibration"]["method"] == "minmax" and report["calibration"]["samples"] >= 1
    assert quant["fp16"]["met"] is True and report["met"] in (True, False)
    # Coverage: every linear layer counted once, the float ones (output layer, fallback) not as int8.
    cov = report["coverage"]["layer_types"]
    fp32 = onnx.load(str(out / "teacher.fp32.onnx"))
    assert {t: c["layers"] for t, c in cov.items()} == {t: sum(n.op_type == t for n in fp32.graph.node)
                                                        for t in ("Conv", "ConvTranspose")}
    floats = len(report["output_layers_float"]) + len(report["excluded"])
    assert sum(c["layers"] - c["int8_layers"] for c in cov.values()) == floats
    assert 0 < report["coverage"]["int8_macs_share"] < 1 and all(c["int8_macs"] <= c["macs"] for c in cov.values())
    # A deployment input holds no timings (the bench's job): an unchanged rerun hashes the same.
    text = json.dumps(quant)
    assert '"latency"' not in text and '_ms"' not in text


def _fallback(run_dir, tmp_path, min_psnr_db, max_fallback, min_ssim=0.0):
    photos = export.serving_inputs(sorted((run_dir.parent / "photos").iterdir()), 64)
    return quantize_with_fallback(run_dir / "export" / "teacher.fp32.onnx", tmp_path / "q.onnx", photos, photos, 2,
                                  method="minmax", percentile=99.99, min_psnr_db=min_psnr_db,
                                  max_fallback=max_fallback, provider="default", min_ssim=min_ssim)


def test_fallback_also_meets_an_ssim_target(exported, tmp_path):
    _, run_dir = exported
    first = _fallback(run_dir, tmp_path, 0.0, 0)["rounds"][0]["ssim"]
    target = 1 - (1 - first) / 2  # reachable: all layers in float is fp32 itself (SSIM 1)
    report = _fallback(run_dir, tmp_path, 0.0, 99, min_ssim=target)
    assert report["met"] and report["excluded"] and report["ssim"] >= target
    assert all(r["ssim"] < target for r in report["rounds"][:-1])


def test_fallback_excludes_the_most_sensitive_layers_until_the_target_is_met(exported, tmp_path):
    _, run_dir = exported
    first = _fallback(run_dir, tmp_path, 0.0, 0)["rounds"][0]["psnr_db"]
    n = len(linear_layers(onnx.load(str(run_dir / "export" / "teacher.fp32.onnx"))))
    report = _fallback(run_dir, tmp_path, first + 1.0, n)  # reachable: all layers in float is fp32 itself
    assert report["met"] and report["excluded"]
    psnrs = [r["psnr_db"] for r in report["rounds"]]
    assert psnrs[-1] >= first + 1.0 and all(p < first + 1.0 for p in psnrs[:-1])  # stopped once met
    sqnr = report["layer_sqnr_db"]
    assert report["excluded"] == sorted(sqnr, key=sqnr.get)[:len(report["excluded"])]  # most sensitive first
    graph = onnx.load(str(tmp_path / "q.onnx")).graph
    dq_outputs = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    for node in graph.node:  # the excluded layers read float inputs and weights, the others Q/DQ
        if node.op_type in ("Conv", "ConvTranspose"):
            float_layer = node.name in report["excluded"] or node.name in report["output_layers_float"]
            assert (node.input[1] not in dq_outputs) == float_layer, node.name
    assert check_trt(tmp_path / "q.onnx") == []


def test_fallback_stops_at_max_fallback_and_says_so(exported, tmp_path):
    _, run_dir = exported
    report = _fallback(run_dir, tmp_path, 1000.0, 2)
    assert not report["met"] and len(report["excluded"]) == 2 and len(report["rounds"]) == 3
    assert "max_fallback 2" in report["reason"] and "short of 1000.0 dB" in report["reason"]


@pytest.mark.skipif("openvino" not in available_cpu_providers(), reason="this onnxruntime build has no OpenVINO EP")
def test_a_fixed_shape_openvino_session_matches_the_dynamic_one(exported):
    _, run_dir = exported
    path = run_dir / "export" / "teacher.int8.onnx"
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, 64, 64)).astype(np.float32)
    dynamic, fixed = session(path, "openvino"), session(path, "openvino", shape=(2, 64, 64))
    a, b = (s.run(None, feeds_for(s, x, style=1))[0] for s in (dynamic, fixed))
    assert a.shape == b.shape == (2, 3, 64, 64) and np.abs(a - b).max() < 1e-3


@pytest.mark.parametrize("detail", [False, True])
def test_a_colour_skip_generator_exports_and_quantizes_by_the_rules(tmp_path, detail):
    """The residual generator's ColourSkip (per-style luma/chroma rows, with `detail` also blur/detail
    rows) exports with parity, and INT8 quantizes only its convolutions: the photo's own path, the
    blur included, stays in float, and the rule scan is clean."""
    import torch

    from stylepress.export.onnx_export import export_onnx
    from stylepress.export.quantize import quantize_int8
    from stylepress.models import ArchSpec, build_generator

    spec = ArchSpec(arch="resnet", styles=("sketch", "oil"), size_multiple=4,
                    kwargs={"ngf": 8, "n_blocks": 1, "num_styles": 2, "residual": True, "colour_skip": True,
                            "detail_skip": detail})
    torch.manual_seed(0)
    model = build_generator(spec).eval()
    with torch.no_grad():
        model.skip.weight[0, 1:3] = 0  # a grey sketch
        model.skip.weight[1, 3:] = 0.2  # (detail) an oil's smoothed photo
        model.skip.bias[1].uniform_(-0.1, 0.1)
    fp32, int8 = tmp_path / "g.onnx", tmp_path / "g.int8.onnx"
    export_onnx(model, spec, fp32, 18)
    images = np.random.default_rng(0).uniform(-1, 1, (4, 3, 48, 64)).astype(np.float32)
    sess = session(fp32)
    for style in (0, 1):
        with torch.no_grad():
            expected = model(torch.from_numpy(images), torch.full((4,), style)).numpy()
        assert np.abs(sess.run(None, feeds_for(sess, images, style))[0] - expected).max() < 1e-4
    quantize_int8(fp32, int8, images, n_styles=2)
    assert check_trt(int8) == []
    graph = onnx.load(str(int8)).graph
    readers = {n.op_type for n in graph.node if "image" in n.input}
    assert readers == {"Pad", "Unsqueeze"}  # the stem's reflection pad (quantized after it), the skip's float Mul
    made_by = {out: n.op_type for n in graph.node for out in n.output}
    pools = [n for n in graph.node if n.op_type == "AveragePool"]
    assert len(pools) == (2 if detail else 0)
    assert all(made_by.get(n.input[0]) != "DequantizeLinear" for n in pools)  # the blur reads float
