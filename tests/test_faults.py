"""The fault suite: bad files, killed runs, big folders (fast, CPU, makes its own data).

Each case asserts the outcome (exit code or exception), the message, and that nothing
partial is left behind.
"""

import gc
import hashlib
import os
import subprocess
import sys
import weakref

import numpy as np
import pytest
import torch
from menpo.image import Image
from menpo.shape import PointCloud
from menpofit.result import Result

from menpo_densereg.cli import main
from menpo_densereg.data.markups import get_markup
from menpo_densereg.data.readers import (
    DatasetError,
    PtsFolder,
    read_image,
    to_pil_rgb,
    write_pts,
)
from menpo_densereg.evaluation.benchmark import output_lock, run_benchmark
from menpo_densereg.fitting.recipes import RecipeError, load_recipe
from menpo_densereg.fitting.weights import WeightsError, load_weights, save_weights
from menpo_densereg.training import (
    CheckpointMismatch,
    TrainConfig,
    load_checkpoint,
    recipe_train_config,
    run_dir,
    train_loop,
)

# ----------------------------------------------------------------------------- helpers


def _face_points(h=96, w=96):
    rng = np.random.default_rng(0)
    pts = rng.uniform([0.3 * h, 0.25 * w], [0.8 * h, 0.75 * w], size=(68, 2))
    pts[36], pts[45] = [0.45 * h, 0.3 * w], [0.45 * h, 0.7 * w]
    return pts


def _write_face(folder, stem, n_points=68, size=(96, 96), mode="RGB", pixels=None):
    import PIL.Image

    folder.mkdir(parents=True, exist_ok=True)
    h, w = size
    if pixels is None:
        pixels = (np.random.default_rng(1).random((h, w, 3)) * 255).astype(np.uint8)
    img = PIL.Image.fromarray(pixels)
    if mode != img.mode:
        img = img.convert(mode)
    img.save(folder / f"{stem}.png")
    pts = _face_points(h, w)
    if n_points != 68:
        pts = np.resize(pts, (n_points, 2))
    write_pts(folder / f"{stem}.pts", PointCloud(pts))
    return folder / f"{stem}.png"


class _GTFitter:
    """A fake fitter: the ground truth shifted by 2 px (needs ``gt_shape``)."""

    markup = get_markup("68")
    name = "gt+2"

    def __init__(self, on_fit=None):
        self.on_fit = on_fit

    def fit_from_bb(self, image, bounding_box, gt_shape=None):
        if self.on_fit is not None:
            self.on_fit(image)
        pts = np.asarray(gt_shape.points) + 2.0
        return Result(PointCloud(pts), initial_shape=PointCloud(gt_shape.points))


def _files(folder):
    return sorted(p.name for p in folder.rglob("*") if p.is_file())


# ---------------------------------------------------------------------------- training


class _Items(torch.utils.data.Dataset):
    """Items that draw from the global numpy/python RNGs (their state must resume)."""

    def __len__(self):
        return 37

    def __getitem__(self, i):
        import random

        x = torch.full((4,), i / 37.0) + float(np.random.rand()) * 0.01
        x = x + random.random() * 0.01
        return {"x": x, "y": x.sum(0, keepdim=True)}


class _Killed(Exception):
    pass


def _loss(kill_after=None):
    def loss_fn(model, batch, device):
        loss_fn.calls += 1
        if kill_after is not None and loss_fn.calls > kill_after:
            raise _Killed()
        pred = model(batch["x"])  # dropout: draws from the torch RNG
        return torch.nn.functional.mse_loss(pred, batch["y"]), {}

    loss_fn.calls = 0
    return loss_fn


def _net(hidden=16):
    return torch.nn.Sequential(
        torch.nn.Linear(4, hidden), torch.nn.Dropout(0.3), torch.nn.Linear(hidden, 1)
    )


def _cfg(out, **kw):
    kw = {
        "steps": 23,
        "batch_size": 5,
        "lr": 0.01,
        "warmup": 2,
        "ckpt_every": 4,
        "out_dir": str(out),
        "progress": False,
        "device": "cpu",
        **kw,
    }
    return TrainConfig(**kw)


def _digest(model):
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode() + v.detach().numpy().tobytes())
    return h.hexdigest()


