"""Tracking by detection and previous-frame initialisation, around any fitter.

:class:`Tracker` wraps a fitter of the project (``load_fitter(name)``) or any menpofit
fitter with ``fit_from_bb`` / ``fit_from_shape``. The first frame (and any frame after the
face was lost) starts from the face detector; every next frame starts from the previous
frame's result: ``fit_from_bb`` from the box of the previous landmarks, low-passed and
mapped the way the fit related to its box at the last detection (so a fitter whose
landmarks sit inside or beside its box does not drift; this plays the part of DeCaFA's
box-correction network), or ``fit_from_shape`` from the previous shape (``init="shape"``,
for refiners used alone). When the fit's confidence drops below a threshold or the
shape degenerates, the frame is fitted again from a fresh detection; when no face is
found either, a weak tracked fit is kept or the frame is *lost*.

Confidence (:meth:`Tracker.confidence`) is the product of the terms that are available:

- ``fit``: the fitter's own per-landmark confidence, averaged (DenseReg: UV-field
  support; DeCaFA: attention-map peak), relative to its value at the last detection
  (the scales of different fitters are not comparable); absent for fitters that give
  none (dlib, AAM);
- ``shape``: plausibility of the shape as a face: the RMS residual after a similarity
  alignment to a mean face, in units of the mean face's RMS radius, through
  ``exp(-(r / shape_sigma)^2 / 2)`` (annotated faces: median r 0.17, 95 % below 0.31;
  random points: r ~ 1);
- ``motion``: frame-to-frame consistency: the mean landmark displacement from the
  previous frame in units of the face size, through ``exp(-(d / motion_sigma)^2 / 2)``.

Optional temporal smoothing (a one-euro filter, Casiez et al. CHI 2012, on positions in
units of the face size) only changes the *reported* shapes; the next frame is
initialised from the raw fit (through the box filter above), so output smoothing never
feeds back into the tracking.
"""

import math
import time
from dataclasses import dataclass, field

import numpy as np
from menpo.shape import PointCloud, bounding_box

from menpo_densereg.data.detectors import box_params
from menpo_densereg.fitting.base import box_from_shape

__all__ = [
    "Tracker",
    "FrameRecord",
    "TrackingResult",
    "OneEuroFilter",
    "default_detector",
    "FaceBoxes",
    "shape_residual",
    "drop_images",
    "STATES",
]

#: why a frame was initialised the way it was
STATES = ("detected", "tracked", "redetected", "lost")


@dataclass
class FrameRecord:
    """What the tracker did on one frame.

    Attributes
    ----------
    index : `int`
        Frame number in the video (0-based).
    state : `str`
        ``"detected"`` (started from the detector: first frame or after a loss),
        ``"tracked"`` (from the previous frame's result), ``"redetected"`` (tracking
        was not confident, a fresh detection gave the kept fit) or ``"lost"`` (no
        usable fit: no face found).
    reason : `str`
        Why (e.g. ``"confidence 0.12 < 0.30"``, ``"no face detected"``).
    result : menpofit `Result` or `None`
        The fitter's raw result for the kept fit (`None` when lost).
    shape : `PointCloud` or `None`
        The reported landmarks (smoothed when smoothing is on).
    box : `PointCloud` or `None`
        The box the kept fit started from (the previous landmarks' box when tracked).
    confidence : `float`
        In [0, 1]; NaN when lost.
    terms : `dict`
        The confidence terms (``fit``, ``shape``, ``motion``) that were available.
    ms : `float`
        Wall-clock milliseconds spent on the frame (fits, detection, confidence).
    """

    index: int
    state: str
    reason: str = ""
    result: object = None
    shape: object = None
    box: object = None
    confidence: float = float("nan")
    terms: dict = field(default_factory=dict)
    ms: float = 0.0

    @property
    def lost(self):
        return self.state == "lost"

    def __str__(self):
        conf = "-" if math.isnan(self.confidence) else f"{self.confidence:.2f}"
        why = f" ({self.reason})" if self.reason else ""
        return f"frame {self.index}: {self.state}{why}, confidence {conf}, {self.ms:.1f} ms"


