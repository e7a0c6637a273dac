"""Face detectors behind one interface, and the one detector-box calibration.

A detector is a callable ``image -> list of Detection``: ``image`` is any
`menpo.image.Image` (grey, RGB, RGBA, 8/16-bit integers or floats), each `Detection`
holds a menpo box (a ``bounding_box`` PointDirectedGraph in ``(y, x)`` image pixels), a
score and the name of the detector that found it; the list is sorted by score (best
first; the cascade's by stage, then score). Boxes are not clipped to the image. An image
without a face gives ``[]``; detectors never raise for "no face".

Detectors, one name each (:func:`get_detector`):

``hog``
    dlib's HOG + linear SVM frontal detector: fast; its window is 80 px, so every image
    is upsampled 2x (faces down to ~40 px) within a working image of at most
    `HOG_MAX_PIXELS` (2 MP, a bound on its cost).
``mmod``
    dlib's CNN (max-margin object detection) face detector, whose weights ship in
    ``face_recognition_models``; more robust to pose and blur, and ~30x slower on a CPU,
    so it runs on a working image of `MMOD_MAX_PIXELS` (400 x 300: larger images are
    shrunk, and their small faces lost; smaller ones upsampled, at most 2x).
``haar``
    OpenCV's Viola-Jones cascades shipped in ``opencv-python-headless``: the frontal
    cascade plus the profile cascade on the image and on its mirror (profiles facing
    either way), merged by non-maximum suppression.
``profile``
    a dlib HOG + linear SVM detector of faces turned 40-90 degrees, trained here on
    data-engine re-renders of training people (``scripts/train_profile_detector.py``;
    the model, dlib's own binary format, ships as ``profile_detector.svm`` beside this
    module); it runs on the image and on its mirror (``profile-mirrored``).
``cascade``
    ``hog``, then ``mmod`` where ``hog`` finds nothing or nothing with a score of at
    least 0.5, then ``profile`` where neither found anything, then ``haar``: fast
    where it can be, robust where the fast one fails. Last, HOG's weak candidates (scores -0.6 to 0,
    at least 50 px, overlapping none of its faces; at most 2 per image) are
    re-checked by MMOD on a crop around each (`CandidateCheck`, ``mmod-crop``), and
    those confirmed that overlap nothing found are added: a face HOG scores weakly
    while it confidently finds the other people of a photo is no longer lost. Each
    detection keeps the name of the member that found it (and so its calibration).

Every detector has its own box convention (dlib's boxes cut the forehead, Haar's are
loose squares). :func:`calibrate_box` maps a box of a named detector to the tight
landmark box the networks are trained on, with 4 numbers per detector fitted on
training people (``detector_calibration.json`` beside this module, made by
``scripts/fit_box_calibration.py``). ``fit``, ``benchmark``, the initialisers and
tracking all go through it (or :func:`detect`, which applies it).
"""

import copy
import importlib.util
import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from menpo.shape import PointCloud, bounding_box

__all__ = [
    "Detection",
    "FaceDetector",
    "DlibHOGDetector",
    "DlibMMODDetector",
    "DlibProfileDetector",
    "HaarDetector",
    "CascadeDetector",
    "DETECTOR_NAMES",
    "DEFAULT_DETECTOR",
    "get_detector",
    "detect",
    "image_to_uint8",
    "non_max_suppression",
    "box_corners",
    "box_iou",
    "box_params",
    "BoxCalibration",
    "fit_calibration",
    "load_calibrations",
    "calibrate_box",
    "uncalibrate_box",
    "CALIBRATION_FILE",
    "PROFILE_MODEL",
    "HOG_MAX_PIXELS",
    "MMOD_MAX_PIXELS",
    "scan_detections",
    "cascade_of",
    "CASCADE",
    "CASCADE_CHECK",
    "CandidateCheck",
]

#: The detector names :func:`get_detector` knows, fast first.
DETECTOR_NAMES = ("hog", "mmod", "haar", "profile", "cascade")
#: What ``fit`` and ``benchmark --boxes detector`` use unless told otherwise.
DEFAULT_DETECTOR = "cascade"
#: The calibrations, one per detector name (see :func:`calibrate_box`).
CALIBRATION_FILE = Path(__file__).with_name("detector_calibration.json")
#: The ``profile`` detector's model (dlib's fhog_object_detector file format).
PROFILE_MODEL = Path(__file__).with_name("profile_detector.svm")
#: Largest working image (pixels) of the ``hog`` detector: a bound on its cost.
HOG_MAX_PIXELS = 2_000_000
#: Largest working image (pixels) of the ``mmod`` detector (400 x 300).
MMOD_MAX_PIXELS = 120_000


# ======================================================================================
# the interface


@dataclass(frozen=True)
class Detection:
    """One face found by a detector.

    Attributes
    ----------
    box : `menpo.shape.PointDirectedGraph`
        The detector's own box, ``bounding_box((top, left), (bottom, right))``.
    score : `float`
        The detector's confidence (comparable only within one detector).
    detector : `str`
        The name of the detector that found it (the key of its calibration).
    """

    box: object
    score: float
    detector: str

    def calibrated(self):
        """The box mapped to the tight landmark-box convention (:func:`calibrate_box`)."""
        return calibrate_box(self.box, self.detector)

    def __str__(self):
        (t, l), (b, r) = self.box.points.min(0), self.box.points.max(0)
        return (
            f"{self.detector} face (score {self.score:.2f}): top {t:.0f}, left "
            f"{l:.0f}, bottom {b:.0f}, right {r:.0f}"
        )


