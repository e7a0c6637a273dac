"""Errors, CED, AUC and failure rate — the numbers every result is reported with.

Protocol (DESIGN §4): NME is the mean point-to-point error divided by an explicit
normaliser chosen by the markup (68 → outer eye corners 36/45, 98 → 60/72, 29 → 8/9,
5 → eye centres, ears and unknown markups → average edge of the ground-truth box).

CED(x) is the fraction of images with NME ≤ x. ``AUC@t = ∫₀ᵗ CED(x) dx / t`` is computed
exactly (the CED is a step function: ``∫₀ᵗ 1[e ≤ x] dx = max(0, t − e)``), so no binning
error enters the table. ``FR@t`` is the fraction with NME > t.
"""

from dataclasses import dataclass

import numpy as np
from menpo.shape import PointCloud

from menpo_densereg.data.markups import get_markup, markup_for_n_points

__all__ = [
    "point_errors",
    "normaliser",
    "nme",
    "region_nme",
    "ced",
    "auc",
    "failure_rate",
    "paired_difference",
    "ErrorStats",
    "error_stats",
    "stats_table",
    "plot_ced",
    "THRESHOLDS",
]

THRESHOLDS = (0.08, 0.10)


def _pts(shape):
    return shape.points if isinstance(shape, PointCloud) else np.asarray(shape, float)


def point_errors(pred, gt):
    """Per-point Euclidean errors (pixels) between two shapes of equal size."""
    p, g = _pts(pred), _pts(gt)
    if p.shape != g.shape:
        raise ValueError(
            f"shapes differ: prediction {p.shape} vs ground truth {g.shape}"
        )
    return np.linalg.norm(p - g, axis=1)


def normaliser(gt, markup=None, kind=None):
    """The normalising distance of a ground-truth shape.

    Parameters
    ----------
    gt : `PointCloud` or ``(n, 2)`` array
    markup : `Markup` or `str`, optional
        Defaults to the markup with ``gt``'s point count.
    kind : ``"markup"`` (default), ``"box"`` or ``"diagonal"``
        ``"box"``: average edge of the GT box; ``"diagonal"``: its diagonal.
    """
    g = _pts(gt)
    if kind in ("box", "diagonal"):
        extent = np.nanmax(g, axis=0) - np.nanmin(g, axis=0)
        return float(extent.mean() if kind == "box" else np.linalg.norm(extent))
    m = get_markup(markup) if markup is not None else markup_for_n_points(len(g))
    if m is None:
        extent = np.nanmax(g, axis=0) - np.nanmin(g, axis=0)
        return float(extent.mean())
    return m.normalising_distance(g)


def nme(pred, gt, markup=None, kind=None):
    """Normalised mean error of one prediction (NaN ground-truth points are ignored)."""
    e = point_errors(pred, gt)
    d = normaliser(gt, markup, kind)
    if not d > 0:
        raise ValueError("ground truth: zero normalising distance")
    return float(np.nanmean(e) / d)


def region_nme(pred, gt, markup=None, kind=None, merge_sides=True):
    """NME of each part of a markup: ``{part: mean error of its points / normaliser}``.

    Parameters
    ----------
    pred, gt : `PointCloud` or ``(n, 2)`` arrays of the same markup
    markup : `Markup` or `str`, optional
        Defaults to the markup with ``gt``'s point count; its ``groups`` are the parts.
    kind : see :func:`normaliser`
    merge_sides : `bool`
        Pool ``left_X`` and ``right_X`` into one part ``X`` (``left_eye`` and
        ``right_eye`` become ``eye``), as 68-point studies report them.

    Raises
    ------
    ValueError
        If the markup is unknown or has no parts, or the shapes differ.
    """
    e = point_errors(pred, gt)
    m = get_markup(markup) if markup is not None else markup_for_n_points(len(e))
    if m is None or not getattr(m, "groups", None):
        raise ValueError(f"region_nme: no parts known for a {len(e)}-point markup")
    d = normaliser(gt, m, kind)
    if not d > 0:
        raise ValueError("ground truth: zero normalising distance")
    parts = {}
    for name, idx in m.groups.items():
        if merge_sides:
            for side in ("left_", "right_"):
                if name.startswith(side):
                    name = name[len(side) :]
        parts.setdefault(name, []).extend(idx)
    return {k: float(np.nanmean(e[list(v)]) / d) for k, v in parts.items()}


def ced(errors, thresholds):
    """Cumulative error distribution: fraction of ``errors`` ≤ each threshold."""
    e = np.sort(np.asarray(errors, dtype=float))
    t = np.asarray(thresholds, dtype=float)
    if e.size == 0:
        return np.zeros_like(t)
    return np.searchsorted(e, t, side="right") / e.size


def auc(errors, t):
    """Exact area under the CED on [0, t], divided by t (in [0, 1])."""
    e = np.asarray(errors, dtype=float)
    if e.size == 0:
        return float("nan")
    return float(np.mean(np.clip(t - e, 0.0, None)) / t)


def failure_rate(errors, t):
    """Fraction of errors strictly above ``t``."""
    e = np.asarray(errors, dtype=float)
    return float(np.mean(e > t)) if e.size else float("nan")