def test_kill_and_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path):
    torch.manual_seed(0)
    whole = _net()
    train_loop(whole, _Items(), _loss(), _cfg(tmp_path / "a"))
    torch.manual_seed(0)
    killed = _net()
    with pytest.raises(_Killed):  # killed at step 13: the last checkpoint is step 12
        train_loop(killed, _Items(), _loss(kill_after=13), _cfg(tmp_path / "b"))
    assert load_checkpoint(tmp_path / "b" / "checkpoint.pt")["step"] == 12
    torch.manual_seed(99)  # whatever the caller's RNG, the resumed run continues
    resumed = _net()
    hist = train_loop(resumed, _Items(), _loss(), _cfg(tmp_path / "b"))
    assert hist["steps"] == 23
    assert _digest(resumed) == _digest(whole)


def test_same_seed_same_weights_and_models_built_after_seeding(tmp_path):
    from menpo_densereg.mdm.train import SourceFace, train_mdm

    rng = np.random.default_rng(0)
    faces = [
        SourceFace(rng.random((64, 64)).astype(np.float32), _face_points(64, 64))
        for _ in range(2)
    ]
    model = {
        "crop_size": 32,
        "channels": [4],
        "hidden": 8,
        "steps": 1,
        "patch_scale": [1.0],
    }
    digests = []
    for noise in (1, 2):
        torch.manual_seed(noise)  # the network must not depend on the caller's RNG
        np.random.seed(noise)
        cfg = TrainConfig(steps=2, batch_size=2, progress=False, device="cpu")
        net, _ = train_mdm(faces, _face_points(64, 64), model, cfg)
        digests.append(_digest(net))
    assert digests[0] == digests[1]


def test_checkpoint_of_another_run_is_refused_with_a_hint(tmp_path):
    torch.manual_seed(0)
    train_loop(_net(), _Items(), _loss(), _cfg(tmp_path, steps=8, run_key="aaaa"))
    with pytest.raises(CheckpointMismatch, match="another recipe.*--no-resume"):
        train_loop(_net(), _Items(), _loss(), _cfg(tmp_path, steps=12, run_key="bbbb"))
    with pytest.raises(CheckpointMismatch, match="other settings.*lr"):
        train_loop(
            _net(), _Items(), _loss(), _cfg(tmp_path, steps=12, lr=0.5, run_key="aaaa")
        )
    with pytest.raises(CheckpointMismatch, match="another network architecture"):
        train_loop(_net(32), _Items(), _loss(), _cfg(tmp_path, run_key="aaaa"))
    with pytest.raises(CheckpointMismatch, match="step 8, past the requested 4"):
        train_loop(_net(), _Items(), _loss(), _cfg(tmp_path, steps=4, run_key="aaaa"))
    # --no-resume starts afresh and overwrites it
    hist = train_loop(
        _net(32), _Items(), _loss(), _cfg(tmp_path, steps=4, resume=False)
    )
    assert hist["steps"] == 4
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 4


def test_run_folders_differ_by_fitter_folder_and_recipe(tmp_path):
    recipe = {"fitter": {"kind": "mdm"}, "train": {"steps": 30, "lr": 0.01}}
    a = recipe_train_config(recipe, tmp_path / "copy-a")
    b = recipe_train_config(recipe, tmp_path / "copy-b")
    assert a.out_dir != b.out_dir and a.run_key != b.run_key
    # --steps does not change the run (training may be extended); lr does
    args = type("A", (), {"steps": 10, "device": None, "resume": None})()
    assert recipe_train_config(recipe, tmp_path / "copy-a", args).out_dir == a.out_dir
    other = {"fitter": {"kind": "mdm"}, "train": {"steps": 30, "lr": 0.02}}
    assert run_dir(tmp_path / "copy-a", other) != run_dir(tmp_path / "copy-a", recipe)


def test_stale_checkpoint_temporaries_are_removed(tmp_path):
    stale = tmp_path / ".checkpoint.pt.abc123.tmp.pt"
    stale.write_bytes(b"half a checkpoint")
    train_loop(_net(), _Items(), _loss(), _cfg(tmp_path, steps=2))
    assert not stale.exists()
    assert _files(tmp_path) == ["checkpoint.pt"]


