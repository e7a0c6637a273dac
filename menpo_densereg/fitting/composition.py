"""Chains: an initialiser starts a refiner, with menpofit's fitter API end to end.

:class:`InitialisedFitter` runs any initialiser (anything with ``fit_from_bb`` /
``fit_from_shape``: a learned DenseReg/DeCaFA initialiser, :class:`BoxInitialiser`, a
peer) and hands its shape to any refiner's ``fit_from_shape`` (patch AAM, MDM). The
result is a menpofit :class:`~menpofit.result.NonParametricIterativeResult` whose
``initial_shape`` is the initialiser's output and ``final_shape`` the refiner's, both in
the frame of the input image, with the per-stage results, times and errors kept.

:class:`BoxInitialiser` is the classic baseline: menpofit's mean-shape alignment to the
box (:func:`menpofit.fitter.align_shape_with_bounding_box`), with a mean 68-point shape
shipped in ``menpo_densereg/data/mean_face_68.json`` or given.
"""

import functools
import json
import time
from pathlib import Path

import numpy as np
from menpo.shape import PointCloud
from menpofit.result import NonParametricIterativeResult

from menpo_densereg.fitting.base import (
    Initialiser,
    attach_image,
    box_from_shape,
    checked_image,
)
from menpo_densereg.data.markups import check_shape, convert, get_markup

__all__ = [
    "ChainResult",
    "InitialisedFitter",
    "BoxInitialiser",
    "mean_face_68",
    "from_fitter_dir",
    "estimate_yaw",
]

_MEAN_FILE = Path(__file__).resolve().parents[1] / "data" / "mean_face_68.json"


@functools.lru_cache(maxsize=1)
def _mean_face_points():
    with open(_MEAN_FILE, encoding="utf-8") as f:
        points = np.asarray(json.load(f)["points"], dtype=float)
    points.flags.writeable = False
    return points


def mean_face_68():
    """The shipped mean 68-point face shape (``PointCloud``, (y, x), diagonal 100).

    The file is read once; each call returns a new `PointCloud` (a copy).
    """
    return PointCloud(_mean_face_points().copy())


class BoxInitialiser(Initialiser):
    """Mean shape aligned to the bounding box (menpofit's classic initialisation).

    Parameters
    ----------
    mean_shape : `PointCloud`, optional
        Default: :func:`mean_face_68`. Any markup works if ``markup`` is given.
    markup : `str` or `Markup`
        Markup of ``mean_shape`` (default 68 points).
    name : `str`
    """

    def __init__(self, mean_shape=None, markup="68", name="box"):
        self.markup = get_markup(markup)
        mean_shape = mean_face_68() if mean_shape is None else mean_shape
        pts = np.asarray(getattr(mean_shape, "points", mean_shape), dtype=float)
        check_shape(pts, self.markup, "mean_shape")
        self.mean_shape = PointCloud(pts)
        self.name = name

    @classmethod
    def for_refiner(cls, refiner, name="box"):
        """The box start for ``refiner``: the shipped mean face for 68 points, else the
        refiner's own mean shape (MDM ``mean_shape``, AAM reference shape)."""
        markup = get_markup(getattr(refiner, "markup", None) or "68")
        if markup.name == "ibug68":
            return cls(name=name)
        mean = getattr(refiner, "mean_shape", None)
        if mean is None and hasattr(refiner, "aam"):
            mean = refiner.aam.reference_shape
        if mean is None:
            raise ValueError(
                f"box initialiser: no mean {markup.name} shape for refiner "
                f"{_name(refiner)!r}"
            )
        return cls(mean, markup=markup, name=name)

    def initialise(self, image, bounding_box):
        from menpofit.fitter import align_shape_with_bounding_box

        return align_shape_with_bounding_box(self.mean_shape, bounding_box), None

    def __str__(self):
        return f"BoxInitialiser '{self.name}': mean {self.markup.name} shape aligned to the box"


