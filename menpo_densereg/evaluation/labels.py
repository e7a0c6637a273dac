"""What an annotated set says about its own labels: grid rounding and frame-to-frame
consistency.

A benchmark's labels are not the truth. Two properties bound what any method can score
against them and are measurable from the labels alone:

- **rounding**: labels stored on an integer pixel grid carry a rounding error of their
  own; a method exactly at the true points still scores :func:`rounding_floor` against
  them (on small faces this is a visible part of the NME);
- **consistency**: on near-identical frames of one clip (:func:`near_duplicate_pairs`),
  independent manual labels differ by the annotator's noise, while a deterministic
  landmarker's output barely moves. Comparing the labels' frame-to-frame change with a
  known landmarker's on the same pairs (``benchmarks/ytf68_labels.py``) tells which the
  labels behave like.
"""

import numpy as np

from menpo_densereg.evaluation.metrics import _pts, normaliser

#: Mean distance of a point drawn uniformly from the unit square to its centre,
#: ``(sqrt(2) + asinh(1)) / 6``: the mean error, in grid steps, that rounding both
#: coordinates to the grid adds to an otherwise exact point.
ROUNDING_DISTANCE = float((np.sqrt(2.0) + np.arcsinh(1.0)) / 6.0)

__all__ = [
    "ROUNDING_DISTANCE",
    "integer_fraction",
    "rounding_floor",
    "near_duplicate_pairs",
]


def integer_fraction(shapes, tol=1e-6):
    """The share of coordinates that lie on the integer grid.

    Parameters
    ----------
    shapes : iterable of `PointCloud` or ``(n, 2)`` arrays
    tol : `float`
        How far from a whole number a coordinate may be and still count.

    Returns
    -------
    fraction : `float` in [0, 1]

    Raises
    ------
    ValueError
        ``shapes`` is empty.
    """
    coords = [_pts(s).ravel() for s in shapes]
    if not coords:
        raise ValueError("shapes: expected at least one shape, got none")
    c = np.concatenate(coords)
    return float(np.mean(np.abs(c - np.round(c)) <= tol))


def rounding_floor(shapes, markup=None, kind=None, step=1.0):
    """The NME that rounding the labels to a grid of ``step`` pixels adds, per shape.

    A prediction exactly at the true points, scored against labels rounded to the grid,
    has a mean point error of ``ROUNDING_DISTANCE * step`` pixels (each coordinate's
    rounding error uniform in ``[-step/2, step/2]``); divided by the shape's normaliser
    (:func:`menpo_densereg.evaluation.metrics.normaliser`, same ``markup``/``kind``) it is
    the NME no method can go below on average.

    Parameters
    ----------
    shapes : iterable of `PointCloud` or ``(n, 2)`` arrays
        The labels (their normaliser is read from them).
    markup, kind : `str`, optional
        As for :func:`~menpo_densereg.evaluation.metrics.nme`.
    step : `float`
        The grid step in pixels (1 for integer labels).

    Returns
    -------
    floor : ``(n_shapes,)`` array (a fraction, like ``nme``)

    Raises
    ------
    ValueError
        ``step`` is not positive.
    """
    if not step > 0:
        raise ValueError(f"step: expected a positive grid step, got {step!r}")
    return np.array(
        [ROUNDING_DISTANCE * step / normaliser(s, markup, kind) for s in shapes], float
    )


def _grey(image):
    px = np.asarray(image.pixels, float)
    return px.mean(axis=0) if px.shape[0] > 1 else px[0]


def near_duplicate_pairs(images, groups, max_difference=0.01):
    """Pairs of images of one group (e.g. one clip) that are nearly the same picture.

    Parameters
    ----------
    images : `list` of `menpo.image.Image`
        Pixel values in [0, 1] (menpo's ``normalize=True``).
    groups : `list` of hashable
        The group of each image (only images of one group are paired).
    max_difference : `float`
        The largest mean absolute grey-level difference (0-1 scale) of a pair.

    Returns
    -------
    pairs : `list` of ``(i, j, difference)`` with ``i < j``, sorted by difference;
        images of different sizes are never paired.

    Raises
    ------
    ValueError
        ``images`` and ``groups`` differ in length, or ``max_difference`` is negative.
    """
    if len(images) != len(groups):
        raise ValueError(
            f"groups: expected one per image ({len(images)}), got {len(groups)}"
        )
    if max_difference < 0:
        raise ValueError(f"max_difference: expected >= 0, got {max_difference!r}")
    by_group = {}
    for i, g in enumerate(groups):
        by_group.setdefault(g, []).append(i)
    greys = {}
    pairs = []
    for members in by_group.values():
        for a_pos, i in enumerate(members):
            for j in members[a_pos + 1 :]:
                if images[i].shape != images[j].shape:
                    continue
                for k in (i, j):
                    if k not in greys:
                        greys[k] = _grey(images[k])
                d = float(np.mean(np.abs(greys[i] - greys[j])))
                if d <= max_difference:
                    pairs.append((i, j, d))  # members are in index order: i < j
    pairs.sort(key=lambda p: (p[2], p[0], p[1]))
    return pairs
