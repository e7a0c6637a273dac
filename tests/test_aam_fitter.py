"""Patch AAM refiner: fitting reduces the error, safe save/load round-trips exactly."""

import numpy as np
import menpo.io as mio
import pytest
from menpo.shape import PointCloud
from menpofit.fitter import align_shape_with_bounding_box

from menpo_densereg.aam.build import (
    build_patch_aam,
    cached_patch_aam,
    load_aam,
    save_aam,
)
from menpo_densereg.aam.features import orient_hist
from menpo_densereg.aam.fitter import AAMFitter, from_fitter_dir
from menpo_densereg.data.annotated import mirror_image
from menpo_densereg.fitting.base import box_from_shape
from menpo_densereg.fitting.weights import WeightsError

SMALL = dict(
    diagonal=60,
    scales=[1.0],
    patch_shape=[9, 9],
    max_shape_components=8,
    max_appearance_components=20,
)


def _gt(image):
    g = list(image.landmarks.keys())[0]
    return PointCloud(np.asarray(image.landmarks[g].points, dtype=float))


def _nme(shape, gt):
    d = np.linalg.norm(gt.points[36] - gt.points[45])
    return float(np.linalg.norm(shape.points - gt.points, axis=1).mean() / d)


def _asset(name, size=128):
    im = mio.import_builtin_asset(name)
    gt = _gt(im)
    im.landmarks.clear() if hasattr(im.landmarks, "clear") else None
    for k in list(im.landmarks.keys()):
        del im.landmarks[k]
    im.landmarks["PTS"] = gt
    im = im.crop_to_landmarks_proportion(0.4, group="PTS")
    return im.rescale(size / max(im.shape))


@pytest.fixture(scope="module")
def small_aam():
    train = [_asset(n) for n in ("einstein.jpg", "breakingbad.jpg", "lenna.png")]
    train = train + [mirror_image(im) for im in train]
    return build_patch_aam(train, **SMALL)


def _perturbed_start(image, reference_shape, seed=0, shift=0.1):
    """The mean shape aligned to the ground-truth box shifted by up to ``shift``."""
    from menpo.shape import bounding_box

    gt = _gt(image)
    rng = np.random.default_rng(seed)
    lo, hi = gt.bounds()
    offset = rng.uniform(-shift, shift, 2) * (hi - lo).mean()
    start = align_shape_with_bounding_box(
        reference_shape, bounding_box(lo + offset, hi + offset)
    )
    return start, gt


def test_aam_reduces_error_on_held_out_face(small_aam):
    fitter = AAMFitter(small_aam, n_shape=[6], n_appearance=[15], max_iters=[20])
    image = _asset("takeo.ppm")
    for seed in range(3):
        start, gt = _perturbed_start(image, small_aam.reference_shape, seed=seed)
        res = fitter.fit_from_shape(image, start, gt_shape=gt)
        assert res.initial_shape.n_points == 68 and res.final_shape.n_points == 68
        assert np.allclose(res.initial_shape.points, start.points)
        e0, e1 = _nme(res.initial_shape, gt), _nme(res.final_shape, gt)
        assert e1 < e0 and e1 < 0.1, (seed, e0, e1)


def test_aam_reduces_error_on_held_out_shared_faces(small_aam, shared_data):
    from menpo_densereg.data.readers import read_pts_folder

    fitter = AAMFitter(small_aam, n_shape=[6], n_appearance=[15], max_iters=[20])
    e0, e1 = [], []
    for image in read_pts_folder(shared_data / "faces68" / "lfpw")[:4]:
        gt = _gt(image)
        image = image.crop_to_landmarks_proportion(0.4)
        image = image.rescale(128 / max(image.shape))
        start, gt = _perturbed_start(image, small_aam.reference_shape, seed=3)
        res = fitter.fit_from_shape(image, start, gt_shape=gt)
        e0.append(_nme(start, gt))
        e1.append(_nme(res.final_shape, gt))
    assert np.mean(e1) < 0.85 * np.mean(e0), (e0, e1)


def test_aam_fit_from_bb_in_image_frame(small_aam):
    fitter = AAMFitter(small_aam, n_shape=[6], n_appearance=[15], max_iters=[10])
    image = _asset("takeo.ppm")
    gt = _gt(image)
    box = box_from_shape(gt)
    res = fitter.fit_from_bb(image, box, gt_shape=gt)
    expected = align_shape_with_bounding_box(small_aam.reference_shape, box)
    assert np.allclose(res.initial_shape.points, expected.points)
    # the result is in the image frame: close to the ground truth, not to a crop
    assert _nme(res.final_shape, gt) < 0.2


def test_save_load_round_trip_identical_fit(small_aam, tmp_path):
    path = tmp_path / "aam.safetensors"
    save_aam(small_aam, path)
    loaded = load_aam(path)
    assert loaded.aam_config == small_aam.aam_config
    image = _asset("takeo.ppm")
    start, gt = _perturbed_start(image, small_aam.reference_shape, seed=1)
    kw = dict(n_shape=[6], n_appearance=[15], max_iters=[10])
    r1 = AAMFitter(small_aam, **kw).fit_from_shape(image, start)
    r2 = AAMFitter(loaded, **kw).fit_from_shape(image, start)
    assert np.array_equal(r1.final_shape.points, r2.final_shape.points)
    for algo in ("WibergInverseCompositional",):
        r1 = AAMFitter(small_aam, algorithm=algo, **kw).fit_from_shape(image, start)
        r2 = AAMFitter(loaded, algorithm=algo, **kw).fit_from_shape(image, start)
        assert np.array_equal(r1.final_shape.points, r2.final_shape.points)