class ChainResult(NonParametricIterativeResult):
    """Result of an :class:`InitialisedFitter`.

    ``shapes`` are the initialiser's shape followed by the refiner's iterations (when
    the refiner reports them), ``initial_shape`` is the initialiser's shape and
    ``final_shape`` the refiner's. ``stages`` maps ``"initialiser"`` / ``"refiner"`` to
    the stage results, ``stage_shapes`` to their final shapes (in the chain's markup),
    and ``stage_times`` to their wall-clock seconds. ``skipped`` says why the refiner
    did not run (``""`` when it did): then ``final_shape`` is the initialiser's shape
    and ``stages`` has no ``"refiner"``.
    """

    def __init__(
        self,
        shapes,
        initial_shape,
        image=None,
        gt_shape=None,
        stages=None,
        stage_shapes=None,
        stage_times=None,
        confidence=None,
        skipped="",
    ):
        super().__init__(
            shapes, initial_shape=initial_shape, image=None, gt_shape=gt_shape
        )
        attach_image(self, image)  # no copy of the pixels (menpofit's copies them)
        self.stages = stages or {}
        self.stage_shapes = stage_shapes or {}
        self.stage_times = stage_times or {}
        self.confidence = confidence
        self.skipped = str(skipped)

    def stage_errors(self, error_fn=None, gt_shape=None):
        """Error of each stage's shape against the ground truth.

        Parameters
        ----------
        error_fn : callable ``(shape, gt_shape) -> float``, optional
            Default: NME with the markup's normaliser (68 points: outer eye corners).
        gt_shape : `PointCloud`, optional
            Default: the result's ``gt_shape``.

        Returns
        -------
        errors : `dict` ``{"initialiser": e0, "refiner": e1}``
        """
        gt = gt_shape if gt_shape is not None else self.gt_shape
        if gt is None:
            raise ValueError("stage_errors: no ground-truth shape (pass gt_shape)")
        if error_fn is None:
            from menpo_densereg.evaluation.metrics import nme

            error_fn = nme
        return {k: float(error_fn(s, gt)) for k, s in self.stage_shapes.items()}


def _as_markup(shape, source, target, what):
    if source is None or target is None or source.name == target.name:
        return shape
    return convert(shape, source, target)