def test_train_command_no_resume_flag():
    import argparse

    from menpo_densereg.commands.train import configure_parser
    from menpo_densereg.training import cli_overrides

    p = argparse.ArgumentParser()
    configure_parser(p)
    assert cli_overrides(p.parse_args(["x", "--no-resume"]))["resume"] is False
    assert cli_overrides(p.parse_args(["x"]))["resume"] is True


# ----------------------------------------------------------------------------- recipes


@pytest.mark.parametrize(
    "body,match",
    [
        ('[readout]\npca = "no"', r"\[readout\] pca = 'no': expected a boolean"),
        ("[readout]\nradius = -1", r"\[readout\] radius = -1: expected a number > 0"),
        ('[readout]\nradius = "big"', r"\[readout\] radius = 'big': expected a number"),
        (
            "[readout]\nn_components = -3",
            r"n_components = -3: expected an integer >= 1",
        ),
        ("[model]\nweights = 123", r"\[model\] weights = 123: expected a string"),
        ("[readout]\npcaa = true", r"\[readout\] pcaa = True: expected a known key"),
        ("[train]\namp = 1", r"\[train\] amp = 1: expected a boolean"),
        ("[trian]\nsteps = 3", r"\[trian\] = .*expected one of the known tables"),
        (
            '[data]\nconsensus_labellers = "dlib-ert"',
            r"consensus_labellers = 'dlib-ert': expected a list of strings",
        ),
    ],
)
def test_recipe_schema_names_file_key_value_and_expected(tmp_path, body, match):
    (tmp_path / "recipe.toml").write_text('[fitter]\nkind = "densereg"\n' + body)
    with pytest.raises(RecipeError, match=match) as e:
        load_recipe(tmp_path)
    assert str(tmp_path / "recipe.toml") in str(e.value)


def test_recipe_kind_of_the_wrong_type(tmp_path):
    (tmp_path / "recipe.toml").write_text('[fitter]\nkind = ["densereg"]\n')
    with pytest.raises(RecipeError, match=r"\[fitter\] kind = \['densereg'\]"):
        load_recipe(tmp_path)
    # through the CLI: exit 2 and the message, no traceback
    assert main(["train", str(tmp_path)]) == 2


def test_shipped_recipes_pass_the_schema():
    from menpo_densereg.fitting.registry import fitters_root, list_fitters

    for name in list_fitters():
        assert load_recipe(fitters_root() / name)["fitter"]["kind"]


# ----------------------------------------------------------------------------- weights


def test_non_finite_weights_are_refused(tmp_path):
    bad = {"net.w": torch.tensor([1.0, float("nan"), 2.0]), "n": torch.tensor([3])}
    save_weights(tmp_path / "nan.safetensors", bad, kind="mdm")
    with pytest.raises(WeightsError, match="nan.safetensors.*NaN or infinite.*'net.w'"):
        load_weights(tmp_path / "nan.safetensors")
    inf = {"w": np.array([np.inf], np.float32)}
    save_weights(tmp_path / "inf.safetensors", inf, kind="mdm")
    with pytest.raises(WeightsError, match="1 of 1"):
        load_weights(tmp_path / "inf.safetensors", as_torch=False)


def test_network_from_weights_refuses_non_finite_tensors(tmp_path):
    from menpo_densereg.fitting.inference import network_from_weights

    tensors = {
        "net.weight": torch.full((1, 2), float("nan")),
        "net.bias": torch.zeros(1),
    }
    with pytest.raises(WeightsError, match="'weight' holds NaN"):
        network_from_weights(
            tmp_path / "x",
            tensors,
            {"config": {"net": {}}},
            lambda c: torch.nn.Linear(2, 1),
            "L",
        )


# ------------------------------------------------------------------------------ images


def test_one_reader_16bit_grey_rgba_palette(tmp_path):
    import PIL.Image

    from menpo_densereg.commands.fit import _read_rgb

    ramp = np.linspace(0, 65535, 40 * 30).reshape(30, 40).astype(np.uint16)
    p16 = tmp_path / "deep.png"
    PIL.Image.fromarray(ramp).save(p16)
    im = read_image(p16)
    np.testing.assert_allclose(im.pixels[0], ramp / 65535.0, atol=1e-6)
    # fit reads the same pixels (no clipping to 8 bits: 80 % white before)
    rgb = np.asarray(_read_rgb(p16))
    assert rgb.shape == (30, 40, 3)
    np.testing.assert_allclose(rgb[..., 0], np.round(ramp / 257.0), atol=1)
    assert (rgb == 255).mean() < 0.01
    base = (np.random.default_rng(0).random((30, 40, 3)) * 255).astype(np.uint8)
    for mode in ("RGBA", "P", "L"):
        p = tmp_path / f"x_{mode}.png"
        PIL.Image.fromarray(base).convert(mode).save(p)
        a = read_image(p)
        assert a.pixels.dtype == np.float32 and a.shape == (30, 40)
        expected = np.asarray(PIL.Image.open(p).convert("RGB"))
        assert np.array_equal(np.asarray(to_pil_rgb(a)), expected)
        assert np.array_equal(np.asarray(_read_rgb(p)), expected)


