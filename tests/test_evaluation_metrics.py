import numpy as np
import pytest
from menpo.shape import PointCloud

from menpo_densereg.evaluation.metrics import (
    auc,
    ced,
    error_stats,
    failure_rate,
    nme,
    normaliser,
    paired_difference,
    plot_ced,
    point_errors,
    stats_table,
)


def _face68(scale=1.0):
    rng = np.random.default_rng(0)
    pts = rng.uniform(0, 100, size=(68, 2))
    pts[36] = [50, 20]
    pts[45] = [50, 80]  # outer eye corners 60 px apart
    return PointCloud(pts * scale)


def test_nme_by_hand_outer_eye_corners():
    gt = _face68()
    pred = PointCloud(gt.points + np.array([3.0, 4.0]))  # every point off by 5 px
    assert normaliser(gt) == pytest.approx(60.0)
    assert nme(pred, gt) == pytest.approx(5.0 / 60.0)


def test_nme_other_normalisers():
    gt = PointCloud(np.array([[0.0, 0.0], [10.0, 0.0], [10.0, 30.0], [0.0, 30.0]]))
    pred = PointCloud(gt.points + [[0, 2], [0, 0], [0, 0], [0, 0]])
    # unknown markup -> average edge of the GT box = (10 + 30) / 2
    assert nme(pred, gt) == pytest.approx(0.5 / 20.0)
    assert normaliser(gt, kind="diagonal") == pytest.approx(np.hypot(10, 30))


def test_point_errors_shape_mismatch():
    with pytest.raises(ValueError, match="shapes differ"):
        point_errors(np.zeros((5, 2)), np.zeros((68, 2)))


def test_ced_auc_fr_hand_computed():
    e = np.array([0.02, 0.04, 0.06, 0.2])
    assert list(ced(e, [0.0, 0.04, 0.05, 0.1])) == [0.0, 0.5, 0.5, 0.75]
    # exact AUC@0.1: mean(max(0, 0.1 - e)) / 0.1 = (0.08 + 0.06 + 0.04 + 0) / 4 / 0.1
    assert auc(e, 0.1) == pytest.approx(0.45)
    assert failure_rate(e, 0.1) == pytest.approx(0.25)
    assert failure_rate(e, 0.05) == pytest.approx(0.5)
    # the exact AUC agrees with a fine numerical integral of the CED
    x = np.linspace(0, 0.1, 100001)
    assert auc(e, 0.1) == pytest.approx(np.trapezoid(ced(e, x), x) / 0.1, abs=1e-4)


def test_error_stats_and_table():
    s = error_stats("m", [0.01, 0.03, 0.05, 0.2, 0.02])
    assert s.n == 5 and s.median == pytest.approx(0.03)
    assert s.fr[0.08] == pytest.approx(0.2)
    table = stats_table([s], normaliser_name="x")
    assert (
        "AUC@0.08%" in table
        and "FR@0.1%" in table
        and table.splitlines()[-1].startswith("m")
    )
    assert "n=5" in str(s)


def test_plot_ced_writes_png(tmp_path):
    p = plot_ced({"a": [0.01, 0.05], "b": [0.02, 0.2]}, tmp_path / "ced.png")
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_paired_difference_is_the_mean_difference_with_an_interval_around_it():
    rng = np.random.default_rng(1)
    a = rng.uniform(0.02, 0.08, 200)
    better = a - 0.01 + rng.normal(0, 0.002, 200)
    mean, lo, hi = paired_difference(a, better)
    assert mean == pytest.approx(np.mean(better - a))
    assert lo < mean < hi < 0  # clearly better: the whole interval is below 0
    same = a + rng.normal(0, 0.002, 200)
    _, lo, hi = paired_difference(a, same)
    assert lo < 0 < hi  # no difference: the interval straddles 0
    assert paired_difference(a, same) == paired_difference(a, same)  # seeded


def test_paired_difference_resamples_people_not_frames():
    # 10 people x 20 frames; each person's frames share one offset: the frames are
    # not independent, and the interval over people must be wider than over frames
    rng = np.random.default_rng(2)
    people = np.repeat(np.arange(10), 20)
    a = rng.uniform(0.02, 0.08, 200)
    b = a + rng.normal(0, 0.01, 10)[people]
    _, lo_f, hi_f = paired_difference(a, b)
    _, lo_p, hi_p = paired_difference(a, b, groups=people)
    assert hi_p - lo_p > 2 * (hi_f - lo_f)


def test_paired_difference_refuses_mismatched_or_nan_errors():
    with pytest.raises(ValueError, match="one length"):
        paired_difference([0.1, 0.2], [0.1])
    with pytest.raises(ValueError, match="NaN"):
        paired_difference([0.1, np.nan], [0.1, 0.2])
    with pytest.raises(ValueError, match="groups"):
        paired_difference([0.1, 0.2], [0.1, 0.2], groups=[0])
    with pytest.raises(ValueError, match="no images"):
        paired_difference([], [])


def test_region_nme_scores_each_part_of_the_markup():
    from menpo_densereg.evaluation.metrics import region_nme

    rng = np.random.default_rng(0)
    gt = rng.uniform(0, 100, (68, 2))
    gt[36], gt[45] = (50.0, 20.0), (50.0, 80.0)  # outer eye corners 60 px apart
    pred = gt.copy()
    pred[48:68] += (3.0, 4.0)  # the mouth off by 5 px
    pred[42:48, 0] += 6.0  # the right eye off by 6 px
    parts = region_nme(PointCloud(pred), PointCloud(gt))
    assert set(parts) == {"jaw", "eyebrow", "nose", "eye", "mouth"}
    np.testing.assert_allclose(parts["mouth"], 5 / 60)
    # left and right pooled: half of the eye points are off by 6 px
    np.testing.assert_allclose(parts["eye"], 3 / 60)
    assert parts["jaw"] == parts["nose"] == parts["eyebrow"] == 0.0
    sides = region_nme(pred, gt, merge_sides=False)
    np.testing.assert_allclose([sides["left_eye"], sides["right_eye"]], [0, 6 / 60])
    # the parts' point-weighted mean is the NME
    n = {"jaw": 17, "eyebrow": 10, "nose": 9, "eye": 12, "mouth": 20}
    total = sum(parts[k] * n[k] for k in n) / 68
    np.testing.assert_allclose(total, nme(pred, gt))
    with pytest.raises(ValueError, match="no parts known"):
        region_nme(np.zeros((7, 2)), np.ones((7, 2)))
