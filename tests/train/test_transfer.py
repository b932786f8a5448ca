"""`stylepress transfer`: new styles on a trained or imported generator, and LoRA merged away."""

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import DEMO_PHOTOS, run_cli, write_config, write_repo

from stylepress import export, prepost, serving, train
from stylepress.config import load_config
from stylepress.models import build_generator, load_generator
from stylepress.models.layers import StyleNorm
from stylepress.models.published import import_generator
from stylepress.models.styled import StyleRouter
from stylepress.train import transfer
from stylepress.train.transfer import _discriminator, _lora, _merged

pytestmark = pytest.mark.e2e


def _transfer_config(tmp_path, photos, body: str, steps: int = 4):
    return write_config(tmp_path, photos, styles=("sketch", "oil"), steps=steps,
                        body=f"[transfer]\nsteps = {steps}\n{body}")


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A tiny sketch + oil teacher, trained (so it has a discriminator in state.pt)."""
    root = tmp_path_factory.mktemp("teacher")
    photos = root / "photos"
    photos.mkdir()
    for name, src in DEMO_PHOTOS.items():
        (photos / name).write_bytes(src.read_bytes())
    cfg = load_config(_transfer_config(root, photos, ""))
    train.run(cfg, root / "run", show_progress=False)
    return root / "run", photos


def _outputs(G, styles, seed=0) -> list[torch.Tensor]:
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    with torch.no_grad():
        return [G.eval()(x, torch.full((2,), s)) for s in styles]


@pytest.mark.serving
def test_style_mode_trains_only_the_new_rows_and_the_new_style_is_served(teacher, tmp_path):
    source, photos = teacher
    # A trained teacher differs from PyTorch by about 1e-4 at 384² (float32 accumulation order, as the
    # reference config says): 1e-3 is still 1/8 of a grey level.
    config = _transfer_config(tmp_path, photos, 'add_styles = ["watercolor"]\n[export]\nprecisions = ["fp32"]\n'
                              'cpu_float_precision = "f32"\nparity_tolerance = 1e-3\n'  # Triton must equal f32 ORT
                              '[serving]\nmodel = "teacher"\nprecision = "fp32"\n')
    result = run_cli("transfer", config, "--from", source, "--out", tmp_path / "run")
    assert result.returncode == 0, result.stderr
    assert "style mode: trained" in result.stderr

    old, _ = load_generator(source / "teacher")
    new, spec = load_generator(tmp_path / "run" / "teacher")
    assert spec.styles == ("sketch", "oil", "watercolor")
    for before, after in zip(_outputs(old, [0, 1]), _outputs(new, [0, 1]), strict=True):
        assert torch.equal(before, after)  # bit-identical
    # Only the new style's rows moved: every other tensor is equal, and the count is one row per table.
    old_state, new_state = old.state_dict(), new.state_dict()
    changed = 0
    for key, t in new_state.items():
        if t.shape == old_state[key].shape:
            assert torch.equal(t, old_state[key]), key
        else:
            assert torch.equal(t[:2], old_state[key]), key
            changed += t[2].numel()
    rows = 2 * sum(m.channels for m in new.modules() if isinstance(m, StyleNorm))
    report = json.loads((tmp_path / "run" / "teacher" / "transfer.json").read_text())
    assert changed == rows == report["params"]["trained"] == report["params"]["norm_rows"]
    assert report["old_styles_max_change"] == {"sketch": 0.0, "oil": 0.0}
    assert set(report["before"]) == set(report["after"]) == {"watercolor"} and report["steps"] == 4

    # An ordinary teacher: export passes parity, and Triton serves the new style as ONNX Runtime runs it.
    cfg = load_config(config)
    onnx_path = export.run(cfg, tmp_path / "run", show_progress=False)["teacher.fp32"]
    assert json.loads((tmp_path / "run" / "export" / "parity.json").read_text())["teacher"]["passed"]
    repo = write_repo(cfg, tmp_path / "run")
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    data = next(iter(DEMO_PHOTOS.values())).read_bytes()
    with serving.local_server(repo, tmp_path / "tritonserver.log") as server:
        server.wait_ready()
        with serving.Client(server.http_url) as client:
            assert client.styles == ["sketch", "oil", "watercolor"]
            got = np.asarray(prepost.decode(client.stylize(data, "watercolor")), dtype=np.int16)
    x, box = prepost.letterbox(prepost.decode(data), cfg.serving_resolution)
    want = np.asarray(prepost.unletterbox(session.run(None, {"image": x[None], "style": np.array([2])})[0][0], box),
                      dtype=np.int16)
    assert got.shape == want.shape and np.abs(got - want).max() <= 1


def test_an_imported_fast_neural_style_gains_a_style_and_keeps_its_own(teacher, tmp_path):
    _, photos = teacher
    torch.manual_seed(0)
    from stylepress.models import save_generator
    from stylepress.models.families import TransformerNet

    published = tmp_path / "published.safetensors"
    from safetensors.torch import save_file

    save_file(TransformerNet().state_dict(), str(published))
    model, spec = import_generator("fast-neural-style", published, {}, "udnie")
    save_generator(model, spec, tmp_path / "imported")
    config = write_config(tmp_path, photos, styles=("sketch",), steps=2,
                          body='[transfer]\nsteps = 2\nadd_styles = ["sketch"]\n')
    report = transfer.run(load_config(config), tmp_path / "imported", tmp_path / "run", show_progress=False)
    assert report["status"] == "done"

    adapted, new_spec = load_generator(tmp_path / "run" / "teacher")  # rebuilt from arch.json alone
    assert isinstance(adapted, StyleRouter) and new_spec.styles == ("udnie", "sketch")
    assert len(new_spec.style_tables) == 15  # all its instance norms: in1-in5 and two in each of 5 blocks
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        first = adapted(x, torch.zeros(2, dtype=torch.long))
        assert (first - model(x)).abs().max() <= 1e-5  # the published style, unchanged
        assert not torch.allclose(adapted(x, torch.ones(2, dtype=torch.long)), first)
    assert report["old_styles_max_change"]["udnie"] <= 1e-5


def test_lora_merges_into_the_original_architecture_with_the_adapted_outputs(teacher, tmp_path):
    source, photos = teacher
    G, spec = load_generator(source / "teacher")
    original = _outputs(G, [0, 1])
    adapted, adapters = _lora(G, rank=4, alpha=4.0)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in adapters:  # a trained adapter: B is no longer zero
            p.normal_(0, 0.05)
    merged = _merged(adapted)
    assert type(merged) is type(build_generator(spec))
    build_generator(spec).load_state_dict(merged.state_dict(), strict=True)  # the original keys and shapes
    for a, b, o in zip(_outputs(adapted, [0, 1]), _outputs(merged, [0, 1]), original, strict=True):
        assert (a - o).abs().max() > 1e-3  # the adapters change the output...
        assert (a - b).abs().max() <= 1e-5  # ...and the merged generator reproduces it

    # Through the command: a lora transfer's teacher rebuilds from arch.json as a plain generator.
    config = _transfer_config(tmp_path, photos, 'add_styles = ["cartoon"]\nmode = "lora"\n', steps=2)
    report = transfer.run(load_config(config), source, tmp_path / "run", show_progress=False)
    net, new_spec = load_generator(tmp_path / "run" / "teacher")
    assert new_spec.arch == "resnet" and new_spec.styles == ("sketch", "oil", "cartoon")
    assert not any("lora" in k for k in net.state_dict())
    assert 0 < report["params"]["adapters"] < report["params"]["total"]


def test_transfer_mistakes_are_one_line_errors(teacher, tmp_path):
    source, photos = teacher
    for body, message in (('add_styles = ["oil"]\n', "already has the style 'oil'"),
                          ('add_styles = ["cartoon"]\ninit = "anime"\n', "transfer.init 'anime'"),
                          ('add_styles = ["anime"]\n', "neither a built-in style")):
        result = run_cli("transfer", _transfer_config(tmp_path, photos, body), "--from", source,
                         "--out", tmp_path / "run")
        assert result.returncode == 2 and message in result.stderr, result.stderr
        assert "Traceback" not in result.stderr


def test_photos_alone_adapt_the_named_styles_against_a_freezed_discriminator(teacher, tmp_path):
    source, photos = teacher
    few = tmp_path / "few"
    few.mkdir()
    first = sorted(photos.iterdir())[0]
    (few / first.name).write_bytes(first.read_bytes())
    config = write_config(tmp_path, photos, styles=("sketch",), steps=2,
                          body=f'[transfer]\nsteps = 2\nmode = "decoder"\nphotos = "{few}"\n')
    report = transfer.run(load_config(config), source, tmp_path / "run", show_progress=False)
    assert report["status"] == "done" and report["styles"] == ["sketch", "oil"]
    assert report["trained_styles"] == ["sketch"] and report["params"]["shared"] > 0
    assert report["old_styles_max_change"]["oil"] > 0  # decoder mode moves shared weights

    # The teacher's discriminator: its first freeze_d layers fixed (FreezeD), a head row per new style.
    D, _ = _discriminator(load_config(config), source / "teacher", 2, 3)
    saved = torch.load(source / "teacher" / "state.pt", weights_only=True)["D"]
    assert not any(p.requires_grad for layer in D.features[:2] for p in layer.parameters())
    assert all(p.requires_grad for p in D.head.parameters())
    assert D.head.weight.shape[0] == 3 and torch.equal(D.head.weight[:2].detach(), saved["head.weight"])

    bad = write_config(tmp_path, photos, styles=("cartoon",), body="[transfer]\nsteps = 2\n")
    result = run_cli("transfer", bad, "--from", source, "--out", tmp_path / "bad")
    assert result.returncode == 2 and "has no style 'cartoon' to adapt" in result.stderr, result.stderr


def test_a_student_takes_the_new_style_by_distilling_only_its_rows(teacher, tmp_path):
    from stylepress import compress

    source, photos = teacher
    old_run = tmp_path / "old"
    shutil.copytree(source, old_run)
    config = _transfer_config(tmp_path, photos, 'add_styles = ["watercolor"]\n[compress]\nratio = 0.5\n'
                              "distill_steps = 2\nval_every = 2\ncheckpoint_every = 2\n")
    cfg = load_config(config)
    compress.run(cfg, old_run, show_progress=False)
    transfer.run(cfg, old_run, tmp_path / "new", show_progress=False)
    result = run_cli("transfer", config, "--from", old_run, "--out", tmp_path / "new", "--student")
    assert result.returncode == 0, result.stderr

    old, old_spec = load_generator(old_run / "student")
    new, spec = load_generator(tmp_path / "new" / "student")
    assert spec.styles == ("sketch", "oil", "watercolor") and spec.kwargs["widths"] == old_spec.kwargs["widths"]
    for before, after in zip(_outputs(old, [0, 1]), _outputs(new, [0, 1]), strict=True):
        assert torch.equal(before, after)
    report = json.loads((tmp_path / "new" / "student" / "transfer.json").read_text())
    rows = 2 * sum(m.channels for m in new.modules() if isinstance(m, StyleNorm))
    assert report["params"]["trained"] == rows and report["trained_styles"] == ["watercolor"]
    assert report["old_styles_max_change"] == {"sketch": 0.0, "oil": 0.0}
    assert "psnr_watercolor" in report["after"]
    assert (tmp_path / "new" / "student" / "prune.json").is_file()


def test_a_pruned_import_gains_a_style_and_rebuilds_from_its_spec():
    from stylepress.compress.pruning import prune
    from stylepress.models.published import new_generator
    from stylepress.models.styled import add_styles

    torch.manual_seed(0)
    pruned = prune(*new_generator("fast-neural-style", {}, "udnie"), 0.5, resolution=64)
    before = _outputs_single(pruned.model)
    model, spec = add_styles(pruned.model, pruned.spec, ("sketch",))
    rebuilt = build_generator(spec)
    rebuilt.load_state_dict(model.state_dict(), strict=True)  # spec.channels follow the layers into the router
    assert torch.equal(_outputs(rebuilt, [0])[0], before)


def _outputs_single(G) -> torch.Tensor:
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        return G.eval()(x)
