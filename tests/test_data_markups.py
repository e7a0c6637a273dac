import numpy as np
import pytest
from menpo.shape import PointCloud

from menpo_densereg.data.markups import (
    MARKUPS,
    can_convert,
    check_shape,
    conversion_matrix,
    convert,
    get_markup,
    markup_for_n_points,
)


@pytest.mark.parametrize(
    "name,n", [("68", 68), ("wflw", 98), ("29", 29), ("5", 5), ("ear", 55)]
)
def test_lookup_and_groups_cover_points(name, n):
    m = get_markup(name)
    assert m.n_points == n and markup_for_n_points(n) is m
    covered = sorted(i for g in m.groups.values() for i in g)
    assert set(covered) <= set(range(n))
    assert str(m).startswith(m.name)


def test_groups_partition_68_and_98():
    for m in (get_markup("68"), get_markup("98")):
        covered = sorted(i for g in m.groups.values() for i in g)
        assert covered == list(range(m.n_points))


def test_unknown_markup():
    with pytest.raises(ValueError, match="unknown markup"):
        get_markup("123")


def test_conversion_rows_are_averages():
    for s, t in [("98", "68"), ("68", "5"), ("98", "5"), ("68", "29"), ("98", "29")]:
        M = conversion_matrix(s, t)
        assert M.shape == (get_markup(t).n_points, get_markup(s).n_points)
        np.testing.assert_allclose(M.sum(axis=1), 1.0)
        assert can_convert(s, t)
    assert not can_convert("5", "68")
    with pytest.raises(ValueError, match="no known correspondence"):
        conversion_matrix("5", "68")


def test_68_to_5_eye_centres_and_corners():
    pts = np.zeros((68, 2))
    pts[36:42] = [[10, 10], [10, 12], [10, 14], [12, 14], [12, 12], [12, 10]]
    pts[48], pts[54], pts[30] = [40, 10], [40, 30], [25, 20]
    five = convert(PointCloud(pts), "68", "5").points
    np.testing.assert_allclose(five[0], [11, 12])
    np.testing.assert_allclose(five[3], [40, 10])
    np.testing.assert_allclose(five[4], [40, 30])


def test_98_to_68_keeps_eye_corners_and_normaliser():
    rng = np.random.default_rng(1)
    pts98 = rng.uniform(0, 100, (98, 2))
    pts68 = convert(pts98, "98", "68").points
    np.testing.assert_allclose(pts68[36], pts98[60])
    np.testing.assert_allclose(pts68[45], pts98[72])
    np.testing.assert_allclose(pts68[0], pts98[0])
    np.testing.assert_allclose(pts68[16], pts98[32])
    d98 = get_markup("98").normalising_distance(pts98)
    d68 = get_markup("68").normalising_distance(pts68)
    assert d98 == pytest.approx(d68)


def test_check_shape_errors():
    with pytest.raises(ValueError, match="has 5 points but the ibug68 markup needs 68"):
        check_shape(np.zeros((5, 2)), "68", "x.pts")
    bad = np.zeros((68, 2))
    bad[3, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        check_shape(bad, "68")
    assert set(MARKUPS) == {"ibug68", "wflw98", "lfpw29", "five", "ear55"}


def test_lfpw29_on_real_helen_sample(shared_data):
    from menpo_densereg.data.readers import read_pts

    f = sorted((shared_data / "helen29").glob("*.pts"))[0]
    pts = read_pts(f, n_points=29).points
    # brows are above the eyes, eyes above the nose tip, nose above mouth, chin lowest
    assert (
        pts[[4, 6], 0].mean()
        < pts[[8, 9], 0].mean()
        < pts[20, 0]
        < pts[[22, 23], 0].mean()
    )
    assert pts[28, 0] == pts[:, 0].max()
    # "left" is image-left: point 8 (left outer eye corner) has the smaller x
    assert pts[8, 1] < pts[9, 1]


@pytest.mark.parametrize("name", ["68", "98", "29", "5"])
def test_mirror_points_is_an_involution_that_keeps_image_left_left(name):
    from menpo_densereg.data.markups import flip_permutation, mirror_points

    perm = flip_permutation(name)
    rng = np.random.default_rng(0)
    pts = rng.uniform(0, 50, (get_markup(name).n_points, 2))
    once = mirror_points(pts, 60, perm)
    assert np.allclose(mirror_points(once, 60, perm), pts)
    # a point's mirror lands at x -> 59 - x under its left/right partner's label
    assert np.allclose(once[perm[0]], [pts[0, 0], 59 - pts[0, 1]])


def test_average_with_mirror_plain_and_confidence_weighted():
    from menpo_densereg.data.markups import (
        average_with_mirror,
        flip_permutation,
        mirror_points,
    )

    perm = flip_permutation("5")
    pts = np.array([[10.0, 10], [10, 30], [20, 20], [30, 12], [30, 28]])
    other = pts + [2.0, 0.0]  # the same face, 2 px lower, predicted on the mirror
    mirrored = mirror_points(other, 41, perm)
    avg, conf = average_with_mirror(pts, mirrored, 41, perm)
    assert conf is None and np.allclose(avg, pts + [1.0, 0.0])
    # confidence-weighted: a point the mirror is sure of and the image is not
    c1, c2 = np.full(5, 0.5), np.full(5, 0.5)
    c1[2], c2[2] = 0.0, 1.0  # the nose tip maps to itself
    avg, conf = average_with_mirror(pts, mirrored, 41, perm, weights=(c1, c2))
    assert np.allclose(avg[[0, 1, 3, 4]], pts[[0, 1, 3, 4]] + [1.0, 0.0])
    assert avg[2, 0] > pts[2, 0] + 1.99
    assert np.allclose(conf, 0.5 * (c1 + c2[perm]))
