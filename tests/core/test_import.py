"""Bring your own generator: published families load from their publishers' key format, export
with parity and serve through a real Triton; unsafe checkpoints are refused."""

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import DEMO_PHOTOS, run_cli, write_repo

from stylepress.compress.pruning import count
from stylepress.errors import StylepressError
from stylepress.models import load_generator
from stylepress.models.families import AnimeGAN2, CycleGANResnet, Pix2PixUnet, TransformerNet

# (arch, options, the module as the publisher defines it, published facts: parameters, a few keys)
FAMILIES = {
    "cyclegan-resnet": ([], CycleGANResnet, 11_378_179, ["model.1.weight", "model.10.conv_block.5.weight",
                                                         "model.19.weight", "model.26.bias"]),
    "pix2pix-unet": (["variant=unet_256"], lambda: Pix2PixUnet(8), 54_413_955,
                     ["model.model.0.weight", "model.model.1.model.1.weight", "model.model.3.bias"]),
    "animegan2": ([], AnimeGAN2, 2_143_552, ["block_a.0.1.weight", "block_c.1.layers.1.1.weight",
                                            "out_layer.0.weight"]),
    "fast-neural-style": ([], TransformerNet, 1_679_235, ["conv1.conv2d.weight", "res5.in2.bias",
                                                         "deconv3.conv2d.bias"]),
}


def _published_checkpoint(module, path, stale=()):
    """A random-initialised state dict saved the way the publishers save theirs (torch.save of
    plain tensors), plus any stale keys old PyTorch versions wrote."""
    torch.manual_seed(0)
    state = module.state_dict()
    for key in stale:
        state[key] = torch.zeros(3)
    torch.save(state, path)


def test_cyclegan_resnet_9blocks_matches_the_publication_with_and_without_dropout():
    plain, dropout = CycleGANResnet().state_dict(), CycleGANResnet(use_dropout=True).state_dict()
    assert "model.10.conv_block.5.weight" in plain and "model.10.conv_block.6.weight" in dropout
    net = CycleGANResnet()
    macs, params = count(net, {}, 256)
    assert params == 11_378_179 and round(macs / 1e9, 1) in (56.8, 56.9)
    assert sum(p.numel() for p in CycleGANResnet(n_blocks=6).parameters()) == 7_837_699  # resnet_6blocks


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """Each family imported from a publisher-format checkpoint into its own run, exported (fp32, with
    the parity gate) and written as a repository; all repositories merged for one server."""
    from stylepress import export
    from stylepress.config import load_config

    root = tmp_path_factory.mktemp("imported")
    photos = root / "photos"
    photos.mkdir()
    for name, src in DEMO_PHOTOS.items():
        shutil.copy(src, photos / name)
    merged, runs = root / "repository", {}
    for arch, (options, make, _, _) in FAMILIES.items():
        name = arch.replace("-", "_")
        weights = root / f"{name}.pth"
        _published_checkpoint(make(), weights, stale=["model.2.running_mean"] if arch == "cyclegan-resnet" else
                              ["in1.running_var"] if arch == "fast-neural-style" else [])
        result = run_cli("import", weights, "--arch", arch, "--out", root / name, "--style", "painted",
                         *[a for o in options for a in ("--option", o)])
        assert result.returncode == 0, result.stderr
        config = root / f"{name}.toml"
        config.write_text(f'name = "{name}"\n[data]\nphotos = "{photos}"\n[export]\nprecisions = ["fp32"]\n'
                          'cpu_float_precision = "f32"\nparity_tolerance = 1e-3\n'  # Triton must equal f32 ORT
                          '[serving]\nmodel = "teacher"\nprecision = "fp32"\nmax_batch_size = 2\n')
        cfg = load_config(config)
        export.run(cfg, root / name, show_progress=False)
        repo = write_repo(cfg, root / name)
        shutil.copytree(repo, merged, dirs_exist_ok=True)
        runs[arch] = (root / name, cfg)
    return merged, runs, photos


