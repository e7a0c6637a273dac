"""Read-out: landmarks from a synthetic UV field with a known answer, PCA, parts."""

import numpy as np
import pytest

from menpo_densereg.densereg.readout import (
    PartLabeller,
    ShapePCA,
    landmarks_from_uv,
    similarity_align,
)


def _affine_field(h=96, w=96):
    """u = (x - 20) / 60, v = (y - 10) / 70 on an ellipse of face pixels."""
    yy, xx = np.mgrid[0:h, 0:w].astype(float)
    u = (xx - 20) / 60.0
    v = (yy - 10) / 70.0
    face = ((xx - 50) / 32.0) ** 2 + ((yy - 45) / 38.0) ** 2 < 1
    prob = np.where(face, 0.95, 0.02)
    return u, v, prob


def test_landmarks_on_affine_field_are_exact():
    u, v, prob = _affine_field()
    # true positions (y, x) incl. sub-pixel ones and one near the face border
    true = np.array([[30.3, 40.7], [50.0, 50.0], [60.25, 33.5], [45.0, 19.6]])
    lm_uv = np.stack([(true[:, 1] - 20) / 60.0, (true[:, 0] - 10) / 70.0], 1)
    pts, conf, vis = landmarks_from_uv(u, v, lm_uv, prob)
    assert np.abs(pts - true).max() < 1e-6
    assert vis.all() and np.all(conf > 0.8)
    pts_mean, _, _ = landmarks_from_uv(u, v, lm_uv, prob, subpixel="mean")
    assert np.abs(pts_mean[:3] - true[:3]).max() < 0.3  # interior: the mean is unbiased


def test_outlier_component_is_ignored_and_far_landmarks_flagged():
    u, v, prob = _affine_field()
    true = np.array([[40.0, 45.0]])
    lm_uv = np.array([[(45 - 20) / 60.0, (40 - 10) / 70.0]])
    # a spurious 2-pixel blob far away predicts exactly the same UV
    u2, v2 = u.copy(), v.copy()
    u2[70, 60:62] = lm_uv[0, 0]
    v2[70, 60:62] = lm_uv[0, 1]
    pts, conf, vis = landmarks_from_uv(u2, v2, lm_uv, prob)
    assert np.abs(pts - true).max() < 0.05
    # a landmark whose UV is not in the field: low confidence, not visible
    far = np.array([[1.5, 1.5]])
    pts, conf, vis = landmarks_from_uv(u, v, far, prob)
    assert not vis[0] and conf[0] < 0.01
    # no face at all
    pts, conf, vis = landmarks_from_uv(u, v, lm_uv, np.zeros_like(u))
    assert conf[0] == 0 and not vis[0]


def test_bad_inputs():
    u, v, prob = _affine_field()
    with pytest.raises(ValueError, match="landmark_uv"):
        landmarks_from_uv(u, v, np.zeros((3,)), prob)
    with pytest.raises(ValueError, match="u, v"):
        landmarks_from_uv(u, v[:5], np.zeros((1, 2)), prob)
    with pytest.raises(ValueError, match="face_prob"):
        landmarks_from_uv(u, v, np.zeros((1, 2)), prob[:5])


def test_similarity_align():
    rng = np.random.default_rng(0)
    src = rng.normal(size=(10, 2))
    a = 0.3
    R = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    dst = 2.5 * src @ R.T + [3, -1]
    s, R2, t = similarity_align(src, dst)
    assert abs(s - 2.5) < 1e-9 and np.allclose(R2, R) and np.allclose(t, [3, -1])


def _shapes(n=40, seed=0):
    rng = np.random.default_rng(seed)
    base = (
        np.stack([np.sin(np.linspace(0, 6, 12)), np.cos(np.linspace(0, 6, 12))], 1) * 30
    )
    mode = np.stack([np.linspace(-1, 1, 12), np.zeros(12)], 1) * 5
    shapes = []
    for _ in range(n):
        a = rng.normal(0, 0.1)
        R = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        shapes.append(
            (base + rng.normal() * mode) @ R.T * rng.uniform(0.8, 1.2)
            + rng.normal(0, 20, 2)
        )
    return shapes, base, mode


def test_pca_reconstruction_fixes_a_low_confidence_outlier():
    shapes, base, mode = _shapes()
    pca = ShapePCA.from_shapes(shapes, max_components=4)
    assert pca.n_points == 12
    true = (base + 0.7 * mode) * 1.1 + [100, 80]
    noisy = true.copy()
    noisy[3] += [25, -30]
    conf = np.ones(12)
    conf[3] = 0.0
    rec = pca.reconstruct(noisy, conf)
    assert np.linalg.norm(rec[3] - true[3]) < 2.0
    assert np.abs(rec - true).max() < 2.0
    # arrays round trip
    pca2 = ShapePCA.from_arrays(pca.to_arrays())
    assert np.allclose(pca2.reconstruct(noisy, conf), rec, atol=1e-3)
    with pytest.raises(ValueError, match="points"):
        pca.reconstruct(np.zeros((5, 2)))


def test_part_labeller():
    # vertices: left half of UV is part 1, right half part 2
    g = np.linspace(0, 1, 21)
    gu, gv = np.meshgrid(g, g)
    vuv = np.stack([gu.ravel(), gv.ravel()], 1)
    parts = np.where(vuv[:, 0] < 0.5, 1, 2)
    lab = PartLabeller(vuv, parts, ["left", "right"], resolution=64)
    u = np.array([[0.1, 0.9], [0.3, 0.7]])
    v = np.full((2, 2), 0.5)
    mask = np.array([[True, True], [False, True]])
    assert lab.label(u, v, mask).tolist() == [[1, 2], [0, 2]]
    assert "2 parts" in str(lab)
