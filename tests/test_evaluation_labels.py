import numpy as np
import pytest
from menpo.image import Image
from menpo.shape import PointCloud

from menpo_densereg.evaluation.labels import (
    ROUNDING_DISTANCE,
    integer_fraction,
    near_duplicate_pairs,
    rounding_floor,
)
from menpo_densereg.evaluation.metrics import nme


def _shape68(eye_distance, seed=0):
    rng = np.random.default_rng(seed)
    pts = rng.uniform(20, 80, size=(68, 2))
    pts[36] = (50.0, 40.0)
    pts[45] = (50.0, 40.0 + eye_distance)
    return pts


def test_rounding_distance_is_the_mean_distance_to_the_cell_centre():
    u = np.random.default_rng(0).uniform(-0.5, 0.5, size=(400_000, 2))
    assert ROUNDING_DISTANCE == pytest.approx(
        np.linalg.norm(u, axis=1).mean(), abs=2e-3
    )
    assert ROUNDING_DISTANCE == pytest.approx(0.3826, abs=1e-4)


def test_rounding_floor_scales_with_step_and_face_size():
    f = rounding_floor([_shape68(50.0), PointCloud(_shape68(25.0))])
    np.testing.assert_allclose(f, [ROUNDING_DISTANCE / 50, ROUNDING_DISTANCE / 25])
    np.testing.assert_allclose(rounding_floor([_shape68(50.0)], step=2.0), 2 * f[:1])
    with pytest.raises(ValueError, match="step"):
        rounding_floor([_shape68(50.0)], step=0)


def test_rounding_floor_is_what_exact_answers_score_against_rounded_labels():
    rng = np.random.default_rng(1)
    truths = [_shape68(30.0, seed=k) + rng.uniform(0, 1, (68, 2)) for k in range(300)]
    scores = [nme(t, np.round(t)) for t in truths]
    floor = rounding_floor([np.round(t) for t in truths])
    assert np.mean(scores) == pytest.approx(np.mean(floor), rel=0.03)


def test_integer_fraction_counts_whole_coordinates():
    assert integer_fraction([np.round(_shape68(30.0))]) == 1.0
    half = np.round(_shape68(30.0))
    half[:, 1] += 0.5
    assert integer_fraction([PointCloud(half)]) == 0.5
    with pytest.raises(ValueError, match="shapes"):
        integer_fraction([])


def _image(seed, shape=(3, 20, 24), shift=0.0):
    px = np.random.default_rng(seed).uniform(0, 1, size=shape)
    return Image(np.clip(px + shift, 0, 1))


def test_near_duplicate_pairs_pairs_only_close_pictures_of_one_group():
    a = _image(0)
    images = [
        a,
        Image(a.pixels.copy()),  # the same picture, same clip
        Image(np.clip(a.pixels + 0.004, 0, 1)),  # nearly the same, same clip
        _image(1),  # another picture, same clip
        Image(a.pixels.copy()),  # the same picture, another clip
        _image(0, shape=(3, 20, 20)),  # another size, same clip
    ]
    groups = ["c1", "c1", "c1", "c1", "c2", "c1"]
    pairs = near_duplicate_pairs(images, groups, max_difference=0.01)
    assert [(i, j) for i, j, _ in pairs] == [(0, 1), (0, 2), (1, 2)]
    assert pairs[0][2] == 0.0
    assert 0 < pairs[1][2] <= 0.004 + 1e-9
    assert near_duplicate_pairs(images, groups, max_difference=0.0) == [(0, 1, 0.0)]


def test_near_duplicate_pairs_rejects_bad_arguments():
    with pytest.raises(ValueError, match="groups"):
        near_duplicate_pairs([_image(0)], ["a", "b"])
    with pytest.raises(ValueError, match="max_difference"):
        near_duplicate_pairs([_image(0)], ["a"], max_difference=-1)
