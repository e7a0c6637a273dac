"""Tests of the reference-ear (u, v) space and the TPS ear ground truth."""

import numpy as np
import pytest
from menpo.image import Image
from menpo.shape import PointCloud

from menpo_densereg.template.ears import (
    EarSpace,
    ear_dense_ground_truth,
    procrustes_mean,
)
from menpo_densereg.template.groundtruth import landmarks_from_uv


def _ear(rng, scale=30.0, centre=(50.0, 40.0), angle=0.0):
    """A plausible 55-point ear-like shape: outer contour, inner fold, smooth noise."""
    t = np.linspace(0.15, 1.85 * np.pi, 20)
    outer = np.stack([1.6 * np.cos(t), np.sin(t)], 1)
    s = np.linspace(0.3, 1.7 * np.pi, 20)
    inner = np.stack([1.0 * np.cos(s), 0.6 * np.sin(s)], 1) + [0.1, 0.05]
    c = np.linspace(0, 2 * np.pi, 15, endpoint=False)
    core = np.stack([0.45 * np.cos(c), 0.3 * np.sin(c)], 1) + [0.2, 0.1]
    pts = np.concatenate([outer, inner, core]) + rng.normal(0, 0.03, (55, 2))
    a = np.deg2rad(angle)
    R = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return pts @ R.T * scale + centre


@pytest.fixture(scope="module")
def space():
    rng = np.random.default_rng(0)
    shapes = [
        _ear(rng, rng.uniform(20, 40), angle=rng.uniform(-20, 20)) for _ in range(8)
    ]
    return EarSpace.from_shapes([PointCloud(s) for s in shapes])


def test_space_is_a_normalised_mean(space):
    assert space.n_shapes == 8 and "55 points" in str(space)
    assert space.uv.shape == (55, 2)
    assert space.uv.min() == pytest.approx(0.1) and space.uv.max() == pytest.approx(0.9)
    again = EarSpace.from_dict(space.to_dict())
    np.testing.assert_allclose(again.uv, space.uv)


def test_procrustes_mean_removes_similarity():
    rng = np.random.default_rng(1)
    base = _ear(rng)
    shapes = [base * s + t for s, t in [(1, 0), (2.5, 10), (0.7, -4)]]
    a = np.deg2rad(30)
    shapes.append(
        (base - base.mean(0))
        @ np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]).T
    )
    m = procrustes_mean(shapes)
    ref = (base - base.mean(0)) / np.sqrt(((base - base.mean(0)) ** 2).sum(1).mean())
    np.testing.assert_allclose(m, ref, atol=1e-6)


def test_tps_is_exact_at_the_landmarks(space):
    rng = np.random.default_rng(5)
    pts = _ear(rng, 35, (60, 50), 12)
    vu = space.transform(pts).apply(pts)
    np.testing.assert_allclose(vu[:, [1, 0]], space.uv, atol=1e-8)
    gt = ear_dense_ground_truth((120, 100), pts, space)
    m = gt.mask
    assert m.sum() > 1000
    assert gt.u[m].min() >= 0 and gt.u[m].max() <= 1 and np.all(gt.u[~m] == 0)
    assert set(np.unique(gt.parts)) == {0, 1} and gt.part_names == ["background", "ear"]
    found, ok = landmarks_from_uv(gt.u, gt.v, gt.mask, space.uv)
    err = np.linalg.norm(found - pts, axis=1)[ok]
    assert ok.mean() > 0.9 and np.median(err) < 1.0


def test_point_outside_the_image_does_not_crash(space):
    rng = np.random.default_rng(2)
    pts = _ear(rng, 30, (50, 30))
    pts[np.argmin(pts[:, 1]), 1] = -1.0
    img = Image.init_blank((100, 80))
    gt = ear_dense_ground_truth(img, PointCloud(pts), space)
    assert gt.mask.shape == (100, 80) and gt.mask.any()


def test_bad_ears_fail_clearly(space):
    with pytest.raises(ValueError, match="55"):
        ear_dense_ground_truth((50, 50), np.zeros((54, 2)), space)
    with pytest.raises(ValueError, match="degenerate"):
        ear_dense_ground_truth((50, 50), np.ones((55, 2)), space)
    pts = _ear(np.random.default_rng(3))
    pts[4] = pts[3]
    with pytest.raises(ValueError, match="coincide"):
        ear_dense_ground_truth((100, 100), pts, space)
    pts[4] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        EarSpace.from_shapes([pts])
    with pytest.raises(ValueError, match="at least one"):
        EarSpace.from_shapes([])


def test_shared_ears(shared_data):
    from menpo_densereg.data.readers import read_pts_folder

    ims = read_pts_folder(shared_data / "ears55", on_error="skip")
    sp = EarSpace.from_shapes(ims)
    errs = []
    for im in ims[:6]:
        pts = im.landmarks[im.landmarks.group_labels[0]].points
        gt = ear_dense_ground_truth(im, pts, sp)
        found, ok = landmarks_from_uv(gt.u, gt.v, gt.mask, sp.uv)
        errs.append(np.linalg.norm(found - pts, axis=1)[ok])
    assert np.median(np.concatenate(errs)) < 1.0