class TrackingResult(list):
    """The :class:`FrameRecord` of every frame tracked, in order.

    Attributes
    ----------
    fitter_name : `str`
    error : `str` or `None`
        Set when the video could not be read to its end (the frames before are kept).
    """

    def __init__(self, records=(), fitter_name="", error=None):
        super().__init__(records)
        self.fitter_name = fitter_name
        self.error = error

    @property
    def shapes(self):
        """The reported shape of each frame (`None` where lost)."""
        return [r.shape for r in self]

    @property
    def raw_shapes(self):
        """The fitter's final shape of each frame, unsmoothed (`None` where lost)."""
        return [
            None if r.result is None else PointCloud(r.result.final_shape.points)
            for r in self
        ]

    @property
    def states(self):
        return [r.state for r in self]

    @property
    def confidences(self):
        return np.array([r.confidence for r in self], dtype=float)

    def count(self, state):
        """Number of frames in ``state``."""
        if state not in STATES:
            raise ValueError(f"state: expected one of {STATES}, got {state!r}")
        return sum(r.state == state for r in self)

    @property
    def frames_per_second(self):
        total = sum(r.ms for r in self) / 1000.0
        return len(self) / total if total > 0 else float("nan")

    def __str__(self):
        counts = ", ".join(f"{s} {self.count(s)}" for s in STATES)
        err = f"; stopped early: {self.error}" if self.error else ""
        return (
            f"TrackingResult of '{self.fitter_name}': {len(self)} frames ({counts}), "
            f"{self.frames_per_second:.1f} frames/s{err}"
        )


def _pts(shape):
    return np.asarray(getattr(shape, "points", shape), dtype=float)


def _mean_confidence(result):
    """The fitter's mean per-landmark confidence (`None` when it gives none)."""
    conf = getattr(result, "confidence", None)
    if conf is None or not np.size(conf):
        return None
    return float(np.nanmean(np.asarray(conf, dtype=float)))


def _size(pts):
    """Face size: the mean side of the tight box."""
    return float(np.mean(pts.max(0) - pts.min(0)))


def shape_residual(shape, reference):
    """RMS residual of ``shape`` after a similarity alignment onto ``reference``.

    In units of the reference's RMS radius (0 = the same shape up to a similarity).
    """
    p, r = _pts(shape), _pts(reference)
    if p.shape != r.shape:
        raise ValueError(f"shape: {p.shape} points, reference {r.shape}")
    p = p - p.mean(0)
    r = r - r.mean(0)
    rn = np.sqrt((r**2).sum() / len(r))
    pn = np.sqrt((p**2).sum() / len(p))
    if not pn > 0:
        return float("inf")
    p, r = p / pn, r / rn
    # optimal rotation + scale of p onto r (2D Procrustes, complex form)
    pc = p[:, 1] + 1j * p[:, 0]
    rc = r[:, 1] + 1j * r[:, 0]
    a = np.vdot(pc, rc) / np.vdot(pc, pc).real
    return float(np.sqrt(np.mean(np.abs(a * pc - rc) ** 2)))


class OneEuroFilter:
    """One-euro filter (Casiez et al., CHI 2012) on landmark positions.

    Positions are filtered in units of the face size, so the parameters do not depend
    on the resolution: ``min_cutoff`` (Hz) sets the smoothing at rest, ``beta`` how
    quickly the cut-off rises with speed (less lag on fast motion).
    """

    def __init__(self, min_cutoff=1.5, beta=0.5, d_cutoff=1.0):
        self.min_cutoff = float(min_cutoff)
        self.beta = float(beta)
        self.d_cutoff = float(d_cutoff)
        self.reset()

    def reset(self):
        self._x = None
        self._dx = None

    @staticmethod
    def _alpha(cutoff, dt):
        tau = 1.0 / (2 * math.pi * cutoff)
        return 1.0 / (1.0 + tau / dt)

    def __call__(self, pts, dt):
        pts = _pts(pts)
        scale = max(_size(pts), 1e-6)
        if self._x is None:
            self._x, self._dx = pts.copy(), np.zeros_like(pts)
            return pts.copy()
        dx = (pts - self._x) / dt / scale
        a_d = self._alpha(self.d_cutoff, dt)
        self._dx = a_d * dx + (1 - a_d) * self._dx
        cutoff = self.min_cutoff + self.beta * np.linalg.norm(self._dx, axis=1)
        a = np.array([self._alpha(c, dt) for c in cutoff])[:, None]
        self._x = a * pts + (1 - a) * self._x
        return self._x.copy()