def image_to_uint8(image, channels="rgb"):
    """The pixels of a menpo image as an 8-bit ``(H, W, 3)`` RGB or ``(H, W)`` array.

    Integers are scaled by the range of their type (16-bit: / 257), floats are taken
    as [0, 1] (or [0, 255] / [0, max] when their maximum says so), NaN becomes 0; one
    channel is grey, three RGB, four RGBA (alpha dropped), any other number is averaged.

    Raises
    ------
    TypeError
        ``image`` is not a `menpo.image.Image` (or has no ``pixels``).
    """
    px = getattr(image, "pixels", None)
    if px is None:
        raise TypeError(
            f"image: expected a menpo.image.Image, got {type(image).__name__}"
        )
    px = np.asarray(px)
    if px.ndim == 2:
        px = px[None]
    if px.ndim != 3:
        raise TypeError(f"image: expected a 2D image, got pixels of shape {px.shape}")
    if px.dtype == np.uint8:
        a = px
    elif px.dtype == bool:
        a = px.astype(np.uint8) * 255
    elif np.issubdtype(px.dtype, np.integer):
        top = float(np.iinfo(px.dtype).max)
        a = np.clip(np.rint(px.astype(np.float64) * (255.0 / top)), 0, 255)
        a = a.astype(np.uint8)
    else:
        f = np.nan_to_num(px.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        hi = float(f.max()) if f.size else 0.0
        if hi > 255.0:
            f = f * (255.0 / hi)
        elif hi > 1.0 + 1e-3:
            pass  # already 0..255
        else:
            f = f * 255.0
        a = np.clip(np.rint(f), 0, 255).astype(np.uint8)
    c = a.shape[0]
    if c in (3, 4):
        rgb = a[:3]
    elif c in (1, 2):
        rgb = np.repeat(a[:1], 3, axis=0)
    else:
        rgb = np.repeat(np.rint(a.mean(0, keepdims=True)).astype(np.uint8), 3, axis=0)
    if channels == "grey":
        if c in (1, 2):
            return np.ascontiguousarray(a[0])
        g = rgb.astype(np.float32)
        g = 0.299 * g[0] + 0.587 * g[1] + 0.114 * g[2]
        return np.ascontiguousarray(np.clip(np.rint(g), 0, 255).astype(np.uint8))
    if channels != "rgb":
        raise ValueError(f"channels: expected 'rgb' or 'grey', got {channels!r}")
    return np.ascontiguousarray(np.moveaxis(rgb, 0, -1))


def _resize(a, scale):
    """``a`` (uint8, HxW or HxWx3) resized by ``scale`` (Pillow, antialiased)."""
    if scale == 1.0:
        return a
    import PIL.Image

    h, w = a.shape[:2]
    size = (max(1, int(round(w * scale))), max(1, int(round(h * scale))))
    return np.asarray(PIL.Image.fromarray(a).resize(size, PIL.Image.BILINEAR))


def _box(top, left, bottom, right):
    return bounding_box((float(top), float(left)), (float(bottom), float(right)))


def non_max_suppression(boxes, scores, iou=0.3):
    """Indices of the boxes kept by greedy non-maximum suppression, best first.

    Parameters
    ----------
    boxes : ``(n, 4)`` array of ``top, left, bottom, right``
    scores : ``(n,)`` array
    iou : `float`
        A box overlapping a better one by more than this is dropped.
    """
    boxes = np.asarray(boxes, float).reshape(-1, 4)
    order = list(np.argsort(-np.asarray(scores, float), kind="stable"))
    area = np.prod(np.clip(boxes[:, 2:] - boxes[:, :2], 0, None), axis=1)
    keep = []
    while order:
        i = order.pop(0)
        keep.append(int(i))
        if not order:
            break
        rest = np.array(order)
        lo = np.maximum(boxes[i, :2], boxes[rest, :2])
        hi = np.minimum(boxes[i, 2:], boxes[rest, 2:])
        inter = np.prod(np.clip(hi - lo, 0, None), axis=1)
        union = area[i] + area[rest] - inter
        ov = np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)
        order = [j for j, o in zip(order, ov) if o <= iou]
    return keep


class FaceDetector:
    """Base class: subclasses implement :meth:`_detect` on an 8-bit array.

    Parameters
    ----------
    max_side : `int` or `None`
        Images whose long side is larger are shrunk to it before detection (speed;
        faces much smaller than the detector's window are then missed).
    small_side : `float`
        Images whose long side is smaller are upsampled 2x (small faces); ``inf``
        upsamples every image (then bounded by ``max_side`` and ``max_pixels``), ``0``
        none.
    max_pixels : `int` or `None`
        The working image has at most this many pixels (a bound on the cost, which
        grows with the area): larger ones are shrunk to it, upsampling stops at it.
    """

    name = "detector"
    channels = "rgb"

    def __init__(self, max_side=None, small_side=400, max_pixels=None):
        self.max_side = max_side
        self.small_side = small_side
        self.max_pixels = max_pixels

    def _scale(self, h, w):
        """The factor from the image to the detector's working image."""
        long = max(h, w)
        s = 2.0 if long < self.small_side else 1.0
        if self.max_side is not None and long * s > self.max_side:
            s = self.max_side / long
        if self.max_pixels is not None and h * w * s * s > self.max_pixels:
            s = float(np.sqrt(self.max_pixels / float(h * w)))
        return s

    def __call__(self, image):
        """Faces in ``image``, best score first (``[]`` when there is none)."""
        return self._find(image)

    def _find(self, image, **kwargs):
        """:meth:`_detect` (given ``kwargs``) on the working image, in image pixels."""
        a = image_to_uint8(image, self.channels)
        h, w = a.shape[:2]
        if min(h, w) < 16:
            return []
        s = self._scale(h, w)
        # (top, left, bottom, right, score[, name]) rows
        found = self._detect(_resize(a, s), **kwargs)
        out = []
        for t, l, b, r, score, *name in found:
            # not clipped to the image: the calibration maps the detector's whole box
            t, l, b, r = t / s, l / s, b / s, r / s
            if b - t < 2 or r - l < 2:
                continue
            out.append(
                Detection(
                    _box(t, l, b, r), float(score), name[0] if name else self.name
                )
            )
        return sorted(out, key=lambda d: -d.score)

    def never_upsampling(self):
        """This detector with ``small_side = 0`` (small images are not upsampled).

        The copy is made once and kept, so a model that a detector loads on first use
        is loaded once for it too (a fresh copy per call loaded dlib's HOG model, 0.9 s,
        every time). A detector that never upsamples returns itself.
        """
        if not self.small_side:
            return self
        twin = self.__dict__.get("_never_upsampling")
        if twin is None:
            twin = copy.copy(self)
            twin.small_side = 0
            self._never_upsampling = twin
        return twin

    def _detect(self, a):  # pragma: no cover - abstract
        raise NotImplementedError

    def __str__(self):
        return (
            f"{self.name} face detector (max side {self.max_side}, small side "
            f"{self.small_side}, max pixels {self.max_pixels})"
        )


