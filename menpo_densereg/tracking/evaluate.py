"""Measuring tracking: with ground truth (300VW layout) and without (jitter, losses, speed).

- :func:`fit_each_frame`: the baseline, the same fitter run frame by frame from a fresh
  detection (no temporal information), as a :class:`~.tracker.TrackingResult`.
- :func:`jitter`: frame-to-frame landmark motion normalised by the eye distance (the
  outer eye corners for 68 points, the markup's normaliser otherwise), averaged over
  consecutive frames that both have a shape; also the second difference
  (``p[t+1] - 2 p[t] + p[t-1]``), which a face moving at constant speed does not
  raise, so it isolates shake from motion.
- :func:`summarise`: frames, losses, (re)detections, jitter and frames/s of a result.
- :func:`score_against` / :func:`evaluate_300vw`: NME of every frame against 300VW
  annotations (a lost frame counts as a failure: error = inf), per video and overall,
  with CED / AUC / FR at 0.08 and 0.10 (:mod:`menpo_densereg.evaluation.metrics`).
"""

import time

import numpy as np

from menpo_densereg.evaluation.metrics import THRESHOLDS, error_stats, nme, normaliser
from menpo_densereg.tracking.tracker import (
    FrameRecord,
    TrackingResult,
    default_detector,
    drop_images,
)

__all__ = [
    "fit_each_frame",
    "jitter",
    "summarise",
    "score_against",
    "evaluate_300vw",
    "synthetic_clip",
]


def fit_each_frame(fitter, frames, detector=None, boxes=None, progress=False):
    """Fit every frame from its own detection (the frame-by-frame baseline).

    Parameters
    ----------
    fitter : fitter with ``fit_from_bb``
    frames : iterable of `menpo.image.Image`
    detector : callable ``image -> boxes``, optional
        Default :func:`~.tracker.default_detector`; the largest box is used.
    boxes : `dict` ``{frame index: box or None}``, optional
        Detections computed before (e.g. shared by several fitters); a frame missing
        from it is detected and added, with the detection time in ``boxes["_ms"]``.

    Returns
    -------
    result : :class:`~.tracker.TrackingResult`
        States ``"detected"`` or ``"lost"`` (no face); ``ms`` includes detection.
    """
    detector = detector or default_detector
    boxes = {} if boxes is None else boxes
    det_ms = boxes.setdefault("_ms", {})
    out = TrackingResult(fitter_name=getattr(fitter, "name", type(fitter).__name__))
    it = frames
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(frames, desc=f"{out.fitter_name} frame by frame", unit="frame")
    for i, image in enumerate(it):
        index = getattr(image, "frame", i)
        if index not in boxes:
            t = time.perf_counter()
            found = list(detector(image) or [])
            boxes[index] = found[0] if found else None
            det_ms[index] = 1000 * (time.perf_counter() - t)
        t0 = time.perf_counter()
        box = boxes[index]
        if box is None:
            rec = FrameRecord(index, "lost", "no face detected")
        else:
            res = drop_images(fitter.fit_from_bb(image, box))
            rec = FrameRecord(
                index, "detected", "", result=res, shape=res.final_shape, box=box
            )
        rec.ms = 1000 * (time.perf_counter() - t0) + det_ms.get(index, 0.0)
        out.append(rec)
    return out


def jitter(shapes):
    """Frame-to-frame motion of the landmarks, normalised by the eye distance.

    Parameters
    ----------
    shapes : sequence of `PointCloud` or `None`
        One per frame (`None`: no shape, e.g. lost).

    Returns
    -------
    stats : `dict`
        ``jitter``: mean over consecutive pairs of the mean landmark displacement /
        eye distance; ``shake``: the same for the second difference over consecutive
        triples; ``pairs``: pairs used. NaN when there are none.
    """
    pts = [None if s is None else np.asarray(s.points, float) for s in shapes]
    d1, d2 = [], []
    for t in range(1, len(pts)):
        a, b = pts[t - 1], pts[t]
        if a is None or b is None or a.shape != b.shape:
            continue
        # the shape's own normaliser: outer eye corners for 68 points, else the
        # markup's (the mean side of the box for unknown markups)
        iod = normaliser(b)
        if not iod > 0:
            continue
        d1.append(np.mean(np.linalg.norm(b - a, axis=1)) / iod)
        if t >= 2 and pts[t - 2] is not None and pts[t - 2].shape == b.shape:
            acc = b - 2 * a + pts[t - 2]
            d2.append(np.mean(np.linalg.norm(acc, axis=1)) / iod)
    return {
        "jitter": float(np.mean(d1)) if d1 else float("nan"),
        "shake": float(np.mean(d2)) if d2 else float("nan"),
        "pairs": len(d1),
    }