class InitialisedFitter:
    """An initialiser followed by a refiner, exposing menpofit's fitter API.

    Parameters
    ----------
    initialiser : object with ``fit_from_bb`` (and ``fit_from_shape``), ``markup``
    refiner : object with ``fit_from_shape(image, initial_shape, gt_shape=None)``
    name : `str`, optional
        Default ``"<initialiser>+<refiner>"``.
    refine_max_yaw : `float`, optional
        Degrees. With 68 points, the head yaw of the initialiser's shape is estimated
        by a rigid fit of the 3D face template (:func:`estimate_yaw`, ~4 ms); beyond
        this the refiner is not run and the initialiser's shape is the result
        (``result.skipped`` says so). For refiners trained on near-frontal faces only:
        the patch AAM roughly doubles a learned start's error at profile. Default: always
        refine.

    The initialiser's shape is converted to the refiner's markup when they differ
    (e.g. 98 -> 68) through :func:`menpo_densereg.data.markups.convert`.

    Any menpofit fitter works as the refiner, e.g. your own
    ``LucasKanadeAAMFitter``::

        fitter = InitialisedFitter(load_fitter("densereg-face"), my_menpofit_fitter)
        result = fitter.fit_from_bb(image, box, max_iters=20)

    Keyword arguments of ``fit_from_bb`` / ``fit_from_shape`` (``max_iters``,
    ``return_costs``, ...) are passed on to the refiner's ``fit_from_shape``.
    """

    def __init__(self, initialiser, refiner, name=None, refine_max_yaw=None):
        for obj, what in ((initialiser, "initialiser"), (refiner, "refiner")):
            if not hasattr(
                obj, "fit_from_bb" if what == "initialiser" else "fit_from_shape"
            ):
                raise TypeError(f"{what}: {type(obj).__name__} has no fitter interface")
        self.initialiser = initialiser
        self.refiner = refiner
        self.markup = get_markup(getattr(refiner, "markup", None) or "68")
        init_markup = getattr(initialiser, "markup", None)
        self._init_markup = get_markup(init_markup) if init_markup is not None else None
        if self._init_markup is not None and self._init_markup.name != self.markup.name:
            from menpo_densereg.data.markups import can_convert

            if not can_convert(self._init_markup, self.markup):
                raise ValueError(
                    f"initialiser gives {self._init_markup.name} landmarks, refiner needs "
                    f"{self.markup.name}: no known correspondence"
                )
        self.name = name or f"{_name(initialiser)}+{_name(refiner)}"
        if refine_max_yaw is not None:
            refine_max_yaw = float(refine_max_yaw)
            if not 0.0 < refine_max_yaw <= 90.0:
                raise ValueError(
                    f"refine_max_yaw: expected degrees in (0, 90], got {refine_max_yaw}"
                )
        self.refine_max_yaw = refine_max_yaw

    def _skip_reason(self, init_shape):
        """Why the refiner should not run on ``init_shape`` (``""``: it should)."""
        if self.refine_max_yaw is None or self.markup.name != "ibug68":
            return ""
        yaw = estimate_yaw(init_shape)
        if yaw is not None and abs(yaw) > self.refine_max_yaw:
            return (
                f"estimated |yaw| {abs(yaw):.0f} deg > refine_max_yaw "
                f"{self.refine_max_yaw:g}"
            )
        return ""

    def _run(self, image, init_call, gt_shape, refiner_kwargs=None):
        # the input is checked once for every stage (checked_image)
        with checked_image(image):
            return self._run_stages(image, init_call, gt_shape, refiner_kwargs)

    def _run_stages(self, image, init_call, gt_shape, refiner_kwargs):
        t0 = time.perf_counter()
        init_res = init_call()
        t1 = time.perf_counter()
        init_shape = PointCloud(np.asarray(init_res.final_shape.points, dtype=float))
        init_shape = _as_markup(
            init_shape, self._init_markup, self.markup, "initialiser"
        )
        skipped = self._skip_reason(init_shape)
        if skipped:
            return ChainResult(
                [init_shape],
                initial_shape=init_shape,
                image=image,
                gt_shape=gt_shape,
                stages={"initialiser": init_res},
                stage_shapes={"initialiser": init_shape},
                stage_times={"initialiser": t1 - t0},
                confidence=getattr(init_res, "confidence", None),
                skipped=skipped,
            )
        ref_res = self.refiner.fit_from_shape(
            image, init_shape, gt_shape=gt_shape, **(refiner_kwargs or {})
        )
        t2 = time.perf_counter()
        final = PointCloud(np.asarray(ref_res.final_shape.points, dtype=float))
        # the refiner's iterations (menpofit results list the initial shape first when
        # they have one); ChainResult puts the initialiser's shape in front
        ref_shapes = list(getattr(ref_res, "shapes", None) or [])
        if ref_shapes and getattr(ref_res, "initial_shape", None) is not None:
            ref_shapes = ref_shapes[1:]
        shapes = [PointCloud(np.asarray(s.points, float)) for s in ref_shapes]
        if not shapes or not np.array_equal(shapes[-1].points, final.points):
            shapes.append(final)
        return ChainResult(
            shapes,
            initial_shape=init_shape,
            image=image,
            gt_shape=gt_shape,
            stages={"initialiser": init_res, "refiner": ref_res},
            stage_shapes={"initialiser": init_shape, "refiner": final},
            stage_times={"initialiser": t1 - t0, "refiner": t2 - t1},
            confidence=getattr(init_res, "confidence", None),
        )

    def fit_from_bb(self, image, bounding_box, gt_shape=None, **kwargs):
        """Initialise from ``bounding_box`` then refine; `ChainResult` in the image frame.

        ``kwargs`` (e.g. ``max_iters``) go to the refiner's ``fit_from_shape``.
        """
        return self._run(
            image,
            lambda: self.initialiser.fit_from_bb(image, bounding_box),
            gt_shape,
            kwargs,
        )

    def fit_from_shape(self, image, initial_shape, gt_shape=None, **kwargs):
        """Initialise from a rough shape (the initialiser's ``fit_from_shape``), refine.

        ``kwargs`` (e.g. ``max_iters``) go to the refiner's ``fit_from_shape``.
        """
        if hasattr(self.initialiser, "fit_from_shape"):
            call = lambda: self.initialiser.fit_from_shape(image, initial_shape)  # noqa
        else:
            box = box_from_shape(initial_shape)
            call = lambda: self.initialiser.fit_from_bb(image, box)  # noqa
        return self._run(image, call, gt_shape, kwargs)

    def __str__(self):
        gate = (
            f", refined up to |yaw| {self.refine_max_yaw:g} deg"
            if self.refine_max_yaw is not None
            else ""
        )
        return (
            f"InitialisedFitter '{self.name}': {_name(self.initialiser)} -> "
            f"{_name(self.refiner)} ({self.markup.name}{gate})"
        )