def test_pixel_limit_turns_a_bomb_into_a_clear_error(tmp_path, monkeypatch):
    import PIL.Image

    p = tmp_path / "bomb.png"
    PIL.Image.new("L", (2000, 1500)).save(p)  # compresses to a few kB
    with pytest.raises(DatasetError, match="bomb.png: image of 2000x1500 = 3.0 MP"):
        read_image(p, max_pixels=1_000_000)
    monkeypatch.setenv("MENPO_DENSEREG_MAX_PIXELS", "1000000")
    with pytest.raises(DatasetError, match="MENPO_DENSEREG_MAX_PIXELS"):
        read_image(p)
    monkeypatch.setenv("MENPO_DENSEREG_MAX_PIXELS", "4000000")
    assert read_image(p).shape == (1500, 2000)


def test_bomb_is_a_per_item_skip_in_benchmark(tmp_path, monkeypatch, capsys):
    data = tmp_path / "data"
    _write_face(data, "a")
    _write_face(data, "b")
    big = (np.zeros((1200, 1200, 3))).astype(np.uint8)
    _write_face(data, "c_bomb", size=(1200, 1200), pixels=big)
    monkeypatch.setenv("MENPO_DENSEREG_MAX_PIXELS", "1000000")
    monkeypatch.setattr(
        "menpo_densereg.commands.benchmark.load_fitters", lambda s: {"f": _GTFitter()}
    )
    out = tmp_path / "out"
    code = main(["benchmark", str(data), "-f", "x", "--out", str(out), "--no-progress"])
    assert code == 0
    table = (out / "table.txt").read_text()
    assert "1 bad input items skipped" in table and "c_bomb.png" in table
    assert "MP limit" in table


# --------------------------------------------------------------------------- benchmark


def test_benchmark_streams_one_image_at_a_time():
    alive = weakref.WeakSet()
    peak = [0]

    def images():
        for i in range(6):
            im = Image(np.zeros((3, 96, 96), np.float32))
            im.landmarks["ibug68"] = PointCloud(_face_points())
            im.path = f"im{i}"
            alive.add(im)
            yield im

    def on_fit(image):
        gc.collect()
        peak[0] = max(peak[0], len(alive))

    res = run_benchmark({"f": _GTFitter(on_fit)}, images(), progress=False)
    assert len(res.errors("f", "gt")) == 6
    assert peak[0] == 1  # read, fit, record, release


def test_limit_applies_before_reading(tmp_path, monkeypatch):
    import menpo_densereg.data.readers as readers

    for i in range(5):
        _write_face(tmp_path, f"f{i}")
    calls = []
    real = readers.read_image
    monkeypatch.setattr(
        readers, "read_image", lambda p, **k: calls.append(p) or real(p, **k)
    )
    folder = PtsFolder(tmp_path, limit=2)
    assert len(folder) == 2 and len(list(folder)) == 2
    assert len(calls) == 2


