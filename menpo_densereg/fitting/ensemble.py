"""Ensembles of initialisers: the weighted mean of several initialisers' shapes.

Two learned initialisers of different kinds (DenseReg reads landmarks from a dense UV
field, DeCaFA from attention maps) make errors that are only partly correlated, so the
mean of their shapes is a better start than either on average. An
:class:`AverageInitialiser` is an :class:`~menpo_densereg.fitting.base.Initialiser`:
it can start any refiner in a chain (``[fitter] kind = "chain"``) like a single one.

Recipe (``[fitter] kind = "average"``)::

    [fitter]
    kind = "average"
    name = "densereg-decafa-face"
    initialisers = ["densereg-face-pca", "decafa-face"]
    shape_weights = [0.5, 0.5]      # optional; normalised to sum to 1
"""

from pathlib import Path

import numpy as np
from menpo.shape import PointCloud

from menpo_densereg.data.markups import check_shape, get_markup
from menpo_densereg.fitting.base import Initialiser

__all__ = ["AverageInitialiser", "from_fitter_dir"]


def _shape_and_confidence(initialiser, image, bounding_box):
    """``(points, confidence or None)`` of one member, in the image frame."""
    if hasattr(initialiser, "initialise"):
        shape, confidence = initialiser.initialise(image, bounding_box)
    else:  # any menpofit-style fitter
        shape, confidence = (
            initialiser.fit_from_bb(image, bounding_box).final_shape,
            None,
        )
    pts = np.asarray(getattr(shape, "points", shape), dtype=float)
    return pts, None if confidence is None else np.asarray(confidence, dtype=float)


class AverageInitialiser(Initialiser):
    """The weighted mean of several initialisers' shapes of one markup.

    Parameters
    ----------
    initialisers : `list`
        Two or more initialisers (anything with ``initialise(image, box)`` returning
        ``(shape, confidence)``, or with ``fit_from_bb``), all giving ``markup``.
    shape_weights : `list` of `float`, optional
        One non-negative weight per initialiser (default equal), normalised to sum to 1.
    markup : `str`
        The markup every member returns (default 68 points).
    name : `str`, optional

    Notes
    -----
    The confidence of the mean is the weighted mean of the members' confidences where
    every member gives one (else `None`).
    """

    def __init__(self, initialisers, shape_weights=None, markup="68", name=None):
        members = list(initialisers)
        if len(members) < 2:
            raise ValueError(
                f"initialisers: an average needs at least two, got {len(members)}"
            )
        if shape_weights is None:
            w = np.ones(len(members))
        else:
            w = np.asarray(shape_weights, dtype=float)
            if w.shape != (len(members),):
                raise ValueError(
                    f"shape_weights: expected one weight per initialiser "
                    f"({len(members)}), got {list(np.atleast_1d(shape_weights))}"
                )
            if not np.all(np.isfinite(w)) or np.any(w < 0) or not w.sum() > 0:
                raise ValueError(
                    "shape_weights: expected finite non-negative weights with a "
                    f"positive sum, got {w.tolist()}"
                )
        self.markup = get_markup(markup).name
        for m in members:
            own = getattr(m, "markup", None)
            if own is not None and get_markup(own).name != self.markup:
                raise ValueError(
                    f"initialisers: {getattr(m, 'name', type(m).__name__)!r} gives "
                    f"{get_markup(own).name} landmarks, not {self.markup}"
                )
        self.initialisers = members
        self.shape_weights = w / w.sum()
        self.name = name or " + ".join(
            str(getattr(m, "name", type(m).__name__)) for m in members
        )

    def with_options(self, **options):
        """A copy whose members take ``options`` (e.g. ``n_components=7``).

        Each option goes, through their ``with_options``, to the members that have an
        attribute of that name (``n_components`` to DenseReg+PCA, not to DeCaFA); an
        option that no member has is refused.
        """
        unknown = sorted(
            k for k in options if not any(hasattr(m, k) for m in self.initialisers)
        )
        if unknown:
            raise ValueError(f"options {unknown}: no member of {self.name!r} has them")
        members = []
        for m in self.initialisers:
            mine = {k: v for k, v in options.items() if hasattr(m, k)}
            members.append(m.with_options(**mine) if mine else m)
        return type(self)(members, self.shape_weights, self.markup, self.name)

    def initialise(self, image, bounding_box):
        """The weighted mean shape (image frame) and its confidence."""
        shapes, confidences = [], []
        for m in self.initialisers:
            pts, conf = _shape_and_confidence(m, image, bounding_box)
            check_shape(pts, self.markup, f"{getattr(m, 'name', 'initialiser')} shape")
            shapes.append(pts)
            confidences.append(conf)
        w = self.shape_weights
        mean = np.tensordot(w, np.stack(shapes), axes=1)
        confidence = None
        if all(c is not None for c in confidences):
            confidence = np.tensordot(w, np.stack(confidences), axes=1)
        return PointCloud(mean, copy=False), confidence

    def __str__(self):
        parts = ", ".join(
            f"{getattr(m, 'name', type(m).__name__)} x {wi:.2f}"
            for m, wi in zip(self.initialisers, self.shape_weights)
        )
        return f"AverageInitialiser '{self.name}' -> {self.markup}: mean of {parts}"


def from_fitter_dir(path):
    """An :class:`AverageInitialiser` from ``fitters/<name>/`` (``kind = "average"``).

    ``[fitter] initialisers`` names the members (sibling folders first, then the
    registry, as a chain's names); ``shape_weights`` and ``markup`` are optional.
    """
    from menpo_densereg.fitting.composition import _load_named
    from menpo_densereg.fitting.recipes import load_recipe

    path = Path(path)
    recipe = load_recipe(path)
    fitter = recipe["fitter"]
    names = fitter.get("initialisers")
    if not names:
        raise ValueError(f"{path}/recipe.toml: [fitter] initialisers = [...] missing")
    members = [_load_named(n, path) for n in names]
    return AverageInitialiser(
        members,
        shape_weights=fitter.get("shape_weights"),
        markup=fitter.get("markup", "68"),
        name=fitter.get("display_name") or fitter.get("name", path.name),
    )
