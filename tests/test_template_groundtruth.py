"""Tests of the template fit, the z-buffer rasteriser and the dense ground truth."""

import numpy as np
import pytest
from menpo.image import BooleanImage, MaskedImage
from menpo.shape import PointCloud

import menpo.io as mio
from menpo_densereg.template.groundtruth import (
    dense_ground_truth,
    fit_template,
    landmarks_from_uv,
    rasterise,
    rasterise_mesh,
)


@pytest.fixture(scope="module")
def takeo():
    im = mio.import_builtin_asset.takeo_ppm()
    return im.rescale(0.55)  # ~124 x 83 px


@pytest.fixture(scope="module")
def takeo_gt(takeo):
    return dense_ground_truth(takeo)


def test_rasteriser_zbuffer_keeps_the_nearest_triangle():
    xy = np.array([[2, 2], [17, 2], [2, 17], [2, 2], [17, 2], [2, 17]], float)
    depth = np.array([5, 5, 5, 1, 1, 1], float)  # second triangle in front
    tris = np.array([[0, 1, 2], [3, 4, 5]])
    tri, bary, zbuf = rasterise_mesh(xy, depth, tris, (20, 20))
    assert tri[5, 5] == 1 and zbuf[5, 5] == pytest.approx(1)
    assert tri[15, 15] == -1 and np.isinf(zbuf[15, 15])
    np.testing.assert_allclose(bary[tri >= 0].sum(1), 1)
    # culling drops back-facing triangles (positive area in (column, row))
    tri_c, _, _ = rasterise_mesh(xy, depth, tris, (20, 20), cull_back=True)
    assert (tri_c >= 0).sum() == 0
    tri_c, _, _ = rasterise_mesh(
        xy, depth, tris[:, [0, 2, 1]], (20, 20), cull_back=True
    )
    assert tri_c[5, 5] == 1


def test_fit_recovers_a_synthetic_pose():
    from menpo_densereg.template.groundtruth import TemplateFit
    from menpo_densereg.template.face import FaceTemplate
    from scipy.spatial.transform import Rotation

    t = FaceTemplate.load()
    for yaw in (0, 30, -60):
        R = (
            np.diag([1.0, -1, -1])
            @ Rotation.from_euler("ZXY", [5, 10, yaw], degrees=True).as_matrix()
        )
        V = 40 * t.points @ R.T + [60, 70, 0]
        posed = TemplateFit(t, R, 40, [60, 70], V[:, :2], V[:, 2], None, 0, 0)
        pts, _ = posed.landmarks("68")  # jaw contour marched to the silhouette
        fit = fit_template(PointCloud(pts))
        assert fit.reprojection_error < 0.5
        y, p, r = fit.yaw_pitch_roll
        assert y == pytest.approx(yaw, abs=2) and p == pytest.approx(10, abs=2)
        assert r == pytest.approx(-5, abs=2)
        assert fit.scale == pytest.approx(40, rel=0.02)
        assert fit.landmark_residual < 0.5
    assert "TemplateFit" in str(fit)


def test_dense_ground_truth_ranges_and_types(takeo, takeo_gt):
    gt, fit = takeo_gt
    assert gt.shape == takeo.shape
    m = gt.mask
    assert 0.2 < m.mean() < 0.8
    for a in (gt.u, gt.v, gt.depth):
        assert a.dtype == np.float32
        assert a[m].min() >= 0 and a[m].max() <= 1
        assert np.all(a[~m] == 0)
    assert set(np.unique(gt.parts[m])) <= set(range(1, 9))
    assert len(set(np.unique(gt.parts[m]))) >= 6
    assert np.all(gt.parts[~m] == 0)
    assert isinstance(gt.uv_image, MaskedImage) and gt.uv_image.n_channels == 2
    assert isinstance(gt.mask_image, BooleanImage)
    assert isinstance(gt.depth_image, MaskedImage) and isinstance(
        gt.parts_image, MaskedImage
    )
    assert "DenseGroundTruth" in str(gt)
    # u increases from image-left to image-right across the face, v downwards
    rows, cols = np.nonzero(m)
    assert np.corrcoef(cols, gt.u[m])[0, 1] > 0.8
    assert np.corrcoef(rows, gt.v[m])[0, 1] > 0.8