def summarise(result, raw=False):
    """What can be measured without ground truth.

    Parameters
    ----------
    result : :class:`~.tracker.TrackingResult`
    raw : `bool`
        Measure the fitter's unsmoothed shapes instead of the reported ones.

    Returns
    -------
    summary : `dict`
        ``frames``, ``lost``, ``detected``, ``redetected``, ``tracked``, ``jitter``,
        ``shake``, ``fps`` (frames per second of the tracker's own time),
        ``ms_median``.
    """
    shapes = result.raw_shapes if raw else result.shapes
    out = {"fitter": result.fitter_name, "frames": len(result)}
    for s in ("lost", "detected", "redetected", "tracked"):
        out[s] = result.count(s)
    j = jitter(shapes)
    out["jitter"], out["shake"] = j["jitter"], j["shake"]
    out["fps"] = result.frames_per_second
    out["ms_median"] = float(np.median([r.ms for r in result])) if len(result) else 0.0
    return out


def score_against(result, gt_shapes, markup=None):
    """NME of each frame against its ground truth (lost frames: inf).

    Parameters
    ----------
    result : :class:`~.tracker.TrackingResult` (or a sequence of shapes / `None`)
    gt_shapes : sequence of `PointCloud`
        One per frame, same order.

    Returns
    -------
    errors : ``(n,)`` `ndarray`
    """
    shapes = result.shapes if isinstance(result, TrackingResult) else list(result)
    if len(shapes) != len(gt_shapes):
        raise ValueError(
            f"result has {len(shapes)} frames, ground truth {len(gt_shapes)}"
        )
    return np.array(
        [
            np.inf if s is None else nme(s, g, markup=markup)
            for s, g in zip(shapes, gt_shapes)
        ]
    )


def evaluate_300vw(tracker, root, clips=None, thresholds=THRESHOLDS, progress=False):
    """Track every clip of a 300VW-layout folder and score it against its annotations.

    Parameters
    ----------
    tracker : :class:`~.tracker.Tracker`
    root : `str` or `Path`
        ``root/<clip>/annot/*.pts`` with frames in ``imgs/`` (or side by side);
        read with :func:`menpo_densereg.data.readers.read_300vw`.
    clips : sequence of `str`, optional

    Returns
    -------
    report : `dict`
        ``per_video``: ``{clip: ErrorStats}``, ``overall``: `ErrorStats` of all
        frames, ``results``: ``{clip: TrackingResult}``, ``errors``:
        ``{clip: ndarray}``.
    """
    from menpo.shape import PointCloud

    from menpo_densereg.data.readers import read_300vw

    data = read_300vw(root, clips=clips, progress=progress)
    report = {"per_video": {}, "results": {}, "errors": {}}
    all_errors = []
    for clip, frames in data.items():
        gts = [
            PointCloud(f.landmarks[f.landmarks.group_labels[0]].points) for f in frames
        ]
        images = []
        for f in frames:
            im = f.copy()
            im.landmarks.clear()
            im.frame = f.frame if isinstance(f.frame, int) else len(images)
            images.append(im)
        res = tracker.track(images, progress=progress and clip)
        errors = score_against(res, gts)
        report["results"][clip] = res
        report["errors"][clip] = errors
        report["per_video"][clip] = error_stats(clip, errors, thresholds)
        all_errors.append(errors)
    report["overall"] = error_stats(
        "overall", np.concatenate(all_errors) if all_errors else [], thresholds
    )
    return report


def synthetic_clip(
    image=None,
    n_frames=12,
    size=128,
    scale=0.55,
    shift=(2.0, 1.5),
    angle=0.1,
    jump_at=None,
    jump=(-25.0, 35.0),
):
    """A face image moved and rotated frame by frame, with the true landmarks.

    Parameters
    ----------
    image : `menpo.image.Image`, optional
        A face with one landmark group; default menpo's takeo (68 points).
    n_frames, size : `int`
        Frames of ``size`` x ``size`` pixels.
    scale : `float`
        Scale of the face in the frame.
    shift : ``(dy, dx)``
        Motion per frame (pixels), starting from the centre (x starts 8 px left).
    angle : `float`
        Amplitude (radians) of the in-plane rotation ``angle * sin(t / 3)``.
    jump_at : `int`, optional
        From this frame on, the face is displaced by ``jump`` pixels.

    Returns
    -------
    frames : `list` of `menpo.image.Image`
        Without landmarks; ``frame`` set to the index.
    truth : `list` of `PointCloud`
    """
    from menpo.transform import Rotation, Translation, UniformScale

    if image is None:
        import menpo.io as mio

        image = mio.import_builtin_asset.takeo_ppm()
    lm = image.landmarks[image.landmarks.group_labels[0]]
    centre = lm.centre()
    frames, truth = [], []
    for i in range(n_frames):
        dy, dx = shift[0] * i, shift[1] * i - 8.0
        if jump_at is not None and i >= jump_at:
            dy, dx = dy + jump[0], dx + jump[1]
        t = (
            Translation(-centre)
            .compose_before(
                Rotation.init_from_2d_ccw_angle(np.degrees(angle * np.sin(i / 3.0)))
            )
            .compose_before(UniformScale(scale, 2))
            .compose_before(Translation([size / 2.0 + dy, size / 2.0 + dx]))
        )
        frame = image.warp_to_shape(
            (size, size), t.pseudoinverse(), warp_landmarks=False
        )
        frame.landmarks.clear()
        frame.frame = i
        frames.append(frame)
        truth.append(t.apply(lm))
    return frames, truth