@pytest.mark.e2e  # the fixture exports four published generators through the parity gate (about 2 min)
@pytest.mark.parametrize("arch", list(FAMILIES))
def test_each_family_imports_with_its_published_parameter_count_and_exports_with_parity(imported, arch):

    _, runs, _ = imported
    run_dir, _ = runs[arch]
    _, _, params, keys = FAMILIES[arch]
    net, spec = load_generator(run_dir / "teacher")
    assert sum(p.numel() for p in net.parameters()) == params and set(keys) <= set(net.state_dict())
    assert spec.arch == arch and spec.styles == ("painted",)
    parity = json.loads((run_dir / "export" / "parity.json").read_text())["teacher"]
    assert parity["passed"] and parity["max_abs_err"] <= 1e-3
    x = torch.rand(1, 3, 256, 256) * 2 - 1
    with torch.no_grad():
        y = net(x)
    assert y.shape == x.shape and -1 <= y.min() and y.max() <= 1  # the [-1, 1] contract


@pytest.mark.serving
def test_every_family_serves_a_portrait_through_triton(imported):
    import onnxruntime as ort

    from stylepress import prepost, serving

    merged, runs, photos = imported
    data = DEMO_PHOTOS[next(iter(DEMO_PHOTOS))].read_bytes()
    with serving.local_server(merged, merged.parent / "tritonserver.log") as server:
        server.wait_ready()
        for arch, (run_dir, cfg) in runs.items():
            with serving.Client(server.http_url, model=cfg.model_name) as client:
                got = np.asarray(prepost.decode(client.stylize(data, "painted")), dtype=np.int16)
            sess = ort.InferenceSession(str(run_dir / "export" / "teacher.fp32.onnx"),
                                        providers=["CPUExecutionProvider"])
            x, box = prepost.letterbox(prepost.decode(data), cfg.serving_resolution)
            want = prepost.unletterbox(sess.run(None, {"image": x[None]})[0][0], box)
            assert got.shape == np.asarray(want).shape, arch
            assert np.abs(got - np.asarray(want, dtype=np.int16)).max() <= 1, arch


def test_module_factory_imports_any_generator_only_with_trust_code(tmp_path, monkeypatch):
    path = tmp_path / "w.safetensors"
    from safetensors.torch import save_file

    from stylepress.models.families import TransformerNet as Net
    from stylepress.models.published import TRUST_CODE_ENV

    save_file(Net().state_dict(), str(path))
    arch = "module:stylepress.models.families:TransformerNet"
    result = run_cli("import", path, "--arch", arch, "--out", tmp_path)
    assert result.returncode == 2 and "--trust-code" in result.stderr and result.stderr.count("\n") == 1
    result = run_cli("import", path, "--arch", arch, "--out", tmp_path, "--trust-code", "--option", "nope=0.5")
    assert result.returncode == 2 and "bad --option" in result.stderr and result.stderr.count("\n") == 1
    result = run_cli("import", path, "--arch", arch, "--out", tmp_path, "--trust-code")
    assert result.returncode == 0, result.stderr
    monkeypatch.delenv(TRUST_CODE_ENV, raising=False)
    with pytest.raises(StylepressError, match="only with --trust-code"):
        load_generator(tmp_path / "teacher")  # the checkpoint folder alone cannot ask for code to run
    monkeypatch.setenv(TRUST_CODE_ENV, "1")
    net, spec = load_generator(tmp_path / "teacher")
    assert spec.arch == arch and isinstance(net, Net)


def test_options_are_typed_like_the_factory_expects():
    from stylepress.models.published import parse_options

    assert parse_options(["a=0.5", "b=3", "c=true", "d=resnet", "e=-2", "f=1e-3", "g=nan"]) == {
        "a": 0.5, "b": 3, "c": True, "d": "resnet", "e": -2, "f": 1e-3, "g": "nan"}
    assert parse_options(["variant=resnet_6blocks"]) == {"n_blocks": 6}


def test_a_checkpoint_naming_os_system_runs_nothing(tmp_path):
    """arch.json is data: `module:os:system` with a command kwarg must not run the command."""
    marker = tmp_path / "ran"
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "arch.json").write_text(json.dumps({"arch": "module:os:system", "kwargs": {"command": f"touch {marker}"},
                                                "styles": ["x"]}))
    from safetensors.torch import save_file

    save_file({}, str(ckpt / "weights.safetensors"))
    photo = next(iter(DEMO_PHOTOS.values()))
    result = run_cli("stylize", photo, "-o", tmp_path / "out.png", "--checkpoint", ckpt)
    assert result.returncode == 2 and "--trust-code" in result.stderr and result.stderr.count("\n") == 1
    assert not marker.exists()


