"""Tests of the face template, its UV space and labellings."""

import numpy as np
import pytest

from menpo_densereg.template.face import MARKUP_NAMES, PART_NAMES, FaceTemplate


def test_load_is_cached_and_describes_itself():
    t = FaceTemplate.load()
    assert FaceTemplate.load() is t
    assert 3000 < t.n_vertices < 12000
    assert t.trilist.max() < t.n_vertices
    assert "FaceTemplate" in str(t) and str(t.n_vertices) in str(t)


def test_uv_in_unit_square_and_spans_it():
    t = FaceTemplate.load()
    assert t.uv.shape == (t.n_vertices, 2)
    assert t.uv.min() >= 0 and t.uv.max() <= 1
    assert np.all(t.uv.min(0) < 0.02) and np.all(t.uv.max(0) > 0.98)


@pytest.mark.parametrize(
    "markup,n", [("68", 68), ("wflw98", 98), ("29", 29), ("five", 5)]
)
def test_landmark_uv_of_every_markup(markup, n):
    t = FaceTemplate.load()
    uv = t.landmark_uv(markup)
    assert uv.shape == (n, 2)
    assert np.all((uv >= 0) & (uv <= 1))
    # the anchors (triangle + barycentric weights) reproduce the UV definition
    assert np.abs(t.landmark_points(t.uv, markup) - uv).max() < 2e-3


def test_markups_agree_where_they_coincide():
    t = FaceTemplate.load()
    l68, l98, l5 = t.landmark_uv("68"), t.landmark_uv("98"), t.landmark_uv("5")
    np.testing.assert_allclose(l98[60], l68[36], atol=1e-6)  # outer eye corner
    np.testing.assert_allclose(l98[76:96], l68[48:68], atol=1e-6)  # mouth
    np.testing.assert_allclose(l5[0], l68[36:42].mean(0), atol=1e-6)  # eye centre
    # image-left features have smaller u; the chin is the lowest jaw point
    assert l68[36, 0] < 0.5 < l68[45, 0]
    assert np.argmax(l68[:17, 1]) in (7, 8, 9)


def test_unknown_markup_is_refused():
    t = FaceTemplate.load()
    with pytest.raises(ValueError, match="not defined on the face template"):
        t.landmark_uv("ear55")
    with pytest.raises(ValueError, match="unknown markup"):
        t.landmark_uv("17")


def test_parts():
    t = FaceTemplate.load()
    assert t.part_names == PART_NAMES and t.part_names[0] == "background"
    assert len(t.part_names) == 9
    counts = np.bincount(t.vertex_parts, minlength=9)
    assert counts[0] == 0 and np.all(counts[1:] > 0)
    # landmarks fall in their parts
    l68 = t.landmark_uv("68")
    parts = t.parts_from_uv(l68[:, 0], l68[:, 1])
    assert parts[19] == PART_NAMES.index("left_eyebrow")
    assert parts[24] == PART_NAMES.index("right_eyebrow")
    assert parts[30] == PART_NAMES.index("nose")
    assert parts[51] == PART_NAMES.index("upper_lip")
    assert parts[8] == PART_NAMES.index("skin")
    low = (l68[57] + l68[66]) / 2
    assert t.parts_from_uv(low[0], low[1]) == PART_NAMES.index("lower_lip")
    eye_c = t.landmark_uv("five")[:2]
    assert list(t.parts_from_uv(eye_c[:, 0], eye_c[:, 1])) == [3, 4]


def test_mirror_and_normals():
    t = FaceTemplate.load()
    p = t.points
    err = np.abs(p[t.mirror] * [-1, 1, 1] - p).max(1)
    assert np.median(err) < 0.05
    n = t.vertex_normals()
    assert np.allclose(np.linalg.norm(n, axis=1), 1, atol=1e-6)
    assert n[np.argmax(p[:, 2]), 2] > 0.8  # nose tip faces the viewer


def test_shipped_data_matches_the_generator():
    """The shipped file is what scripts/make_template_data.py builds from menpo3d."""
    from menpo_densereg.template.face import build_template_data

    data = build_template_data()
    t = FaceTemplate.load()
    np.testing.assert_allclose(data["uv"], t.uv, atol=1e-6)
    np.testing.assert_array_equal(data["trilist"], t.trilist)
    for m in MARKUP_NAMES:
        np.testing.assert_allclose(data[f"{m}_uv"], t.landmark_uv(m), atol=1e-6)


def test_bad_data_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        FaceTemplate.load(tmp_path / "missing.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not an npz")
    with pytest.raises(ValueError, match="bad.npz"):
        FaceTemplate.load(bad)