def _dlib():
    try:
        import dlib
    except ImportError as e:  # pragma: no cover - dlib is in the 'peers' extra
        raise ImportError(
            "the dlib face detectors need dlib: pip install 'menpo-densereg[peers]'"
        ) from e
    return dlib


class DlibHOGDetector(FaceDetector):
    """dlib's HOG frontal face detector (5 HOG filters: frontal, left/right turned).

    Its window is 80 px, so by default every image is upsampled 2x (dlib's one
    pyramid-up level: faces down to ~40 px) within a working image of at most
    `HOG_MAX_PIXELS` (about 0.5 s on one core): a 640 x 480 image is searched at
    1280 x 960, a 12 MP photo at ~0.4x (faces down to ~200 px there).
    ``max_pixels=None`` means `HOG_MAX_PIXELS` (``inf``: no bound).
    ``threshold`` is dlib's ``adjust_threshold`` (lower finds more, with more false
    positives). Faces found by the two turned-face filters are reported as
    ``hog-side`` and ``hog-side-mirrored`` (the other way): their boxes sit
    differently on the face and have a calibration of their own.
    """

    name = "hog"
    _names = {1: "hog-side", 2: "hog-side-mirrored"}

    def __init__(
        self,
        max_side=None,
        small_side=float("inf"),
        threshold=0.0,
        max_pixels=None,
    ):
        if max_pixels is None:
            max_pixels = HOG_MAX_PIXELS
        super().__init__(max_side, small_side, max_pixels)
        self.threshold = threshold
        self._net = None

    def __str__(self):
        return f"{super().__str__()[:-1]}, threshold {self.threshold})"

    def with_candidates(self, image, threshold):
        """The faces of ``image`` and, from the same HOG pass, the weaker candidates.

        Parameters
        ----------
        image : `menpo.image.Image`
        threshold : `float`
            The lowest score of a candidate (dlib's ``adjust_threshold``, below the
            detector's ``threshold``).

        Returns
        -------
        faces : `list` of `Detection`
            What calling the detector gives (score >= ``self.threshold``).
        candidates : `list` of `Detection`
            The detections scoring in ``[threshold, self.threshold)``, best first.
        """
        found = self._find(image, threshold=min(threshold, self.threshold))
        faces = [d for d in found if d.score >= self.threshold]
        return faces, [d for d in found if d.score < self.threshold]

    def _detect(self, a, threshold=None):
        if self._net is None:
            self._net = _dlib().get_frontal_face_detector()
        thr = self.threshold if threshold is None else threshold
        rects, scores, idx = self._net.run(a, 0, thr)
        return [
            (
                r.top(),
                r.left(),
                r.bottom(),
                r.right(),
                s,
                self._names.get(int(i), "hog"),
            )
            for r, s, i in zip(rects, scores, idx)
        ]