class _Exploit:
    """A pickle payload: unpickling it calls `open(marker, "w")`, i.e. runs code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_malicious_pickle_is_refused_before_any_code_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"model.1.weight": _Exploit(marker)}, path)  # a checkpoint file like any other
    result = run_cli("import", path, "--arch", "cyclegan-resnet", "--out", tmp_path / "run")
    assert result.returncode == 2 and "refused" in result.stderr and result.stderr.count("\n") == 1
    assert not marker.exists()  # the payload never ran
    assert not (tmp_path / "run" / "teacher").exists()


def test_key_mismatches_are_listed_not_a_traceback(tmp_path):
    path = tmp_path / "w.pth"
    state = CycleGANResnet(n_blocks=6).state_dict()  # resnet_6blocks weights, imported as 9 blocks
    torch.save(state, path)
    result = run_cli("import", path, "--arch", "cyclegan-resnet", "--out", tmp_path / "run")
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "missing keys ['model.16.conv_block" in result.stderr and "unexpected keys ['model.16.bias'" in result.stderr


class SmallGenerator(torch.nn.Module):
    """A user's own generator: no stylepress base class, just the [-1, 1] contract."""

    def __init__(self, width: int = 8):
        super().__init__()
        nn = torch.nn
        self.body = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(width, width * 2, 3, stride=2, padding=1), nn.ReLU(),
                                  nn.ConvTranspose2d(width * 2, width, 4, stride=2, padding=1), nn.ReLU(),
                                  nn.Conv2d(width, 3, 3, padding=1), nn.Tanh())

    def forward(self, image, style=None):
        return self.body(image)


def small_generator(width: int = 8) -> SmallGenerator:
    return SmallGenerator(width)


@pytest.mark.slow
def test_a_module_factory_generator_runs_the_whole_build(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    from safetensors.torch import save_file

    photos = tmp_path / "photos"
    photos.mkdir()
    for name, src in DEMO_PHOTOS.items():
        shutil.copy(src, photos / name)
    torch.manual_seed(0)
    save_file(small_generator(6).state_dict(), str(tmp_path / "mine.safetensors"))
    config = tmp_path / "mine.toml"
    config.write_text(f'name = "mine"\n[data]\nphotos = "{photos}"\nval_photos = "{photos}"\nresolution = 64\n'
                      '[model]\narch = "module:test_import:small_generator"\nweights = "mine.safetensors"\n'
                      "options = {width = 6}\n[train]\ncrop = 32\n[compress]\nratio = 0.5\nround_to = 1\n"
                      "distill_steps = 4\nbatch_size = 2\nval_every = 4\n[export]\nprecisions = [\"fp32\", \"int8\"]\n"
                      "[bench]\nrepeats = 3\nthreads = 1\nresolutions = [64]\nbatches = [1, 2]\n"
                      "[gates]\nmin_psnr_db = 0\nmin_ssim = 0\n")
    here = Path(__file__).parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(here), str(here.parent)])}  # the factory's module
    shown = run_cli("config", "show", config)
    assert shown.returncode == 0 and "--trust-code" in shown.stderr
    refused = subprocess.run([sys.executable, "-m", "stylepress", "build", str(config), "--out", str(tmp_path / "run")],
                             capture_output=True, text=True, timeout=300, env=env)
    assert refused.returncode == 2 and "--trust-code" in refused.stderr, refused.stderr[-2000:]
    result = subprocess.run([sys.executable, "-m", "stylepress", "build", str(config), "--out", str(tmp_path / "run"),
                             "--trust-code"],
                            capture_output=True, text=True, timeout=900, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert {k: v["status"] for k, v in manifest["stages"].items()} == {
        s: "ran" for s in ("train", "compress", "export", "bench", "select", "repo", "served", "deploy", "report")}
    report = json.loads((tmp_path / "run" / "report" / "report.json").read_text())
    assert report["selected"] and {v["model"] for v in report["variants"]} == {"teacher", "student"}
    assert any(v["name"].startswith("triton-") for v in report["variants"])  # served through Triton
    assert run_cli("verify", tmp_path / "run").returncode == 0