class FaceBoxes:
    """A face detector giving boxes in the landmark-box convention, largest first.

    Wraps a detector of :mod:`menpo_densereg.data.detectors` (by name: ``"hog"``,
    ``"mmod"``, ``"haar"``, ``"cascade"``) through
    :func:`menpo_densereg.data.detectors.detect`, which calibrates each box
    (:func:`~menpo_densereg.data.detectors.calibrate_box`).
    """

    def __init__(self, detector="hog"):
        from menpo_densereg.data.detectors import get_detector

        self.detector = get_detector(detector)

    def __call__(self, image):
        from menpo_densereg.data.detectors import detect

        return [box for box, _ in detect(image, self.detector, calibrate=True)]

    def __str__(self):
        return f"FaceBoxes({self.detector})"


def default_detector(image):
    """Calibrated boxes of the project's default detector, largest first.

    :data:`menpo_densereg.data.detectors.DEFAULT_DETECTOR` through :class:`FaceBoxes`
    (the cascade: dlib HOG, then dlib's CNN where HOG finds nothing, then Haar).
    """
    global _DEFAULT
    if _DEFAULT is None:
        from menpo_densereg.data.detectors import DEFAULT_DETECTOR

        _DEFAULT = FaceBoxes(DEFAULT_DETECTOR)
    return _DEFAULT(image)


_DEFAULT = None


def drop_images(result):
    """Remove the copies of the image a menpofit result (and its stages) keeps.

    menpofit results copy the image they were fitted on; a tracker that keeps one result
    per frame would otherwise hold every frame of the video in memory (11 MB a frame
    at 640 x 480, three copies for a chain). Returns ``result``.
    """
    seen = set()
    stack = [result]
    while stack:
        r = stack.pop()
        if r is None or id(r) in seen:
            continue
        seen.add(id(r))
        if hasattr(r, "_image"):
            r._image = None
        stack.extend((getattr(r, "stages", None) or {}).values())
    return result