def _face_recognition_model(name):
    """Path of a model file inside the ``face_recognition_models`` package."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "the mmod detector needs face_recognition_models: "
            "pip install 'menpo-densereg[peers]'"
        )
    for loc in spec.submodule_search_locations:
        p = Path(loc) / "models" / name
        if p.is_file():
            return p
    raise FileNotFoundError(f"{name}: not found in face_recognition_models")


class DlibMMODDetector(FaceDetector):
    """dlib's CNN (MMOD) face detector, weights from ``face_recognition_models``.

    Its smallest face is ~80 px in the working image; it costs ~1.5 s per 400 x 300
    image on one idle CPU core, hence a working image of at most `MMOD_MAX_PIXELS`
    (400 x 300): larger images are shrunk to it, smaller ones upsampled up to it (at
    most 2x; a 192 px crop is searched at 346 px). ``max_pixels=None`` means
    `MMOD_MAX_PIXELS` (``inf``: no bound).

    The network is not mirror-symmetric: with ``mirror`` (the default), an image where
    it finds nothing is searched once more mirrored (a second ~1.5 s only there), and
    those faces are reported as ``mmod-mirrored`` (the ``mmod`` calibration, mirrored).
    On 60 re-renders of training people at 45-90 deg of yaw this raised recall from
    83 % to 87 % (64 % to 73 % beyond 75 deg) with no added false positives.
    """

    name = "mmod"

    def __init__(
        self, max_side=None, small_side=float("inf"), max_pixels=None, mirror=True
    ):
        if max_pixels is None:
            max_pixels = MMOD_MAX_PIXELS
        super().__init__(max_side, small_side, max_pixels)
        self.mirror = mirror
        self._net = None

    def __str__(self):
        return f"{super().__str__()[:-1]}, mirror {self.mirror})"

    def _detect(self, a):
        if self._net is None:
            path = _face_recognition_model("mmod_human_face_detector.dat")
            self._net = _dlib().cnn_face_detection_model_v1(str(path))
        rows = [
            (d.rect.top(), d.rect.left(), d.rect.bottom(), d.rect.right(), d.confidence)
            for d in self._net(a, 0)
        ]
        if rows or not self.mirror:
            return rows
        x = a.shape[1] - 1  # dlib's right() is inclusive: column c <-> x - c
        found = self._net(np.ascontiguousarray(a[:, ::-1]), 0)
        return [
            (
                d.rect.top(),
                x - d.rect.right(),
                d.rect.bottom(),
                x - d.rect.left(),
                d.confidence,
                "mmod-mirrored",
            )
            for d in found
        ]


class DlibProfileDetector(FaceDetector):
    """A dlib HOG + linear SVM detector of turned faces (40-90 degrees of yaw).

    Trained by ``scripts/train_profile_detector.py`` on data-engine re-renders of
    training people (``ytf68`` training frames, ``faces68/afw``, ``wflw98``'s training
    side), all turned to one side; it also runs on the mirrored image, whose faces are
    reported as ``profile-mirrored`` (the ``profile`` calibration, mirrored). Its boxes
    are squares on the face (side = the landmark box's height), mapped to the landmark
    box by the ``profile`` calibration. The model is read with
    ``dlib.fhog_object_detector`` (dlib's own serialisation: no code runs on load).

    Parameters
    ----------
    model : `str` or `Path`, optional
        Default `PROFILE_MODEL`.
    threshold : `float`
        dlib's ``adjust_threshold`` (0: the SVM's own decision boundary).
    """

    name = "profile"

    def __init__(
        self, model=None, threshold=0.0, max_side=None, small_side=400, max_pixels=None
    ):
        if max_pixels is None:
            max_pixels = 640 * 480
        super().__init__(max_side, small_side, max_pixels)
        self.model = Path(model) if model is not None else PROFILE_MODEL
        self.threshold = float(threshold)
        self._det = None

    def __str__(self):
        return f"{super().__str__()[:-1]}, model {self.model.name})"

    def _load(self):
        if not self.model.is_file():
            raise FileNotFoundError(
                f"{self.model}: profile detector model not found "
                "(scripts/train_profile_detector.py makes it)"
            )
        try:
            return _dlib().fhog_object_detector(str(self.model))
        except RuntimeError as e:
            raise ValueError(
                f"{self.model}: not a dlib fhog_object_detector file ({e})"
            ) from None

    def _detect(self, a):
        if self._det is None:
            self._det = self._load()
        rows = []
        x = a.shape[1] - 1
        for mirrored in (False, True):
            img = np.ascontiguousarray(a[:, ::-1]) if mirrored else a
            dets, scores, _ = self._det.run(img, 0, self.threshold)
            for d, sc in zip(dets, scores):
                t, l, b, r = d.top(), d.left(), d.bottom(), d.right()
                if mirrored:
                    l, r = x - r, x - l
                rows.append(
                    (
                        t,
                        l,
                        b,
                        r,
                        float(sc),
                        "profile-mirrored" if mirrored else "profile",
                    )
                )
        if not rows:
            return []
        keep = non_max_suppression([r[:4] for r in rows], [r[4] for r in rows], 0.3)
        return [rows[i] for i in keep]


class HaarDetector(FaceDetector):
    """OpenCV's frontal + profile Haar cascades (``cv2.data.haarcascades``).

    The profile cascade is trained on faces turned one way; it also runs on the
    mirrored image. Detections of both are merged by non-maximum suppression; the
    score is the cascade's last-stage weight, profiles are reported under the name
    ``haar-profile`` (their box convention, and so their calibration, differs).
    """

    name = "haar"
    channels = "grey"

    def __init__(
        self, max_side=480, small_side=240, min_size=24, neighbours=5, profile=True
    ):
        super().__init__(max_side, small_side)
        self.min_size = min_size
        self.neighbours = neighbours
        self.profile = profile
        self._cascades = None

    def _load(self):
        try:
            import cv2
        except ImportError as e:  # pragma: no cover - opencv is in 'peers'
            raise ImportError(
                "the haar detector needs OpenCV: pip install 'menpo-densereg[peers]'"
            ) from e
        root = Path(cv2.data.haarcascades)
        out = {}
        for key, f in (
            ("haar", "haarcascade_frontalface_alt2.xml"),
            ("haar-profile", "haarcascade_profileface.xml"),
        ):
            c = cv2.CascadeClassifier(str(root / f))
            if c.empty():
                raise FileNotFoundError(
                    f"{root / f}: OpenCV cascade missing or unreadable"
                )
            out[key] = c
        return out

    def _run(self, c, g):
        rects, _, weights = c.detectMultiScale3(
            g,
            scaleFactor=1.1,
            minNeighbors=self.neighbours,
            minSize=(self.min_size, self.min_size),
            outputRejectLevels=True,
        )
        return [
            (r, float(w)) for r, w in zip(np.reshape(rects, (-1, 4)), np.ravel(weights))
        ]

    def __str__(self):
        return (
            f"{super().__str__()[:-1]}, min size {self.min_size}, neighbours "
            f"{self.neighbours}, profile {self.profile})"
        )

    def _detect(self, g):
        if self._cascades is None:
            self._cascades = self._load()
        W = g.shape[1]
        rows = []
        for (x, y, w, h), s in self._run(self._cascades["haar"], g):
            rows.append((y, x, y + h, x + w, s, "haar"))
        if self.profile:
            pc = self._cascades["haar-profile"]
            for (x, y, w, h), s in self._run(pc, g):
                rows.append((y, x, y + h, x + w, s, "haar-profile"))
            for (x, y, w, h), s in self._run(pc, np.ascontiguousarray(g[:, ::-1])):
                rows.append((y, W - x - w, y + h, W - x, s, "haar-profile-mirrored"))
        if not rows:
            return []
        keep = non_max_suppression([r[:4] for r in rows], [r[4] for r in rows], 0.3)
        return [rows[i] for i in keep]


class CandidateCheck(FaceDetector):
    """Weak HOG candidates re-checked by a robust detector on a crop around each.

    dlib's HOG scores some real faces below its threshold (a face bowed over a desk
    scores -0.5) while confidently finding the other people of the photo, so the
    cascade stops before MMOD looks. HOG's weaker candidates, down to ``min_score``,
    that overlap none of its faces are each cut out with a margin (a square of
    ``1 + margin`` times the candidate's side), resized so the candidate is
    ``face_px`` pixels, and searched by the ``verifier`` (MMOD without the mirrored
    pass): a small crop is cheap for MMOD (~0.2 s at 160 x 160). A candidate is a face
    when the verifier finds a box overlapping it by IoU >= ``min_iou``; that box is
    reported, named ``mmod-crop`` (so it takes MMOD's calibration, which suits it). At
    most ``max_candidates`` crops are searched per image (best HOG score first; a
    candidate overlapping a face already confirmed is skipped).

    The defaults were chosen on training people only (``ytf68`` training frames,
    training re-renders, the AFW photos but the one ``faces68`` miss, ``wflw98`` and
    the ``unlabelled`` photos; ``out/detect3`` scripts): MMOD confirmed every candidate
    that lay on a face HOG had missed, and no box away from the face on 316
    single-face training images;
    the score, size and count limits keep crops to about a third of ordinary photos
    (~170 ms each), and MMOD needs the face at ~80 px (at 60 px it confirmed 2 of 7
    faces HOG missed on ytf68 training frames, at 80 px 6).

    Called on an image, it runs HOG itself and returns the confirmed faces only (the
    cascade passes it HOG's candidates instead, from its own HOG pass).

    Parameters
    ----------
    verifier : `FaceDetector` or callable, optional
        ``image -> [Detection]``; default dlib's MMOD on the crop as given
        (no resizing, no mirrored pass).
    min_score : `float`
        The weakest HOG candidate checked.
    max_candidates : `int`
        At most this many crops per image.
    margin : `float`
        Context around the candidate, in units of its side (in all, not per side).
    face_px : `int`
        The candidate's side in the resized crop (MMOD finds faces from ~80 px).
    min_iou : `float`
        The overlap between the verifier's box and the candidate that confirms it.
    min_side : `float`
        Candidates smaller than this (pixels of ``image``) are not checked: on
        training photos MMOD confirmed 8 of the 149 under 60 px, and they are most of
        the candidates on ordinary photos.
    hog : `DlibHOGDetector`, optional
        The source of candidates when called on an image alone; default ``hog``.
    """

    name = "mmod-crop"

    def __init__(
        self,
        verifier=None,
        min_score=-0.6,
        max_candidates=2,
        margin=1.0,
        face_px=80,
        min_iou=0.3,
        min_side=50,
        hog=None,
    ):
        super().__init__()
        self.verifier = verifier
        self.min_score = float(min_score)
        self.max_candidates = int(max_candidates)
        self.margin = float(margin)
        self.face_px = float(face_px)
        self.min_iou = float(min_iou)
        self.min_side = float(min_side)
        self.hog = hog

    def __str__(self):
        return (
            f"{self.name} check of weak hog candidates (min score {self.min_score}, "
            f"max candidates {self.max_candidates}, margin {self.margin}, face "
            f"{self.face_px:g} px, min iou {self.min_iou}, min side {self.min_side:g})"
        )

    def _verifier(self):
        if self.verifier is None:
            self.verifier = DlibMMODDetector(
                small_side=0, max_pixels=float("inf"), mirror=False
            )
        return self.verifier

    def __call__(self, image, candidates=None, faces=()):
        """Faces confirmed among ``candidates`` (HOG's own, when not given).

        Parameters
        ----------
        image : `menpo.image.Image`
        candidates : `list` of `Detection`, optional
            Weak candidates, best first; default: HOG's on ``image`` (those scoring
            in ``[min_score, 0)``).
        faces : `list` of `Detection`
            Faces already found: candidates overlapping one (IoU > 0.3) are skipped.

        Returns
        -------
        confirmed : `list` of `Detection`
            The verifier's boxes (in ``image`` pixels), best score first.
        """
        if candidates is None:
            hog = self.hog if self.hog is not None else get_detector("hog")
            faces, candidates = hog.with_candidates(image, self.min_score)
        todo = [
            c
            for c in sorted(candidates, key=lambda d: -d.score)
            if c.score >= self.min_score
            and max(c.box.range()) >= self.min_side
            and not any(box_iou(c.box, f.box) > 0.3 for f in faces)
        ]
        if not todo:
            return []
        a = image_to_uint8(image, "rgb")
        out, tried = [], 0
        for c in todo:
            if tried >= self.max_candidates:
                break
            if any(box_iou(c.box, d.box) > 0.3 for d in out):
                continue
            tried += 1
            best = self._check(a, c)
            if best is not None:
                out.append(best)
        return sorted(out, key=lambda d: -d.score)

    def _check(self, a, candidate):
        """The verifier's box confirming ``candidate`` on a crop of ``a``, or None."""
        from menpo.image import Image

        (t, l), (b, r) = box_corners(candidate.box)
        side = max(b - t, r - l)
        if side < 2:
            return None
        cy, cx, half = (t + b) / 2, (l + r) / 2, side * (1 + self.margin) / 2
        y0, x0 = int(max(0, np.floor(cy - half))), int(max(0, np.floor(cx - half)))
        y1 = int(min(a.shape[0], np.ceil(cy + half)))
        x1 = int(min(a.shape[1], np.ceil(cx + half)))
        if y1 - y0 < 2 or x1 - x0 < 2:
            return None
        s = self.face_px / side
        crop = np.ascontiguousarray(_resize(a[y0:y1, x0:x1], s))
        found = self._verifier()(Image(np.ascontiguousarray(np.moveaxis(crop, -1, 0))))
        best, best_iou = None, self.min_iou
        for d in found:
            (dt, dl), (db, dr) = box_corners(d.box)
            box = _box(dt / s + y0, dl / s + x0, db / s + y0, dr / s + x0)
            iou = box_iou(box, candidate.box)
            if iou >= best_iou:
                best, best_iou = Detection(box, float(d.score), self.name), iou
        return best


def _merge_stages(stages, confident):
    """The cascade rule on the members' results, in member order.

    ``stages`` yields ``(detections, name)`` lazily; a stage runs only while no
    earlier detection scored at least its member's ``confident`` score (``None``: any
    detection is enough). Detections of a later stage that overlap an earlier one
    (IoU > 0.3) replace it (the later members are the more robust ones); the result
    lists the stages' detections in stage order, each stage by score.
    """
    kept = []  # list of lists (one per stage)
    for dets, name in stages:
        if dets:
            new = list(dets)
            for stage in kept:
                stage[:] = [
                    d
                    for d in stage
                    if not any(box_iou(d.box, n.box) > 0.3 for n in new)
                ]
            kept.append(new)
        flat = [d for stage in kept for d in stage]
        thr = confident.get(name) if isinstance(confident, dict) else None
        if flat and (thr is None or max(d.score for d in flat) >= thr):
            break
    return [d for stage in reversed(kept) for d in stage]


def _add_confirmed(found, confirmed):
    """``found`` and, after it, the ``confirmed`` candidates overlapping none of it."""
    extra = [
        c for c in confirmed if not any(box_iou(c.box, d.box) > 0.3 for d in found)
    ]
    return list(found) + extra


class CascadeDetector(FaceDetector):
    """Run detectors in turn, the next only where the earlier ones are not sure.

    A later (slower, more robust) detector runs when the earlier ones found nothing,
    or when their best score is below ``confident[name]`` for the last one that ran
    (dlib's HOG is unreliable below a score of ~0.5: profile faces, boxes half on the
    face). Overlapping detections keep the later detector's box; the list holds the
    later stage's detections first.

    Parameters
    ----------
    detectors : sequence of `FaceDetector`
        Fast first.
    confident : `dict`, optional
        ``{member name: score}`` above which the cascade stops after that member.
    check : `CandidateCheck`, optional
        When the first member is a `DlibHOGDetector`: its weak candidates (from the
        same HOG pass) that overlap none of its faces are re-checked on crops, and
        those confirmed that overlap nothing the cascade found are added (last).
    """

    name = "cascade"

    def __init__(self, detectors, confident=None, check=None):
        super().__init__()
        self.detectors = list(detectors)
        self.confident = dict(confident or {})
        self.check = check

    def __call__(self, image):
        first, weak = self.detectors[0], None
        if self.check is not None and isinstance(first, DlibHOGDetector):
            faces, weak = first.with_candidates(image, self.check.min_score)
            runs = [lambda: faces] + [
                (lambda d=d: d(image)) for d in self.detectors[1:]
            ]
        else:
            runs = [(lambda d=d: d(image)) for d in self.detectors]
        found = _merge_stages(
            ((run(), d.name) for run, d in zip(runs, self.detectors)), self.confident
        )
        if weak is None:
            return found
        return _add_confirmed(found, self.check(image, weak, faces))

    def __str__(self):
        return (
            "cascade face detector: "
            + " -> ".join(
                (
                    f"{d.name} (stop at score {self.confident[d.name]})"
                    if d.name in self.confident
                    else d.name
                )
                for d in self.detectors
            )
            + (f"; then {self.check}" if self.check is not None else "")
        )


#: The cascade's members and the score at which it stops after each.
CASCADE = (("hog", 0.5), ("mmod", None), ("profile", None), ("haar", None))
#: The cascade's last step: weak HOG candidates re-checked by MMOD on a crop
#: (`CandidateCheck`; ``None``: no such step).
CASCADE_CHECK = "mmod-crop"


@lru_cache(maxsize=None)
def get_detector(name=DEFAULT_DETECTOR):
    """The shared detector called ``name`` (one of `DETECTOR_NAMES`).

    Raises
    ------
    ValueError
        An unknown name (the message lists the known ones).
    """
    if isinstance(name, FaceDetector):
        return name
    if name == "hog":
        return DlibHOGDetector()
    if name == "mmod":
        return DlibMMODDetector()
    if name == "haar":
        return HaarDetector()
    if name == "profile":
        return DlibProfileDetector()
    if name == "mmod-crop":  # the cascade's check of weak HOG candidates
        return CandidateCheck(hog=get_detector("hog"))
    if name == "cascade":
        return CascadeDetector(
            [get_detector(n) for n, _ in CASCADE],
            {n: t for n, t in CASCADE if t is not None},
            get_detector(CASCADE_CHECK) if CASCADE_CHECK else None,
        )
    raise ValueError(
        f"detector: unknown name {name!r} (known: {', '.join(DETECTOR_NAMES)})"
    )


def detect(image, detector=DEFAULT_DETECTOR, calibrate=True):
    """Faces in ``image`` as ``(box, detection)`` pairs, largest box first.

    Parameters
    ----------
    image : `menpo.image.Image`
    detector : `str` or `FaceDetector`
    calibrate : `bool`
        Map each box to the landmark-box convention (:func:`calibrate_box`).

    Returns
    -------
    faces : `list` of ``(PointDirectedGraph, Detection)``
    """
    det = detector if isinstance(detector, FaceDetector) else get_detector(detector)
    out = [(d.calibrated() if calibrate else d.box, d) for d in det(image)]
    return sorted(out, key=lambda bd: -float(np.prod(bd[0].range())))


# ======================================================================================
# calibration


def box_corners(box):
    """``(top, left), (bottom, right)`` of a box (any PointCloud of its corners)."""
    pts = box.points if isinstance(box, PointCloud) else np.asarray(box, dtype=float)
    return pts.min(axis=0), pts.max(axis=0)


def box_iou(a, b):
    """Intersection over union of two axis-aligned boxes."""
    (a0, a1), (b0, b1) = box_corners(a), box_corners(b)
    inter = np.clip(np.minimum(a1, b1) - np.maximum(a0, b0), 0, None).prod()
    union = (a1 - a0).prod() + (b1 - b0).prod() - inter
    return float(inter / union) if union > 0 else 0.0


def box_params(box):
    """``(centre, size)`` of a box (``(y, x)`` each) from any PointCloud of its corners."""
    lo, hi = box_corners(box)
    return (lo + hi) / 2, hi - lo


@dataclass(frozen=True)
class BoxCalibration:
    """Detector box -> tight landmark box: ``centre += offset * size``, ``size *= scale``.

    ``offset`` and ``scale`` are ``(y, x)`` pairs, in units of the detector box's size.
    """

    offset: tuple = (0.0, 0.0)
    scale: tuple = (1.0, 1.0)

    def __call__(self, box):
        c, s = box_params(box)
        c = c + np.asarray(self.offset, float) * s
        half = np.asarray(self.scale, float) * s / 2
        return bounding_box(c - half, c + half)

    def mirrored(self):
        """The calibration of the same detector run on the mirrored image (x flipped)."""
        return BoxCalibration((self.offset[0], -self.offset[1]), self.scale)

    def inverse(self, box):
        """The detector box whose calibration is ``box`` (a landmark-convention box)."""
        c, s = box_params(box)
        size = s / np.asarray(self.scale, float)
        c = c - np.asarray(self.offset, float) * size
        return bounding_box(c - size / 2, c + size / 2)

    def __str__(self):
        return (
            f"centre + ({self.offset[0]:+.3f}, {self.offset[1]:+.3f}) x size, size x "
            f"({self.scale[0]:.3f}, {self.scale[1]:.3f})"
        )


def fit_calibration(detector_boxes, landmark_boxes):
    """The `BoxCalibration` taking ``detector_boxes`` to ``landmark_boxes``.

    Each pair gives the landmark box's centre shift and size ratio in units of the
    detector box; the calibration is their median (robust to a few wrong matches).

    Raises
    ------
    ValueError
        No pairs, or lists of different lengths.
    """
    if len(detector_boxes) != len(landmark_boxes):
        raise ValueError(
            f"fit_calibration: {len(detector_boxes)} detector boxes but "
            f"{len(landmark_boxes)} landmark boxes"
        )
    if not detector_boxes:
        raise ValueError("fit_calibration: no box pairs to fit")
    off, sc = [], []
    for d, g in zip(detector_boxes, landmark_boxes):
        (cd, sd), (cg, sg) = box_params(d), box_params(g)
        off.append((cg - cd) / sd)
        sc.append(sg / sd)
    o, s = np.median(off, axis=0), np.median(sc, axis=0)
    return BoxCalibration(tuple(float(v) for v in o), tuple(float(v) for v in s))


@lru_cache(maxsize=8)
def _load(path, mtime_ns):
    with open(path) as f:
        data = json.load(f)
    return {
        k: BoxCalibration(tuple(v["offset"]), tuple(v["scale"]))
        for k, v in data["detectors"].items()
    }


def load_calibrations(path=None):
    """``{detector name: BoxCalibration}`` from the calibration file.

    ``path`` defaults to `CALIBRATION_FILE`; the environment variable
    ``MENPO_DENSEREG_BOX_CALIBRATION`` overrides it. A missing file gives ``{}``.
    """
    path = path or os.environ.get("MENPO_DENSEREG_BOX_CALIBRATION") or CALIBRATION_FILE
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        return dict(_load(str(path.resolve()), path.stat().st_mtime_ns))
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a box calibration file ({e})") from None


def calibrate_box(box, detector):
    """Map a box found by ``detector`` to the tight landmark box the networks expect.

    This is the one place a detector box is calibrated: ``fit``, ``benchmark``, the
    initialisers and tracking all call it (directly, through `Detection.calibrated`
    or through :func:`detect`).

    Parameters
    ----------
    box : `menpo.shape.PointCloud`
        The detector's box (its corners, ``(y, x)``).
    detector : `str`
        The name of the detector that found it (``Detection.detector``); ``"gt"``
        and ``"landmarks"`` return the box unchanged.

    Raises
    ------
    ValueError
        No calibration is stored for ``detector``.
    """
    if detector in ("gt", "landmarks"):
        c, s = box_params(box)
        return bounding_box(c - s / 2, c + s / 2)
    return _calibration_for(detector)(box)


def _calibration_for(detector):
    """The stored calibration of a detector name: a sub-detector without one of its own
    (``"hog-front"``) takes its family's, a mirrored pass (``"hog-side-mirrored"``) its
    detector's mirrored in x."""
    cal = load_calibrations()
    mirrored = detector.endswith("-mirrored")
    name = detector[: -len("-mirrored")] if mirrored else detector
    while name not in cal and "-" in name:
        name = name.rsplit("-", 1)[0]
    if name not in cal:
        raise ValueError(
            f"detector: no box calibration for {detector!r} in {CALIBRATION_FILE.name} "
            f"(calibrated: {', '.join(sorted(cal)) or 'none'}); run "
            "scripts/fit_box_calibration.py"
        )
    c = cal[name]
    return c.mirrored() if mirrored else c


def uncalibrate_box(box, detector):
    """The inverse of :func:`calibrate_box`: a landmark-convention box mapped to the box
    ``detector`` would have given (for models trained on a detector's boxes, such as
    dlib's 68-point predictor on dlib's HOG boxes). Names resolve as in
    :func:`calibrate_box` (sub-detectors, mirrored passes), so a box calibrated from
    ``detector`` comes back as the detector gave it.

    Raises
    ------
    ValueError
        No calibration is stored for ``detector``.
    """
    return _calibration_for(detector).inverse(box)


# ======================================================================================
# many images, resumable (the calibration tool and benchmarks/detectors.py)


def scan_detections(items, names=("hog", "mmod", "haar"), cache=None, progress=True):
    """Raw detections of several detectors on many images, cached and resumable.

    Parameters
    ----------
    items : sequence of ``(key, load)``
        ``key`` a unique string (e.g. the file path), ``load()`` returns the image.
    names : sequence of `str`
        Detector names (`DETECTOR_NAMES`, ``cascade`` excepted: derive it with
        :func:`cascade_of`).
    cache : `str` or `Path`, optional
        A JSON-lines file: results already there are reused, new ones appended one line
        at a time (an interrupted run loses at most the image it was on). Each line
        records its detector's settings (``str(detector)``); lines made with other
        settings are ignored, so changing a detector re-runs it.
    progress : `bool`
        Show a tqdm bar.

    Returns
    -------
    found : `dict`
        ``{key: {name: (detections, milliseconds)}}``.
    """
    import time

    done = {}
    config = {n: str(get_detector(n)) for n in names}
    if cache is not None and Path(cache).is_file():
        with open(cache) as f:
            for line in f:
                try:
                    r = json.loads(line)
                except ValueError:
                    continue  # a line cut by an interrupted run
                if r.get("config") != config.get(r.get("detector")):
                    continue  # another detector, or made with other settings
                dets = [
                    Detection(_box(*row[:4]), float(row[4]), row[5])
                    for row in r["found"]
                ]
                done.setdefault(r["key"], {})[r["detector"]] = (dets, r["ms"])
    todo = [(k, ld) for k, ld in items if any(n not in done.get(k, {}) for n in names)]
    out_f = None
    if cache is not None and todo:
        Path(cache).parent.mkdir(parents=True, exist_ok=True)
        out_f = open(cache, "a")
    try:
        it = todo
        if progress and todo:
            from tqdm.auto import tqdm

            it = tqdm(todo, desc=f"detecting ({', '.join(names)})", unit="image")
        for key, load in it:
            image = load()
            for n in names:
                if n in done.get(key, {}):
                    continue
                t0 = time.perf_counter()
                dets = get_detector(n)(image)
                ms = 1000.0 * (time.perf_counter() - t0)
                done.setdefault(key, {})[n] = (dets, ms)
                if out_f is not None:
                    rows = [
                        [*d.box.points.min(0).tolist(), *d.box.points.max(0).tolist()]
                        + [d.score, d.detector]
                        for d in dets
                    ]
                    rec = {"key": key, "detector": n, "config": config[n], "ms": ms}
                    out_f.write(json.dumps({**rec, "found": rows}) + "\n")
                    out_f.flush()
    finally:
        if out_f is not None:
            out_f.close()
    return {k: done[k] for k, _ in items if k in done}


def cascade_of(per_detector):
    """What the ``cascade`` detector returns, from each member's detections on one image.

    Parameters
    ----------
    per_detector : `dict`
        ``{name: detections}`` (or ``{name: (detections, ms)}`` as
        :func:`scan_detections` gives) for the members of `CASCADE` and for
        `CASCADE_CHECK` (its faces confirmed among HOG's weak candidates).

    Returns
    -------
    detections : `list` of `Detection`
    ms : `float`
        The summed time of the members that would have run (with `CASCADE_CHECK`,
        its time as scanned alone, which includes a HOG pass of its own that the
        cascade shares with its first member).
    """
    ran = []

    def stages():
        for n, _ in CASCADE:
            v = per_detector[n]
            dets, t = v if isinstance(v, tuple) else (v, float("nan"))
            ran.append(t)
            yield dets, n

    out = _merge_stages(stages(), {n: t for n, t in CASCADE if t is not None})
    if CASCADE_CHECK:
        v = per_detector[CASCADE_CHECK]
        dets, t = v if isinstance(v, tuple) else (v, float("nan"))
        out = _add_confirmed(out, dets)
        ran.append(t)
    return out, float(np.sum(ran))
