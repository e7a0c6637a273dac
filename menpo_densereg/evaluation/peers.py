"""Peer fitters that the benchmark compares against: dlib's ensemble of regression trees.

:class:`DlibPeer` runs dlib's pre-trained 68-point shape predictor (Kazemi & Sullivan,
CVPR 2014, trained on iBUG 300-W) shipped by the ``face_recognition_models`` package,
through menpofit's :class:`menpofit.dlib.DlibWrapper`, started from the same bounding
boxes as every other fitter of the benchmark. dlib is an optional dependency: install the
``peers`` extra (``pip install menpo-densereg[peers]``).
"""

import importlib.util
from pathlib import Path

import numpy as np
from menpo.shape import bounding_box as _bb
from menpofit.result import Result

from menpo_densereg.fitting.base import attach_image, box_from_shape, check_image
from menpo_densereg.data.markups import get_markup

__all__ = ["DlibPeer", "dlib_model_path", "from_fitter_dir", "PEERS_HINT"]

PEERS_HINT = (
    "the dlib peer needs the optional 'peers' extra: "
    "pip install 'menpo-densereg[peers]' (dlib-bin and face-recognition-models)"
)

_MODEL_FILE = "shape_predictor_68_face_landmarks.dat"


def _require_dlib():
    try:
        import dlib  # noqa: F401
        import menpofit.dlib  # noqa: F401
    except ImportError as e:
        raise ImportError(f"{PEERS_HINT} ({e})") from None


def dlib_model_path():
    """Path of dlib's 68-point predictor shipped by ``face_recognition_models``.

    ``face_recognition_models.pose_predictor_model_location()`` imports ``pkg_resources``
    (absent from setuptools-free environments), so the file is located from the
    package's install folder instead; the result is the same file.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"{PEERS_HINT} (face_recognition_models is not installed)")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "models" / _MODEL_FILE
        if path.is_file():
            return path
    raise ImportError(
        f"{PEERS_HINT} (face_recognition_models has no models/{_MODEL_FILE})"
    )


class DlibPeer:
    """dlib's pre-trained 68-point ERT predictor with the menpofit fitter API.

    Parameters
    ----------
    model_path : `str` or `Path`, optional
        A dlib ``shape_predictor`` file; default: the 68-point model of
        ``face_recognition_models``.
    name : `str`
        Name shown in tables.
    box_scale : `float`
        The box handed to dlib is scaled about its centre by this factor (1 = as is).
    box_convention : ``"landmark"`` or ``"dlib"``
        The boxes given to :meth:`fit_from_bb`. ``"landmark"`` (the project's
        convention: the tight landmark box, or a detector box calibrated to it) maps
        them back to dlib's HOG-detector convention, on which its predictor was
        trained (the inverse of the ``hog`` calibration, one place:
        :func:`menpo_densereg.data.detectors.uncalibrate_box`); ``"dlib"`` hands them
        over as they are. A landmark-convention box found by one of dlib's own HOG
        detectors is handed back exactly as that detector gave it when the caller says
        so (``fit_from_bb(..., box_source="hog-side")``; the benchmarks do): dlib then
        gets its own box, not one remapped through the frontal calibration.

    Raises
    ------
    ImportError
        When dlib / face_recognition_models are missing (names the ``peers`` extra).
    """

    markup = get_markup("68")
    #: :meth:`fit_from_bb` takes ``box_source`` (the benchmarks pass the detector name)
    uses_box_source = True

    def __init__(
        self, model_path=None, name="dlib-ert", box_scale=1.0, box_convention="landmark"
    ):
        _require_dlib()
        from menpofit.dlib import DlibWrapper

        self.model_path = Path(model_path) if model_path else dlib_model_path()
        if not self.model_path.is_file():
            raise ValueError(f"model_path: {self.model_path} does not exist")
        self.name = name
        self.box_scale = float(box_scale)
        if box_convention not in ("landmark", "dlib"):
            raise ValueError(
                f"box_convention: 'landmark' or 'dlib', got {box_convention!r}"
            )
        self.box_convention = box_convention
        self._wrapper = DlibWrapper(str(self.model_path))

    def _box(self, bounding_box, box_source=None):
        if self.box_convention == "landmark":
            from menpo_densereg.data.detectors import uncalibrate_box

            own = isinstance(box_source, str) and box_source.split("-")[0] == "hog"
            bounding_box = uncalibrate_box(bounding_box, box_source if own else "hog")
        pts = np.asarray(bounding_box.points, dtype=float)
        lo, hi = pts.min(axis=0), pts.max(axis=0)
        if self.box_scale != 1.0:
            c, half = (lo + hi) / 2, (hi - lo) / 2 * self.box_scale
            lo, hi = c - half, c + half
        return _bb(lo, hi)

    def fit_from_bb(
        self, image, bounding_box, gt_shape=None, box_source=None, **kwargs
    ):
        """Predict the 68 landmarks of the face in ``bounding_box``.

        Parameters
        ----------
        image : `menpo.image.Image`
        bounding_box : `PointCloud`
            In ``box_convention``.
        gt_shape : `PointCloud`, optional
        box_source : `str`, optional
            The detector that found a landmark-convention box (``Detection.detector``):
            one of dlib's HOG detectors (``"hog"``, ``"hog-side"``,
            ``"hog-side-mirrored"``...) gets its own box back; anything else is mapped
            to the frontal HOG convention.

        Returns
        -------
        result : `menpofit.result.Result`
            ``final_shape`` in the (y, x) frame of ``image``; ``initial_shape`` is `None`
            (dlib starts from its own mean shape inside the box).
        """
        check_image(image)
        box = self._box(bounding_box, box_source)
        # menpofit's DlibWrapper.fit_from_bb stacks a generator with np.vstack, which
        # numpy 2 refuses; its model and conversions are used directly instead.
        from menpofit.dlib.conversion import (
            dlib_full_object_detection_to_pointcloud,
            image_to_dlib_pixels,
            pointcloud_to_dlib_rect,
        )

        pixels = image_to_dlib_pixels(image)
        pred = self._wrapper.algorithm.dlib_model(pixels, pointcloud_to_dlib_rect(box))
        shape = dlib_full_object_detection_to_pointcloud(pred)  # numpy-2 safe (compat)
        return attach_image(Result(shape, initial_shape=None, gt_shape=gt_shape), image)

    def fit_from_shape(self, image, initial_shape, gt_shape=None, **kwargs):
        """dlib cannot start from a shape: fits from the shape's tight box."""
        return self.fit_from_bb(
            image, box_from_shape(initial_shape), gt_shape=gt_shape, **kwargs
        )

    def __str__(self):
        return (
            f"DlibPeer '{self.name}': dlib ERT 68-point predictor ({self.model_path.name})"
            f", box scale {self.box_scale:g}, {self.box_convention} boxes"
        )


def from_fitter_dir(path):
    """A :class:`DlibPeer` from ``fitters/<name>/recipe.toml`` (``[fitter] kind = "dlib"``).

    Optional keys in ``[dlib]``: ``model_path`` (relative to the folder), ``box_scale``.
    """
    from menpo_densereg.fitting.recipes import load_recipe

    path = Path(path)
    recipe = load_recipe(path)
    fitter = recipe.get("fitter", {})
    cfg = recipe.get("dlib", {})
    model = cfg.get("model_path")
    if model:
        model = path / model
    return DlibPeer(
        model_path=model,
        name=fitter.get("name", path.name),
        box_scale=cfg.get("box_scale", 1.0),
    )
