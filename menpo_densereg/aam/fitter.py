"""Fit patch AAMs with menpofit's Lucas–Kanade fitter, behind the project's interface.

:class:`AAMFitter` wraps ``LucasKanadeAAMFitter`` (``name``, ``markup``, ``fit_from_bb``,
``fit_from_shape``) and fits on a crop around the initial shape, so the cost does not
grow with the image size. :func:`from_fitter_dir` is the registry's entry point
(the ``train`` command's is :func:`menpo_densereg.aam.train.train_from_recipe`).
"""

from pathlib import Path

import numpy as np
from menpo.image import Image
from menpo.shape import PointCloud
from menpo.transform import Translation

from menpo_densereg.fitting.base import attach_image, check_image
from menpo_densereg.data.markups import check_shape, get_markup
from menpo_densereg.fitting.weights import WeightsError
from menpo_densereg.aam.build import load_aam, lk_algorithms, reset_pdm

__all__ = [
    "FITTER_DEFAULTS",
    "AAMFitter",
    "from_fitter_dir",
]

FITTER_DEFAULTS = {
    "algorithm": "ProjectOutInverseCompositional",
    "n_shape": [5, 12],
    "n_appearance": [30, 60],
    "max_iters": [15, 10],
    "crop_margin": 0.6,
}


def _default_per_scale(value, n_scales):
    """Per-scale default for a model with ``n_scales`` scales (finest scales last)."""
    value = list(value)
    if n_scales <= len(value):
        return value[len(value) - n_scales :]
    return [value[0]] * (n_scales - len(value)) + value


def _per_scale(value, n_scales, what):
    if value is None or np.isscalar(value):
        return [value] * n_scales
    value = list(value)
    if len(value) != n_scales:
        raise ValueError(
            f"{what}: expected {n_scales} values (one per scale), got {value}"
        )
    return value


