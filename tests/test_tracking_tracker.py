"""The tracker on synthetic clips whose truth is known, its rules and its confidence."""

import numpy as np
import pytest
from menpo.shape import PointCloud, bounding_box
from menpofit.result import Result

from menpo_densereg.evaluation.metrics import nme
from menpo_densereg.fitting.composition import mean_face_68
from menpo_densereg.tracking import (
    OneEuroFilter,
    Tracker,
    VideoError,
    shape_residual,
)
from menpo_densereg.tracking.evaluate import synthetic_clip


@pytest.fixture(scope="module")
def densereg():
    from menpo_densereg.fitting.registry import load_fitter

    return load_fitter("densereg-face")


@pytest.fixture(scope="module")
def clip():
    return synthetic_clip(n_frames=10)


def _hog():
    pytest.importorskip("dlib")
    return "hog"


def test_tracker_follows_a_moving_rotating_face(densereg, clip):
    frames, truth = clip
    res = Tracker(densereg, detector=_hog(), smoothing=False).track(frames)
    assert len(res) == len(frames)
    assert res.states == ["detected"] + ["tracked"] * (len(frames) - 1)
    errors = [nme(r.shape, g) for r, g in zip(res, truth)]
    # the face moves 2.5 px and turns up to 5.7 degrees a frame; DenseReg on a
    # 50-px face from its detection is within ~9 % of the eye distance
    assert max(errors) < 0.15, errors
    assert np.all(res.confidences > 0.3)
    # raw results are menpofit results in the frame of each image
    assert isinstance(res[3].result, Result)
    np.testing.assert_allclose(res.raw_shapes[3].points, res[3].shape.points)
    # no frame copies are kept (a long video would fill the memory) unless asked for
    assert res[3].result.image is None
    kept = Tracker(densereg, detector="hog", keep_images=True).track(frames[:2])
    assert kept[1].result.image.shape == frames[1].shape


def test_redetection_when_the_face_jumps(densereg):
    frames, truth = synthetic_clip(n_frames=9, jump_at=5)
    res = Tracker(densereg, detector=_hog()).track(frames)
    assert res.states[:5] == ["detected"] + ["tracked"] * 4
    assert res[5].state == "redetected"
    assert res[5].reason  # says why (low confidence or implausible shape)
    assert res.states[6:] == ["tracked"] * 3
    assert nme(res.raw_shapes[5], truth[5]) < 0.15


def test_lost_without_a_face_then_detected_again(densereg, clip):
    from menpo.image import Image

    frames, truth = clip
    blank = Image(np.full((1,) + frames[0].shape, 0.5, dtype=np.float32))
    blank = Image(np.repeat(blank.pixels, 3, axis=0))
    seq = frames[:3] + [blank, blank] + frames[3:5]
    res = Tracker(densereg, detector=_hog()).track(seq)
    assert res.states[:3] == ["detected", "tracked", "tracked"]
    assert res.states[3:5] == ["lost", "lost"]
    assert res[3].shape is None and np.isnan(res[3].confidence)
    assert "no face detected" in res[3].reason
    assert res[5].state == "detected" and res[5].reason.startswith("after loss")
    assert nme(res[5].shape, truth[3]) < 0.15


def test_video_error_keeps_the_frames_tracked(densereg, clip):
    frames, _ = clip

    def broken():
        yield from frames[:3]
        raise VideoError("clip.mp4", "corrupt video data", 3)

    tracker = Tracker(densereg, detector=_hog())
    with pytest.raises(VideoError, match="clip.mp4") as e:
        tracker.track(broken())
    assert len(e.value.result) == 3
    kept = tracker.track(broken(), on_error="keep")
    assert len(kept) == 3 and "corrupt" in kept.error
    assert "stopped early" in str(kept)


class _Truth:
    """A fitter without confidence that returns the true shape of each frame."""

    name = "truth"

    def __init__(self, truth):
        self.truth = truth
        self.calls = []

    def fit_from_bb(self, image, bounding_box, gt_shape=None):
        self.calls.append(("bb", image.frame))
        return Result(self.truth[image.frame], image=None)


def test_any_fitter_with_fit_from_bb_and_a_custom_detector(clip):
    frames, truth = clip
    fitter = _Truth(truth)
    boxes = []

    def detector(image):
        boxes.append(image.frame)
        p = truth[image.frame].points
        return [bounding_box(p.min(0), p.max(0))]

    res = Tracker(fitter, detector=detector, smoothing=False).track(frames)
    assert boxes == [0]  # detected once, then tracked
    assert res.count("tracked") == len(frames) - 1
    assert set(res[1].terms) == {"shape", "motion"}  # no fit confidence to use
    for r, g in zip(res, truth):
        np.testing.assert_allclose(r.shape.points, g.points)


def test_smoothing_only_changes_the_reported_shapes(clip):
    frames, truth = clip
    rng = np.random.default_rng(0)
    noisy = [PointCloud(g.points + rng.normal(0, 1.0, g.points.shape)) for g in truth]

    def detector(image):
        p = truth[image.frame].points
        return [bounding_box(p.min(0), p.max(0))]

    res = Tracker(_Truth(noisy), detector=detector, smoothing=True, fps=25).track(
        frames
    )
    for r, g in zip(res, noisy):  # the raw fit is untouched
        np.testing.assert_allclose(r.result.final_shape.points, g.points)
    assert not np.allclose(res[5].shape.points, noisy[5].points)


def test_one_euro_filter_reduces_noise_and_follows_a_step():
    rng = np.random.default_rng(1)
    base = mean_face_68().points
    f = OneEuroFilter(min_cutoff=1.0, beta=0.0)
    out = [f(base + rng.normal(0, 1.0, base.shape), 1 / 30) for _ in range(60)]
    assert np.std(np.array(out[30:]) - base) < 0.5  # raw noise: 1.0
    f.reset()
    np.testing.assert_allclose(f(base + 50, 1 / 30), base + 50)  # reset: no memory


def test_shape_residual_and_degenerate_shapes(densereg):
    mean = mean_face_68()
    theta = 0.3
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    moved = PointCloud(2.5 * mean.points @ rot.T + 40)
    assert shape_residual(moved, mean) == pytest.approx(0.0, abs=1e-9)
    rng = np.random.default_rng(0)
    assert shape_residual(rng.normal(size=(68, 2)), mean) > 0.8
    tracker = Tracker(densereg, detector=lambda im: [])

    class Img:
        shape = (200, 200)

    ok = PointCloud(mean.points + 100)
    assert tracker.degenerate(ok, Img) is None
    assert "non-finite" in tracker.degenerate(PointCloud(np.full((68, 2), np.nan)), Img)
    assert "px" in tracker.degenerate(PointCloud(mean.points * 0.05 + 100), Img)
    assert "outside" in tracker.degenerate(PointCloud(mean.points + 400), Img)
    flat = ok.points.copy()
    flat[:17] = flat[17:34]  # jaw on the brows/nose: not a face
    assert tracker.degenerate(PointCloud(flat), Img) == "implausible shape"


def test_bad_arguments(densereg):
    with pytest.raises(TypeError, match="fit_from_bb"):
        Tracker(object())
    with pytest.raises(ValueError, match="threshold"):
        Tracker(densereg, threshold=2)
    with pytest.raises(ValueError, match="init"):
        Tracker(densereg, init="nose")
    with pytest.raises(ValueError, match="on_error"):
        Tracker(densereg).track([], on_error="ignore")
    assert "re-detect below confidence 0.3" in str(Tracker(densereg))