def test_corrupt_or_foreign_file_raises_weights_error(small_aam, tmp_path):
    path = tmp_path / "aam.safetensors"
    save_aam(small_aam, path)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(WeightsError, match="bad.safetensors"):
        load_aam(bad)
    with pytest.raises(WeightsError, match="missing.safetensors"):
        load_aam(tmp_path / "missing.safetensors")
    from menpo_densereg.fitting.weights import save_weights

    other = tmp_path / "other.safetensors"
    save_weights(other, {"w": np.zeros(3, np.float32)}, kind="mdm")
    with pytest.raises(WeightsError, match="expected 'patch_aam'"):
        load_aam(other)


def test_cached_builder_reuses_and_rebuilds(tmp_path):
    train = [_asset(n, size=96) for n in ("einstein.jpg", "lenna.png")]
    cfg = dict(SMALL, max_appearance_components=3)
    cache = tmp_path / "cache.safetensors"
    a1 = cached_patch_aam(train, cache, **cfg)
    mtime = cache.stat().st_mtime_ns
    a2 = cached_patch_aam(train, cache, **cfg)
    assert cache.stat().st_mtime_ns == mtime  # loaded, not rebuilt
    assert np.array_equal(
        a1.appearance_models[0].components, a2.appearance_models[0].components
    )
    cached_patch_aam(train, cache, **dict(cfg, patch_shape=[7, 7]))
    assert load_aam(cache).aam_config["patch_shape"] == [[7, 7]]


def test_from_fitter_dir(small_aam, tmp_path):
    save_aam(small_aam, tmp_path / "aam.safetensors")
    (tmp_path / "recipe.toml").write_text(
        '[fitter]\nkind = "aam"\nname = "tiny-aam"\n[fit]\nn_shape = 4\n'
        "n_appearance = 10\nmax_iters = 5\n"
    )
    fitter = from_fitter_dir(tmp_path)
    assert fitter.name == "tiny-aam" and fitter.markup.n_points == 68
    assert "tiny-aam" in str(fitter)
    image = _asset("takeo.ppm")
    res = fitter.fit_from_bb(image, box_from_shape(_gt(image)))
    assert res.final_shape.points.shape == (68, 2)


def test_bad_options_and_inputs():
    with pytest.raises(ValueError, match="features"):
        build_patch_aam([_asset("lenna.png")] * 2, features="sift")
    with pytest.raises(ValueError, match="at least 2"):
        build_patch_aam([_asset("lenna.png")])


def test_mirror_and_orient_hist():
    im = _asset("lenna.png")
    m = mirror_image(im)
    gt, gm = _gt(im), _gt(m)
    # outer eye corners swap sides; mirrored twice gives the original
    assert np.isclose(gm.points[36, 1], im.shape[1] - 1 - gt.points[45, 1])
    assert np.allclose(_gt(mirror_image(m)).points, gt.points)
    f = orient_hist(im)
    assert f.n_channels == 8 and f.shape == im.shape
    assert np.all(np.isfinite(f.pixels))


def test_train_from_recipe_and_load(tmp_path):
    from menpo_densereg.aam.train import train_from_recipe
    from menpo_densereg.fitting.recipes import load_recipe

    (tmp_path / "recipe.toml").write_text(
        '[fitter]\nkind = "aam"\nname = "r-aam"\n[aam]\n'
        'builtin_assets = ["einstein.jpg", "lenna.png"]\nmirror = true\n'
        "diagonal = 50\nscales = [1.0]\npatch_shape = [7, 7]\n"
        "max_appearance_components = 5\n"
    )
    out = train_from_recipe(load_recipe(tmp_path), tmp_path)
    assert out["n_images"] == 4
    fitter = from_fitter_dir(tmp_path)
    assert fitter.aam.aam_config["patch_shape"] == [[7, 7]]
    image = _asset("takeo.ppm")
    assert (
        fitter.fit_from_bb(image, box_from_shape(_gt(image))).final_shape.n_points == 68
    )
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "recipe.toml").write_text('[fitter]\nkind = "aam"\n')
    with pytest.raises(WeightsError, match="menpo-densereg train"):
        from_fitter_dir(tmp_path / "bad")


def test_train_from_recipe_refuses_68_point_pools_for_another_markup(tmp_path):
    from menpo_densereg.aam.train import train_from_recipe

    recipe = {
        "_path": str(tmp_path / "recipe.toml"),
        "fitter": {"kind": "aam", "name": "ear-aam"},
        "aam": {"markup": "ear55", "train": [], "offset68": ["ytf68"]},
    }
    with pytest.raises(ValueError, match="offset68 / consensus68 need 68-point data"):
        train_from_recipe(recipe, tmp_path)
    assert not (tmp_path / "aam.safetensors").exists()