def test_only_bad_images_exit_2_with_every_reason(tmp_path, monkeypatch, capsys):
    data = tmp_path / "data"
    data.mkdir()
    (data / "broken.png").write_bytes(b"\x89PNG not really")
    write_pts(data / "broken.pts", PointCloud(_face_points()))
    write_pts(data / "lonely.pts", PointCloud(_face_points()))
    monkeypatch.setattr(
        "menpo_densereg.commands.benchmark.load_fitters", lambda s: {"f": _GTFitter()}
    )
    out = tmp_path / "out"
    code = main(["benchmark", str(data), "-f", "x", "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert "nothing measured" in err and "2 items skipped" in err
    assert "broken.png: unreadable image" in err
    assert "lonely.pts: no image beside the landmark file" in err
    assert not out.exists()  # no partial output


def test_unknown_point_count_exits_2_with_the_reason(tmp_path, monkeypatch, capsys):
    data = tmp_path / "data"
    _write_face(data, "a", n_points=67)
    _write_face(data, "b", n_points=67)
    monkeypatch.setattr(
        "menpo_densereg.commands.benchmark.load_fitters", lambda s: {"f": _GTFitter()}
    )
    out = tmp_path / "out"
    code = main(["benchmark", str(data), "-f", "x", "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert "no landmark group of a known markup" in err and "67" in err
    assert err.count("skipped") >= 2
    assert not out.exists()


def test_benchmark_outputs_of_two_runs_never_mix(tmp_path, monkeypatch, capsys):
    data = tmp_path / "data"
    _write_face(data, "a")
    monkeypatch.setattr(
        "menpo_densereg.commands.benchmark.load_fitters", lambda s: {"f": _GTFitter()}
    )
    out = tmp_path / "out"
    out.mkdir()
    stale = out / "ced_detector_ibug68.png"
    stale.write_bytes(b"\x89PNG from an earlier run")
    args = ["benchmark", str(data), "-f", "x", "--out", str(out), "--no-progress"]
    # another live benchmark holds the folder: refused, nothing written
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / ".benchmark.lock").write_text(f"{holder.pid}\n")
        assert main(args) == 2
        assert f"another benchmark (pid {holder.pid})" in capsys.readouterr().err
        assert _files(out) == [".benchmark.lock", "ced_detector_ibug68.png"]
    finally:
        holder.kill()
        holder.wait()
    # its process is gone: the stale lock is taken over, the stale plot removed
    assert main(args) == 0
    files = _files(out)
    assert "ced_detector_ibug68.png" not in files and ".benchmark.lock" not in files
    assert {"table.txt", "per_image.csv", "summary.json", "ced_gt_ibug68.png"} <= set(
        files
    )
    # a later run that measures nothing leaves no earlier table looking current
    (data / "a.png").write_bytes(b"garbage")
    assert main(args) == 2
    assert not [f for f in _files(out) if not f.startswith(".")]


def test_output_lock_is_released(tmp_path):
    with output_lock(tmp_path / "o") as lock:
        assert lock.read_text().strip() == str(os.getpid())
        with pytest.raises(ValueError, match="another benchmark"):
            with output_lock(tmp_path / "o"):
                pass
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------------------- fit


def test_fit_refuses_a_box_outside_the_image(tmp_path, monkeypatch, capsys):
    img = _write_face(tmp_path / "in", "face")
    monkeypatch.setattr(
        "menpo_densereg.commands.fit.load_fitter_by_name", lambda name: _Never()
    )
    out = tmp_path / "out"
    code = main(["fit", str(img), "--box", "500,500,600,600", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert "--box" in err and "outside the 96x96 image" in err
    assert not out.exists() or _files(out) == []


class _Never:
    markup = get_markup("68")
    name = "never"

    def fit_from_bb(self, *a, **k):  # pragma: no cover - the test fails if called
        raise AssertionError("fitted a box outside the image")


def test_fit_and_benchmark_see_the_same_16bit_pixels(tmp_path, monkeypatch):
    import PIL.Image

    ramp = np.linspace(0, 65535, 96 * 96).reshape(96, 96).astype(np.uint16)
    folder = tmp_path / "in"
    folder.mkdir()
    PIL.Image.fromarray(ramp).save(folder / "deep.png")
    write_pts(folder / "deep.pts", PointCloud(_face_points()))
    seen = {}

    class Spy(_GTFitter):
        def fit_from_bb(self, image, bounding_box, gt_shape=None):
            seen.setdefault("fit", image.pixels.copy())
            return Result(PointCloud(_face_points()))

    monkeypatch.setattr(
        "menpo_densereg.commands.fit.load_fitter_by_name", lambda name: Spy()
    )
    out = tmp_path / "out"
    assert (
        main(
            ["fit", str(folder / "deep.png"), "--box", "20,20,80,80", "--out", str(out)]
        )
        == 0
    )
    bench = next(iter(PtsFolder(folder))).pixels
    np.testing.assert_allclose(seen["fit"], bench)
    assert (seen["fit"] >= 0.999).mean() < 0.01