def paired_difference(errors_a, errors_b, groups=None, n_boot=4000, level=0.95, seed=0):
    """Mean of ``b - a`` over the same images, with a bootstrap interval over *people*.

    Two fitters scored on the same images: the interval resamples whole groups (the
    frames of one person are not independent, so resampling frames would make the
    interval too narrow) and takes the percentile interval of the mean difference.
    Use it to decide whether a candidate beats the shipped model on a held-out set.

    Parameters
    ----------
    errors_a, errors_b : array-like of `float`, same length
        Per-image errors of the reference and of the candidate, image by image.
    groups : array-like, optional
        The person (or any unit of independence) of each image; default: each image
        its own group.
    n_boot : `int`
        Bootstrap resamples.
    level : `float`
        Coverage of the interval.
    seed : `int`
        Seed of the resampling (the same inputs give the same interval).

    Returns
    -------
    mean, lo, hi : `float`
        The mean of ``b - a`` over images and its interval (negative: b is better).

    Raises
    ------
    ValueError
        If the lengths differ, a value is not finite or there are no images.
    """
    a = np.asarray(errors_a, dtype=float)
    b = np.asarray(errors_b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(
            f"errors_a and errors_b: expected two 1-D arrays of one length, got "
            f"{a.shape} and {b.shape}"
        )
    if a.size == 0:
        raise ValueError("errors_a, errors_b: no images")
    d = b - a
    if not np.all(np.isfinite(d)):
        raise ValueError("errors_a, errors_b: NaN or infinite errors")
    keys = np.arange(d.size) if groups is None else np.asarray(groups)
    if keys.shape != d.shape:
        raise ValueError(f"groups: expected {d.size} labels, got {keys.size}")
    _, index = np.unique(keys, return_inverse=True)
    sums = np.bincount(index, weights=d)
    counts = np.bincount(index).astype(float)
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, sums.size, size=(int(n_boot), sums.size))
    boots = sums[pick].sum(axis=1) / counts[pick].sum(axis=1)
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(boots, [tail, 100 - tail])
    return float(d.mean()), float(lo), float(hi)


@dataclass
class ErrorStats:
    """Summary statistics of a set of NMEs."""

    name: str
    n: int
    mean: float
    median: float
    p90: float
    auc: dict
    fr: dict

    def row(self):
        cells = [self.name, str(self.n)]
        cells += [f"{100 * v:.2f}" for v in (self.mean, self.median, self.p90)]
        for t in sorted(self.auc):
            cells += [f"{100 * self.auc[t]:.2f}", f"{100 * self.fr[t]:.2f}"]
        return cells

    def __str__(self):
        aucs = ", ".join(f"AUC@{t:g}={v:.3f}" for t, v in sorted(self.auc.items()))
        frs = ", ".join(f"FR@{t:g}={v:.3f}" for t, v in sorted(self.fr.items()))
        return (
            f"{self.name}: n={self.n}, mean NME={self.mean:.4f}, "
            f"median={self.median:.4f}, p90={self.p90:.4f}, {aucs}, {frs}"
        )


def error_stats(name, errors, thresholds=THRESHOLDS):
    """:class:`ErrorStats` of an array of NMEs."""
    e = np.asarray(errors, dtype=float)
    if e.size == 0:
        nan = float("nan")
        return ErrorStats(
            name,
            0,
            nan,
            nan,
            nan,
            {t: nan for t in thresholds},
            {t: nan for t in thresholds},
        )
    return ErrorStats(
        name=name,
        n=int(e.size),
        mean=float(e.mean()),
        median=float(np.median(e)),
        p90=float(np.percentile(e, 90)),
        auc={t: auc(e, t) for t in thresholds},
        fr={t: failure_rate(e, t) for t in thresholds},
    )


def stats_table(stats, normaliser_name=None, extra_columns=None):
    """A plain-text table (values in %) of several :class:`ErrorStats`.

    Parameters
    ----------
    stats : `list` of `ErrorStats`
    normaliser_name : `str`, optional
        Printed above the table ("NME normalised by ...").
    extra_columns : `dict` name -> `list` of `str`, optional
        More columns (e.g. speed), one value per row.
    """
    if not stats:
        return "(no results)"
    ts = sorted(stats[0].auc)
    header = ["method", "n", "mean%", "median%", "p90%"]
    for t in ts:
        header += [f"AUC@{t:g}%", f"FR@{t:g}%"]
    rows = [s.row() for s in stats]
    for col, values in (extra_columns or {}).items():
        header.append(col)
        for r, v in zip(rows, values):
            r.append(str(v))
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]

    def fmt(r):
        return "  ".join(
            str(c).ljust(w) if i == 0 else str(c).rjust(w)
            for i, (c, w) in enumerate(zip(r, widths))
        )

    lines = []
    if normaliser_name:
        lines.append(f"NME normalised by {normaliser_name}")
    lines += [fmt(header), "  ".join("-" * w for w in widths)]
    lines += [fmt(r) for r in rows]
    return "\n".join(lines)


def plot_ced(errors_by_method, path, max_error=0.1, title=None, xlabel=None):
    """Save a CED plot overlaying several methods (PNG, atomically).

    Parameters
    ----------
    errors_by_method : `dict` name -> array of NMEs
    path : `str` or `Path`
    max_error : `float`
        Right end of the x axis.
    """
    import matplotlib.pyplot as plt  # the backend is the caller's choice

    from menpo_densereg.atomic import atomic_save_figure

    x = np.linspace(0, max_error, 501)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, errs in errors_by_method.items():
        e = np.asarray(errs, dtype=float)
        label = f"{name} (AUC@{max_error:g}={auc(e, max_error):.3f}, n={e.size})"
        ax.step(x, ced(e, x), where="post", label=label, lw=2)
    ax.set_xlim(0, max_error)
    ax.set_ylim(0, 1)
    ax.set_xlabel(xlabel or "normalised point-to-point error")
    ax.set_ylabel("fraction of images")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    if title:
        ax.set_title(title)
    atomic_save_figure(fig, path)
    plt.close(fig)
    return path