def estimate_yaw(shape):
    """Head yaw (degrees) of 68 landmarks, from a rigid fit of the 3D face template.

    Returns `None` for shapes the template cannot be fitted to (degenerate, non-finite).
    """
    from menpo_densereg.template.groundtruth import fit_template

    pts = np.asarray(getattr(shape, "points", shape), dtype=float)
    try:
        fit = fit_template(pts, nonrigid=False, n_iters=2)
    except ValueError:
        return None
    return float(fit.yaw_pitch_roll[0])


def _name(fitter):
    return getattr(fitter, "name", type(fitter).__name__)


def _load_named(name, base):
    """A fitter by name: ``"box"``, or one the registry knows (or a sibling folder)."""
    if name == "box":
        return BoxInitialiser()
    sibling = Path(base).parent / name
    try:
        from menpo_densereg.fitting.registry import load_fitter
    except ImportError:  # pragma: no cover - registry always present in the package
        load_fitter = None
    if (sibling / "recipe.toml").is_file() and load_fitter is not None:
        return load_fitter(str(sibling))
    if load_fitter is None:
        raise ValueError(f"fitter {name!r}: cannot be resolved")
    return load_fitter(name)


def with_initialiser_options(initialiser, options, where, name):
    """``initialiser.with_options(**options)``, or ``initialiser`` when there are none.

    Shared by chains (``[chain] initialiser_options``) and refiner recipes that train on
    a chain's start (``[data] initialiser_options`` of MDM).

    Raises
    ------
    ValueError
        Naming ``where`` (the recipe and key) and ``name`` (the initialiser): the
        options are not a table, the initialiser takes no options, or it rejects them.
    """
    if not options:
        return initialiser
    if not isinstance(options, dict):
        raise ValueError(f"{where}: {name!r} = {options!r}: expected a table")
    if not hasattr(initialiser, "with_options"):
        raise ValueError(f"{where}: the initialiser {name!r} takes no options")
    try:
        return initialiser.with_options(**options)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: {name!r}: {e}") from e


def from_fitter_dir(path):
    """An :class:`InitialisedFitter` from ``fitters/<name>/`` (``[fitter] kind = "chain"``).

    ``[fitter]`` (or ``[chain]``) names ``initialiser = "<fitter name>" | "box"`` and
    ``refiner = "<fitter name>"``; names resolve to sibling folders under ``fitters/``
    first, then through :func:`menpo_densereg.fitting.registry.load_fitter`.
    ``[chain] initialiser_options`` (a table, e.g. ``{ n_components = 7 }``) gives the
    chain its own copy of the initialiser with those options (its ``with_options``),
    so a refiner can keep the start it was trained on while the initialiser's own
    recipe changes.
    """
    from menpo_densereg.fitting.recipes import load_recipe

    path = Path(path)
    recipe = load_recipe(path)
    fitter = recipe.get("fitter", {})
    chain = dict(fitter)
    chain.update(recipe.get("chain", {}))
    missing = [k for k in ("initialiser", "refiner") if k not in chain]
    if missing:
        raise ValueError(f"{path}/recipe.toml: chain recipe lacks {missing}")
    refiner = _load_named(chain["refiner"], path)
    if chain["initialiser"] == "box":
        initialiser = BoxInitialiser.for_refiner(refiner)
    else:
        initialiser = _load_named(chain["initialiser"], path)
    initialiser = with_initialiser_options(
        initialiser,
        chain.get("initialiser_options"),
        f"{path}/recipe.toml: initialiser_options",
        chain["initialiser"],
    )
    return InitialisedFitter(
        initialiser,
        refiner,
        name=fitter.get("name", path.name),
        refine_max_yaw=chain.get("refine_max_yaw"),
    )
