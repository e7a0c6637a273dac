"""Tracking metrics: jitter, summaries, scoring against ground truth, the baseline."""

import numpy as np
import pytest
from menpo.shape import PointCloud, bounding_box
from menpofit.result import Result

from menpo_densereg.fitting.composition import mean_face_68
from menpo_densereg.tracking import (
    FrameRecord,
    TrackingResult,
    fit_each_frame,
    jitter,
    score_against,
    summarise,
)
from menpo_densereg.tracking.evaluate import synthetic_clip


def _iod(p):
    return np.linalg.norm(p[36] - p[45])


def test_jitter_of_still_and_constant_speed_shapes():
    m = mean_face_68().points
    still = [PointCloud(m) for _ in range(5)]
    assert jitter(still) == {"jitter": 0.0, "shake": 0.0, "pairs": 4}
    moving = [PointCloud(m + [0.0, 2.0 * t]) for t in range(6)]
    j = jitter(moving)
    assert j["jitter"] == pytest.approx(2.0 / _iod(m))
    assert j["shake"] == pytest.approx(0.0, abs=1e-12)
    # a lost frame breaks the pairs around it
    gap = moving[:2] + [None] + moving[3:]
    assert jitter(gap)["pairs"] == 3
    assert np.isnan(jitter([None, None])["jitter"])


def test_summary_and_scores_count_lost_frames():
    m = mean_face_68().points
    recs = [
        FrameRecord(
            0, "detected", shape=PointCloud(m), result=Result(PointCloud(m)), ms=10
        ),
        FrameRecord(
            1,
            "tracked",
            shape=PointCloud(m + 1),
            result=Result(PointCloud(m + 1)),
            ms=10,
        ),
        FrameRecord(2, "lost", ms=20),
    ]
    res = TrackingResult(recs, fitter_name="x")
    s = summarise(res)
    assert (s["frames"], s["lost"], s["detected"], s["tracked"]) == (3, 1, 1, 1)
    assert s["fps"] == pytest.approx(3 / 0.04)
    assert s["jitter"] == pytest.approx(np.sqrt(2) / _iod(m))
    errors = score_against(res, [PointCloud(m)] * 3)
    assert errors[0] == 0.0 and errors[1] == pytest.approx(np.sqrt(2) / _iod(m))
    assert errors[2] == np.inf
    with pytest.raises(ValueError, match="3 frames, ground truth 2"):
        score_against(res, [PointCloud(m)] * 2)


def test_fit_each_frame_uses_shared_boxes():
    frames, truth = synthetic_clip(n_frames=4)

    class Fitter:
        name = "truth"

        def fit_from_bb(self, image, box, gt_shape=None):
            return Result(truth[image.frame])

    seen = []

    def detector(image):
        seen.append(image.frame)
        if image.frame == 2:
            return []
        p = truth[image.frame].points
        return [bounding_box(p.min(0), p.max(0))]

    boxes = {}
    res = fit_each_frame(Fitter(), frames, detector=detector, boxes=boxes)
    assert res.states == ["detected", "detected", "lost", "detected"]
    assert boxes[2] is None and set(boxes["_ms"]) == {0, 1, 2, 3}
    again = fit_each_frame(Fitter(), frames, detector=detector, boxes=boxes)
    assert seen == [0, 1, 2, 3]  # the second run reused the boxes
    assert again.states == res.states


def test_synthetic_clip_truth_follows_the_motion():
    frames, truth = synthetic_clip(n_frames=3, size=96, shift=(4.0, 0.0), angle=0.0)
    assert frames[0].shape == (96, 96) and frames[0].landmarks.n_groups == 0
    d = truth[1].points - truth[0].points
    np.testing.assert_allclose(d, np.tile([4.0, 0.0], (68, 1)), atol=1e-9)