def test_mask_and_landmarks_are_consistent(takeo_gt):
    gt, fit = takeo_gt
    pts = fit.shape68
    r, c = np.rint(pts).astype(int).T
    near = np.zeros(len(pts), bool)
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            near |= gt.mask[
                np.clip(r + dr, 0, gt.shape[0] - 1), np.clip(c + dc, 0, gt.shape[1] - 1)
            ]
    assert near.mean() > 0.9
    # the template's landmarks looked up in the rendered UV land on the annotations
    found, ok = landmarks_from_uv(gt.u, gt.v, gt.mask, fit.landmark_uv())
    err = np.linalg.norm(found - pts, axis=1)[ok]
    assert ok.mean() > 0.9
    assert np.median(err) < 1.0 and np.percentile(err, 90) < 3.0


def test_landmark_parts_are_right(takeo_gt):
    gt, fit = takeo_gt
    pts = fit.shape68
    eye = np.rint(pts[36:42].mean(0)).astype(int)
    assert gt.part_names[gt.parts[eye[0], eye[1]]] == "left_eye"
    tip = np.rint(pts[30]).astype(int)
    assert gt.part_names[gt.parts[tip[0], tip[1]]] == "nose"


def test_zbuffer_visibility(takeo_gt):
    gt, fit = takeo_gt
    pts, depth = fit.landmarks("68")
    vis = gt.is_visible(pts, depth)
    assert vis[27:36].all()  # nose
    # the same points pushed behind the surface are hidden
    behind = depth + 0.5 * fit.scale
    assert not gt.is_visible(pts[27:36], behind[27:36]).any()
    # points outside the image are not visible
    assert not gt.is_visible(np.array([[-5.0, -5.0]]), np.array([0.0]))[0]


def test_warped_fit_renders_in_the_crop(takeo_gt, takeo):
    gt, fit = takeo_gt
    A = np.array([[0.5, 0.0, -10.0], [0.0, 0.5, 3.0]])  # (y, x) -> crop
    small = rasterise(fit.warped(A), (64, 64))
    assert small.mask.sum() == pytest.approx(gt.mask.sum() * 0.25, rel=0.15)


def test_bad_landmarks_fail_clearly():
    with pytest.raises(ValueError, match="68"):
        fit_template(np.zeros((67, 2)) + np.arange(67)[:, None])
    bad = np.random.default_rng(0).uniform(0, 100, (68, 2))
    bad[3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fit_template(bad)
    with pytest.raises(ValueError, match="degenerate"):
        fit_template(np.ones((68, 2)) * 5)
    line = np.stack([np.arange(68.0), 2 * np.arange(68.0)], 1)
    with pytest.raises(ValueError, match="degenerate"):
        fit_template(line)
    with pytest.raises(TypeError):
        dense_ground_truth(np.zeros((10, 10)))
    with pytest.raises(ValueError, match="landmark_uv"):
        landmarks_from_uv(
            np.zeros((4, 4)), np.zeros((4, 4)), np.ones((4, 4)), np.zeros(3)
        )


def test_shared_faces68_lookup(shared_data):
    from menpo_densereg.data.readers import read_pts_folder

    errs = []
    for im in read_pts_folder(shared_data / "faces68" / "lfpw")[:3]:
        im = im.rescale(0.4)
        gt, fit = dense_ground_truth(im)
        found, ok = landmarks_from_uv(gt.u, gt.v, gt.mask, fit.landmark_uv())
        errs.append(np.linalg.norm(found - fit.shape68, axis=1)[ok])
    e = np.concatenate(errs)
    assert np.median(e) < 1.0 and len(e) > 190
