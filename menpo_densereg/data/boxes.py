"""Face boxes: from landmarks, and from a detector with a landmark-box fallback.

The benchmark protocol (DESIGN §4) initialises every fitter from the same boxes: the
tight ground-truth box, and a detector box (by default the detector cascade of
:mod:`menpo_densereg.data.detectors`, calibrated to the landmark-box convention) that
falls back to the ground-truth box when no detection overlaps the annotated face.
"""

import numpy as np
from menpo.shape import PointCloud, bounding_box

from menpo_densereg.data.detectors import (
    DEFAULT_DETECTOR,
    box_corners,
    box_iou,
    calibrate_box,
    detect,
    get_detector,
    load_calibrations,
)

__all__ = [
    "box_from_landmarks",
    "box_iou",
    "detect_faces",
    "detector_box",
    "box_corners",
    "calibrate_detector_box",
    "DLIB_TO_LANDMARK_BOX",
]


def box_from_landmarks(shape):
    """The tight bounding box of a shape, ignoring NaN (unlabelled) points.

    Raises
    ------
    ValueError
        No finite point, or a degenerate (zero-area) box.
    """
    pts = shape.points if isinstance(shape, PointCloud) else np.asarray(shape, float)
    pts = pts[np.all(np.isfinite(pts), axis=1)]
    if len(pts) == 0:
        raise ValueError("shape: no finite landmark to make a box from")
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    if np.any(hi - lo <= 0):
        raise ValueError("shape: landmarks are degenerate (zero-area box)")
    return bounding_box(lo, hi)


def detect_faces(image, upsample=None, detector="hog", calibrate=False):
    """Face boxes found by a detector of :mod:`menpo_densereg.data.detectors`, largest first.

    Parameters
    ----------
    image : `menpo.image.Image`
    upsample : `int`, optional
        Kept for compatibility: ``0`` never upsamples a small image, ``1`` and more
        upsample images under 400 px once (the detectors' default).
    detector : `str` or `FaceDetector`
        A name of `DETECTOR_NAMES` (``"hog"``: dlib's HOG, as before).
    calibrate : `bool`
        Map each box to the tight landmark-box convention (:func:`calibrate_box`).

    Returns
    -------
    boxes : `list` of `PointDirectedGraph`
        Empty when no face is found.
    """
    det = get_detector(detector)
    if upsample == 0:
        det = det.never_upsampling()
    return [box for box, _ in detect(image, det, calibrate=calibrate)]


def detector_box(image, gt_shape, min_iou=0.3, upsample=None, detector=None):
    """The calibrated detection that best overlaps the annotated face, else the GT box.

    Parameters
    ----------
    image : `menpo.image.Image`
    gt_shape : `PointCloud`
        The annotated landmarks (their tight box is the reference and the fallback).
    min_iou : `float`
        A detection overlapping the GT box less than this does not count.
    upsample : ignored
        Kept for compatibility (the detectors choose their own scale).
    detector : `str`, optional
        A name of `DETECTOR_NAMES`; default `DEFAULT_DETECTOR` (the cascade).

    Returns
    -------
    box : `PointDirectedGraph`
        Calibrated to the tight landmark box (:func:`calibrate_box`).
    source : `str`
        The name of the detector that found it (``"hog"``, ``"mmod"``, ``"haar"``,
        ``"haar-profile"``...), or ``"gt"`` for the fallback.
    """
    gt_box = box_from_landmarks(gt_shape)
    best, best_iou, source = None, 0.0, "gt"
    for box, d in detect(image, detector or DEFAULT_DETECTOR, calibrate=True):
        iou = box_iou(box, gt_box)
        if iou > best_iou:
            best, best_iou, source = box, iou, d.detector
    if best is None or best_iou < min_iou:
        return gt_box, "gt"
    return best, source


def _hog_calibration():
    cal = load_calibrations().get("hog")
    return (cal.offset, cal.scale) if cal else ((0.096, 0.0), (0.906, 0.94))


#: dlib HOG box -> tight landmark box: centre shift (fraction of the box side, y then
#: x) and side ratio, as stored in ``detector_calibration.json`` (kept for
#: compatibility; :func:`calibrate_box` is the one place boxes are calibrated).
DLIB_TO_LANDMARK_BOX = _hog_calibration()


def calibrate_detector_box(box, detector="hog"):
    """Map a detector's face box to the landmark-box convention the networks expect.

    Same as :func:`menpo_densereg.data.detectors.calibrate_box` (kept for
    compatibility; the default is dlib's HOG detector).
    """
    return calibrate_box(box, detector)