class AAMFitter:
    """Lucas–Kanade patch-AAM fitter with the project's fitter interface.

    Parameters
    ----------
    aam : `menpofit.aam.PatchAAM` (from :func:`build_patch_aam` or :func:`load_aam`)
    name : `str`
    algorithm : `str`
        A menpofit LK AAM algorithm class name (default ``ProjectOutInverseCompositional``:
        as accurate as Wiberg here and ~20x faster, see the aam-face card).
    n_shape, n_appearance : `int`, `float` or per-scale `list`, optional
        Active shape / appearance components (menpofit semantics); default
        :data:`FITTER_DEFAULTS` (its last values for models with fewer scales).
    max_iters : `int` or per-scale `list`, optional
    crop_margin : `float`
        The image is cropped to the initial shape's box enlarged by this fraction of
        its size on each side before fitting (fitting time independent of image size).
    """

    markup = get_markup("68")

    def __init__(
        self,
        aam,
        name="patch-aam",
        algorithm=FITTER_DEFAULTS["algorithm"],
        n_shape=None,
        n_appearance=None,
        max_iters=None,
        crop_margin=FITTER_DEFAULTS["crop_margin"],
    ):
        from menpofit.aam import LucasKanadeAAMFitter

        algos = lk_algorithms()
        if algorithm not in algos:
            raise ValueError(f"algorithm: {algorithm!r} not one of {sorted(algos)}")
        n_scales = len(aam.scales)
        if n_shape is None:
            n_shape = _default_per_scale(FITTER_DEFAULTS["n_shape"], n_scales)
        if n_appearance is None:
            n_appearance = _default_per_scale(FITTER_DEFAULTS["n_appearance"], n_scales)
        if max_iters is None:
            max_iters = _default_per_scale(FITTER_DEFAULTS["max_iters"], n_scales)
        self.aam = aam
        self.name = name
        self.algorithm = algorithm
        self.n_shape = _per_scale(n_shape, n_scales, "n_shape")
        self.n_appearance = _per_scale(n_appearance, n_scales, "n_appearance")
        self.max_iters = [int(m) for m in _per_scale(max_iters, n_scales, "max_iters")]
        self.crop_margin = float(crop_margin)
        self.markup = get_markup(getattr(aam, "aam_config", {}).get("markup", "ibug68"))
        self.grey = bool(getattr(aam, "aam_config", {}).get("grey", True))
        for sm in aam.shape_models:
            reset_pdm(sm)
        self._fitter = LucasKanadeAAMFitter(
            aam,
            lk_algorithm_cls=algos[algorithm],
            n_shape=self.n_shape,
            n_appearance=self.n_appearance,
        )

    def _crop(self, image, shape):
        """Crop around ``shape`` (zero-padded outside the image, so the crop's content
        does not depend on where the image border is); crop -> image translation."""
        lo, hi = shape.bounds()
        pad = (hi - lo) * self.crop_margin
        lo = np.floor(lo - pad).astype(int)
        hi = np.ceil(hi + pad).astype(int)
        size = hi - lo + 1
        if np.any(size < 8) or np.any(size > 4 * np.array(image.shape) + 64):
            raise ValueError(
                f"initial_shape: implausible extent {size.tolist()} px for a "
                f"{image.shape[0]}x{image.shape[1]} image"
            )
        px = image.pixels
        out = np.zeros((px.shape[0],) + tuple(size), dtype=px.dtype)
        src_lo = np.maximum(lo, 0)
        src_hi = np.minimum(hi + 1, np.array(image.shape))
        if np.all(src_hi > src_lo):
            dst = src_lo - lo
            ext = src_hi - src_lo
            out[:, dst[0] : dst[0] + ext[0], dst[1] : dst[1] + ext[1]] = px[
                :, src_lo[0] : src_hi[0], src_lo[1] : src_hi[1]
            ]
        crop = Image(out, copy=False)
        if self.grey and crop.n_channels == 3:
            crop = crop.as_greyscale()
        return crop, Translation(lo.astype(float))

    def fit_from_shape(
        self, image, initial_shape, gt_shape=None, max_iters=None, **kwargs
    ):
        """Fit from an initial 68-point shape (image frame, (y, x)).

        Returns
        -------
        result : `menpofit.result.NonParametricIterativeResult`
            Per-iteration shapes, ``initial_shape`` and ``final_shape`` in the frame of
            ``image``.
        """
        from menpofit.result import NonParametricIterativeResult

        check_image(image)
        initial_shape = PointCloud(np.asarray(initial_shape.points, dtype=float))
        check_shape(initial_shape, self.markup, "initial_shape")
        crop, crop_to_image = self._crop(image, initial_shape)
        to_crop = crop_to_image.pseudoinverse()
        res = self._fitter.fit_from_shape(
            crop,
            to_crop.apply(initial_shape),
            max_iters=self.max_iters if max_iters is None else max_iters,
        )
        # menpofit's res.shapes starts with the initial shape, which the result re-adds
        shapes = [crop_to_image.apply(s) for s in res.shapes[1:]] or [
            crop_to_image.apply(res.final_shape)
        ]
        return attach_image(
            NonParametricIterativeResult(
                shapes, initial_shape=initial_shape, gt_shape=gt_shape, costs=None
            ),
            image,
        )

    def fit_from_bb(self, image, bounding_box, gt_shape=None, **kwargs):
        """Fit from a box: menpofit's mean-shape alignment to the box, then LK."""
        from menpofit.fitter import align_shape_with_bounding_box

        initial = align_shape_with_bounding_box(self.aam.reference_shape, bounding_box)
        return self.fit_from_shape(image, initial, gt_shape=gt_shape, **kwargs)

    def __str__(self):
        cfg = getattr(self.aam, "aam_config", {})
        return (
            f"AAMFitter '{self.name}': patch AAM ({cfg.get('features')} features, "
            f"scales {cfg.get('scales')}, patches {cfg.get('patch_shape')}, diagonal "
            f"{cfg.get('diagonal')}), {self.algorithm}, n_shape {self.n_shape}, "
            f"n_appearance {self.n_appearance}, iters {self.max_iters}"
        )


def _fitter_options(recipe):
    opts = {}
    for k, v in recipe.get("fit", {}).items():
        if k not in FITTER_DEFAULTS:
            raise ValueError(f"recipe [fit]: unknown option {k!r}")
        opts[k] = v
    return opts


def from_fitter_dir(path):
    """An :class:`AAMFitter` from ``fitters/<name>/`` (``[fitter] kind = "aam"``).

    The recipe's ``[aam]`` section names the model file (``weights``, default
    ``aam.safetensors``); ``[fit]`` holds fitter options (:data:`FITTER_DEFAULTS`).
    """
    path = Path(path)
    from menpo_densereg.fitting.recipes import load_recipe

    recipe = load_recipe(path)
    weights = path / recipe.get("aam", {}).get("weights", "aam.safetensors")
    if not weights.is_file():
        raise WeightsError(
            f"{weights}: model file not found (build it with "
            f"`menpo-densereg train {path}`)"
        )
    aam = load_aam(weights)
    name = recipe.get("fitter", {}).get("name", path.name)
    return AAMFitter(aam, name=name, **_fitter_options(recipe))