class Tracker:
    """Deformable face tracking with any fitter.

    Parameters
    ----------
    fitter : `str` or fitter
        A fitter name for :func:`menpo_densereg.fitting.registry.load_fitter`, or an object
        with ``fit_from_bb`` (and optionally ``fit_from_shape``).
    detector : `str` or callable ``image -> list of boxes``, optional
        A detector name of :mod:`menpo_densereg.data.detectors` (``"hog"``,
        ``"cascade"``, ...) or a callable giving boxes in the landmark-box convention,
        best first. Default :func:`default_detector` (the detectors' cascade).
    threshold : `float`
        Re-detect when the confidence falls below it.
    smoothing : `bool` or :class:`OneEuroFilter`
        Smooth the reported shapes with a one-euro filter (not the tracking itself:
        ``result`` keeps the raw fit). Default on; `False` reports the raw fits.
    stabilise : `bool` or :class:`OneEuroFilter`
        Low-pass the box that tracked frames start from (one-euro filter on its
        corners). The fit itself is not smoothed, but without it the fit's noise
        feeds back through the next box (tracking then shakes more than fitting
        every frame from a steady detector box). Default on.
    fps : `float`
        Frame rate, for the filters.
    init : ``"box"`` or ``"shape"``
        Start each tracked frame with ``fit_from_bb`` from :meth:`tracking_box` (the
        previous shape's box, corrected as at the last detection; default: suits the
        learned initialisers and dlib) or with ``fit_from_shape(previous shape)``
        (suits refiners used alone: MDM, AAM). Without ``fit_from_shape``, the box.
    reference_shape : `PointCloud`, optional
        Mean face for the ``shape`` term; default the shipped mean 68-point face for
        68-point fitters, none (term skipped) otherwise.
    shape_sigma, motion_sigma : `float`
        Scales of the ``shape`` and ``motion`` confidence terms.
    min_face : `float`
        A shape whose box is smaller (pixels) is degenerate.
    scale_gain : `float`, optional
        How much of the fit's size change passes to the next frame's box (1: all;
        0: hold the box side of the last detection). Fitters whose landmark spread
        follows the box they are given (DeCaFA's soft-argmax pulls towards the crop
        centre) shrink the box frame by frame at 1; hold it at 0 for them. Default:
        0 for DeCaFA (alone or starting a chain), 1 otherwise.
    keep_images : `bool`
        Keep the frame copies inside the menpofit results (``result.image``); off by
        default, or a long video would be held in memory (:func:`drop_images`).
    """

    def __init__(
        self,
        fitter,
        detector=None,
        threshold=0.3,
        smoothing=True,
        stabilise=True,
        fps=30.0,
        init="box",
        reference_shape=None,
        shape_sigma=0.25,
        motion_sigma=0.25,
        min_face=12.0,
        scale_gain=None,
        keep_images=False,
    ):
        if isinstance(fitter, str):
            from menpo_densereg.fitting.registry import load_fitter

            fitter = load_fitter(fitter)
        if not hasattr(fitter, "fit_from_bb"):
            raise TypeError(
                f"fitter: {type(fitter).__name__} has no fit_from_bb (not a fitter)"
            )
        if init not in ("shape", "box"):
            raise ValueError(f"init: expected 'shape' or 'box', got {init!r}")
        if not 0 <= threshold <= 1:
            raise ValueError(f"threshold: expected a value in [0, 1], got {threshold}")
        if not fps > 0:
            raise ValueError(f"fps: expected > 0, got {fps}")
        self.fitter = fitter
        self.name = getattr(fitter, "name", type(fitter).__name__)
        if detector is None:
            detector = default_detector
        elif isinstance(detector, str):
            detector = FaceBoxes(detector)
        self.detector = detector
        self.threshold = float(threshold)
        if smoothing is True:
            smoothing = OneEuroFilter()
        self.smoother = smoothing or None
        if stabilise is True:
            stabilise = OneEuroFilter(min_cutoff=0.3, beta=2.0)
        self._box_filter = stabilise or None
        self.fps = float(fps)
        self.init = init
        if reference_shape is None:
            n = getattr(getattr(fitter, "markup", None), "n_points", None)
            if n == 68 or n is None:
                from menpo_densereg.fitting.composition import mean_face_68

                reference_shape = mean_face_68()
        self.reference_shape = reference_shape
        self.shape_sigma = float(shape_sigma)
        self.motion_sigma = float(motion_sigma)
        self.min_face = float(min_face)
        if scale_gain is None:
            init = getattr(fitter, "initialiser", fitter)
            scale_gain = 0.0 if type(init).__name__ == "DecafaInitialiser" else 1.0
        self.scale_gain = float(scale_gain)
        self.keep_images = bool(keep_images)
        self.reset()

    def reset(self):
        """Forget the previous frame (the next frame starts from the detector)."""
        self._prev = None
        self._index = 0
        self._started = False
        self._fit_ref = None
        self._anchor = None
        if self._box_filter is not None:
            self._box_filter.reset()
        if self.smoother is not None:
            self.smoother.reset()

    # -- the pieces -------------------------------------------------------------------
    def degenerate(self, shape, image):
        """Why ``shape`` is unusable on ``image`` (`None` if it is fine)."""
        pts = _pts(shape)
        if not np.all(np.isfinite(pts)):
            return "non-finite landmarks"
        side = pts.max(0) - pts.min(0)
        if np.min(side) < self.min_face:
            return f"face box {side[1]:.0f}x{side[0]:.0f} px < {self.min_face:g} px"
        centre = (pts.max(0) + pts.min(0)) / 2
        if np.any(centre < 0) or np.any(centre > np.asarray(image.shape) - 1):
            return "face centre outside the frame"
        if self.reference_shape is not None and len(pts) == len(
            _pts(self.reference_shape)
        ):
            if shape_residual(pts, self.reference_shape) > 3 * self.shape_sigma:
                return "implausible shape"
        if self._prev is not None:
            ratio = _size(pts) / max(_size(self._prev), 1e-6)
            if not 0.5 < ratio < 2.0:
                return f"face size changed x{ratio:.2f} in one frame"
        return None

    def confidence(self, result, previous=None):
        """Confidence of a fit in [0, 1] and its terms (see the module docstring).

        Parameters
        ----------
        result : menpofit `Result`
        previous : ``(n, 2)`` `ndarray`, optional
            The previous frame's shape (for the ``motion`` term).

        Returns
        -------
        confidence : `float`
        terms : `dict`
            ``fit`` (relative to the last detection), ``shape``, ``motion`` where
            available, and ``fit_raw`` (the fitter's own mean confidence; not a factor).
        """
        pts = _pts(result.final_shape)
        terms = {}
        mean = _mean_confidence(result)
        if mean is not None:
            raw = float(np.clip(mean, 0, 1))
            terms["fit_raw"] = raw
            ref = self._fit_ref
            if ref is not None and ref > 0 and np.isfinite(raw):
                terms["fit"] = float(min(1.0, raw / ref))
        if self.reference_shape is not None and len(pts) == len(
            _pts(self.reference_shape)
        ):
            r = shape_residual(pts, self.reference_shape)
            terms["shape"] = float(np.exp(-0.5 * (r / self.shape_sigma) ** 2))
        if previous is not None and len(previous) == len(pts):
            d = np.mean(np.linalg.norm(pts - previous, axis=1)) / max(_size(pts), 1e-6)
            terms["motion"] = float(np.exp(-0.5 * (d / self.motion_sigma) ** 2))
        factors = [v for k, v in terms.items() if k != "fit_raw"]
        value = float(np.prod(factors)) if factors else 1.0
        if not np.isfinite(value):
            value = 0.0
        return value, terms

    def tracking_box(self, shape):
        """The box a tracked frame starts from: the previous shape's tight box, mapped
        by the correction measured at the last detection (:meth:`step`)."""
        pts = _pts(shape)
        lo, hi = pts.min(0), pts.max(0)
        if self._box_filter is not None:
            lo, hi = self._box_filter(np.stack([lo, hi]), 1.0 / self.fps)
        c, s = (lo + hi) / 2, hi - lo
        if self._anchor is not None:
            offset, scale, size0 = self._anchor
            c = c + offset * s
            # the box side follows the fit's size with gain scale_gain (0: hold the
            # side the last detection gave)
            s = scale * size0 * (s / size0) ** self.scale_gain
        return bounding_box(c - s / 2, c + s / 2)

    def _set_anchor(self, box, shape):
        """Remember how the box given to the fitter relates to the fit's tight box."""
        (bc, bs), (fc, fs) = box_params(box), box_params(_pts(shape))
        fs = np.maximum(fs, 1e-6)
        offset = (bc - fc) / fs
        scale = bs / fs
        self._anchor = (offset, scale, fs)
        if self._box_filter is not None:
            self._box_filter.reset()

    def _fit_track(self, image, prev):
        if self.init == "shape" and hasattr(self.fitter, "fit_from_shape"):
            box = box_from_shape(prev)
            return self.fitter.fit_from_shape(image, PointCloud(prev)), box
        box = self.tracking_box(prev)
        return self.fitter.fit_from_bb(image, box), box

    def _detect(self, image):
        boxes = list(self.detector(image) or [])
        if not boxes:
            return None
        if self._prev is not None and len(boxes) > 1:
            from menpo_densereg.data.boxes import box_iou

            prev_box = box_from_shape(self._prev)
            return max(boxes, key=lambda b: box_iou(b, prev_box))
        return boxes[0]

    # -- one frame --------------------------------------------------------------------
    def step(self, image, index=None):
        """Track one frame; returns its :class:`FrameRecord`.

        The rules: a tracked fit (from the previous shape) that is not degenerate and
        whose confidence reaches ``threshold`` is kept. Otherwise the frame is fitted
        from a fresh detection, kept unless degenerate. When no face is detected, a
        weak tracked fit (not degenerate, confidence at least half the threshold) is
        kept; else the frame is lost and the next one starts from the detector.
        """
        t0 = time.perf_counter()
        index = self._index if index is None else int(index)
        self._index = index + 1
        prev = self._prev
        first = not self._started
        self._started = True
        tracked = None
        if prev is not None:
            res, tbox = self._fit_track(image, prev)
            bad = self.degenerate(res.final_shape, image)
            conf, terms = self.confidence(res, prev)
            if bad is not None:
                conf = 0.0
            tracked = (res, conf, terms, tbox)
            if bad is None and conf >= self.threshold:
                return self._finish(index, "tracked", "", tracked, t0)
            reason = bad or f"confidence {conf:.2f} < {self.threshold:.2f}"
        else:
            reason = "first frame" if first else "after loss"
        box = self._detect(image)
        if box is not None:
            res = self.fitter.fit_from_bb(image, box)
            bad = self.degenerate(res.final_shape, image)
            if bad is None:
                self._set_anchor(box, res.final_shape)
                self._fit_ref = _mean_confidence(res)
                conf, terms = self.confidence(res, None)
                state = "detected" if prev is None else "redetected"
                return self._finish(index, state, reason, (res, conf, terms, box), t0)
            reason = f"{reason}; fit from the detection: {bad}"
        else:
            reason = f"{reason}; no face detected"
        if tracked is not None and tracked[1] >= self.threshold / 2:
            return self._finish(
                index, "tracked", f"{reason}; weak fit kept", tracked, t0
            )
        self._prev = None
        if self.smoother is not None:
            self.smoother.reset()
        rec = FrameRecord(index, "lost", reason, ms=_ms(t0))
        if tracked is not None:
            rec.terms = tracked[2]
        return rec

    def _finish(self, index, state, reason, fit, t0):
        res, conf, terms, box = fit
        if not self.keep_images:
            drop_images(res)
        raw = _pts(res.final_shape)
        if state != "tracked" and self.smoother is not None:
            self.smoother.reset()
        self._prev = raw
        out = raw if self.smoother is None else self.smoother(raw, 1.0 / self.fps)
        return FrameRecord(
            index=index,
            state=state,
            reason=reason,
            result=res,
            shape=PointCloud(out),
            box=box,
            confidence=conf,
            terms=terms,
            ms=_ms(t0),
        )

    # -- a clip -----------------------------------------------------------------------
    def track(self, frames, progress=False, on_error="raise", callback=None):
        """Track a sequence of frames (a list, or :func:`~.video.iter_frames`).

        Parameters
        ----------
        frames : iterable of `menpo.image.Image`
            Frames carrying ``frame`` (their index) are recorded under it.
        progress : `bool` or `str`
            Show a tqdm bar (a string is its description).
        on_error : ``"raise"`` or ``"keep"``
            When reading the frames fails (:class:`~.video.VideoError`): raise it with
            ``error.result`` set to the frames tracked so far, or return those with
            ``result.error`` set.
        callback : callable ``(image, record)``, optional
            Called after each frame (e.g. to write an overlay video).

        Returns
        -------
        result : :class:`TrackingResult`
        """
        from menpo_densereg.tracking.video import VideoError

        if on_error not in ("raise", "keep"):
            raise ValueError(f"on_error: expected 'raise' or 'keep', got {on_error!r}")
        self.reset()
        out = TrackingResult(fitter_name=self.name)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            total = (len(frames) or None) if hasattr(frames, "__len__") else None
            desc = progress if isinstance(progress, str) else self.name
            bar = tqdm(total=total, desc=desc, unit="frame")
        try:
            for i, image in enumerate(frames):
                rec = self.step(image, index=getattr(image, "frame", i))
                out.append(rec)
                if callback is not None:
                    callback(image, rec)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(
                        state=rec.state[:5], fps=f"{out.frames_per_second:.0f}"
                    )
        except VideoError as e:
            out.error = str(e)
            if on_error == "raise":
                e.result = out
                raise
        finally:
            if bar is not None:
                bar.close()
        return out

    def __str__(self):
        smooth = "one-euro smoothing" if self.smoother is not None else "no smoothing"
        return (
            f"Tracker of '{self.name}': re-detect below confidence {self.threshold:g}, "
            f"init from previous {self.init}, {smooth}"
        )


def _ms(t0):
    return 1000.0 * (time.perf_counter() - t0)
