"""Face boxes: from landmarks, and from a detector with a landmark-box fallback.

The benchmark protocol (DESIGN §4) initialises every fitter from the same boxes: the
tight ground-truth box, and a detector box (dlib HOG through menpodetect) that falls
back to the ground-truth box when no detection overlaps the annotated face.
"""

import numpy as np
from menpo.shape import PointCloud, bounding_box

__all__ = [
    "box_from_landmarks",
    "box_iou",
    "detect_faces",
    "detector_box",
    "box_corners",
    "calibrate_detector_box",
    "DLIB_TO_LANDMARK_BOX",
]


def box_corners(box):
    """``(top, left), (bottom, right)`` of a box (any PointCloud of its corners)."""
    pts = box.points if isinstance(box, PointCloud) else np.asarray(box, dtype=float)
    return pts.min(axis=0), pts.max(axis=0)


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


def box_iou(a, b):
    """Intersection over union of two axis-aligned boxes."""
    (a0, a1), (b0, b1) = box_corners(a), box_corners(b)
    inter = np.clip(np.minimum(a1, b1) - np.maximum(a0, b0), 0, None).prod()
    union = (a1 - a0).prod() + (b1 - b0).prod() - inter
    return float(inter / union) if union > 0 else 0.0


_DETECTOR = None


def _dlib_detector():
    global _DETECTOR
    if _DETECTOR is None:
        try:
            from menpodetect import load_dlib_frontal_face_detector
        except ImportError as e:  # pragma: no cover - dlib is in the 'peers' extra
            raise ImportError(
                "face detection needs dlib: pip install 'menpo-densereg[peers]'"
            ) from e
        _DETECTOR = load_dlib_frontal_face_detector()
    return _DETECTOR


def detect_faces(image, upsample=1):
    """Face boxes found by dlib's HOG detector (largest first).

    Parameters
    ----------
    image : `menpo.image.Image`
    upsample : `int`
        Number of times dlib upsamples the image (finds smaller faces, slower).

    Returns
    -------
    boxes : `list` of `PointDirectedGraph`
    """
    detector = _dlib_detector()
    img = image.copy()
    img.landmarks.clear()
    boxes = detector(img, n_upscales=upsample, group_prefix="dlib")
    return sorted(boxes, key=lambda b: -np.prod(b.range()))


def detector_box(image, gt_shape, min_iou=0.3, upsample=1):
    """The detection that best overlaps the annotated face, else the GT box.

    Returns
    -------
    box : `PointDirectedGraph`
    source : ``"detector"`` or ``"gt"``
    """
    gt_box = box_from_landmarks(gt_shape)
    best, best_iou = None, 0.0
    for b in detect_faces(image, upsample=upsample):
        iou = box_iou(b, gt_box)
        if iou > best_iou:
            best, best_iou = b, iou
    if best is None or best_iou < min_iou:
        return gt_box, "gt"
    return best, "detector"


#: dlib HOG box -> tight landmark box: centre shift (fraction of the dlib box side,
#: y then x) and side ratio, measured on the 14 training faces of densereg-face that
#: dlib detects (afw, 300wlp, video68, wflw98): mean shift (0.096, 0.043), ratio
#: (0.906, 0.940); the networks are trained on jittered landmark boxes.
DLIB_TO_LANDMARK_BOX = ((0.096, 0.0), (0.906, 0.94))


def calibrate_detector_box(box):
    """Map a dlib HOG face box to the landmark-box convention the networks expect."""
    lo, hi = box.points.min(0), box.points.max(0)
    side = hi - lo
    centre = (lo + hi) / 2 + side * DLIB_TO_LANDMARK_BOX[0]
    half = side * DLIB_TO_LANDMARK_BOX[1] / 2
    return bounding_box(centre - half, centre + half)
