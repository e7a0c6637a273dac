"""Is a candidate better than the shipped model? Paired comparisons of per-image errors.

Two methods scored on the same images (one run of ``benchmarks/heldout_people.py``, whose
``per_image.csv`` rows carry ``set``, ``image``, ``boxes``, ``method`` and ``nme``) are
compared image by image: :func:`compare_methods` pairs every method whose name holds the
reference's tag with the method named with the candidate's tag in its place (so one call
covers a refiner in every chain: ``"MDM[mdm-face]"`` against ``"MDM[_mdm8]"``) and gives
the mean difference with a bootstrap interval over *people*
(:func:`~menpo_densereg.evaluation.metrics.paired_difference`): the frames of one
``ytf68`` person form one group, any other image is its own.
"""

import math
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from menpo_densereg.data.splits import person_of
from menpo_densereg.evaluation.metrics import paired_difference

__all__ = ["PairedRow", "compare_methods", "paired_table", "person_group"]


def person_group(image):
    """The unit of independence of one image: its ``ytf68`` person, else the image.

    Parameters
    ----------
    image : `str` or `Path`

    Returns
    -------
    group : `str`
    """
    if "ytf68" in str(image):
        try:
            return person_of(image)
        except ValueError:
            pass
    return str(image)


@dataclass(frozen=True)
class PairedRow:
    """Candidate minus reference on one set, in points of NME %."""

    set: str
    method: str
    n_images: int
    n_groups: int
    mean: float
    lo: float
    hi: float

    @property
    def verdict(self):
        """``"better"`` / ``"worse"`` when the interval excludes 0, else ``"tie"``."""
        return "better" if self.hi < 0 else "worse" if self.lo > 0 else "tie"

    def __str__(self):
        return (
            f"{self.set} / {self.method}: {self.mean:+.3f} "
            f"[{self.lo:+.3f}, {self.hi:+.3f}] over {self.n_images} images of "
            f"{self.n_groups} people: {self.verdict}"
        )


def compare_methods(rows, reference, candidate, boxes="detector", n_boot=4000):
    """Paired differences of ``candidate`` against ``reference`` on every set.

    Parameters
    ----------
    rows : iterable of `dict`
        Per-image records with ``set``, ``image``, ``boxes``, ``method`` and ``nme``
        (a fraction; NaN where a fit failed: such images are left out of the pair).
    reference, candidate : `str`
        Tags inside method names, e.g. ``"[decafa-face]"`` and ``"[_decafa7]"``.
    boxes : `str`
        Which box protocol's rows to read.
    n_boot : `int`
        Bootstrap resamples.

    Returns
    -------
    rows : `list` of `PairedRow`
        One per (set, reference method) that has a candidate counterpart, in the order
        the records first show them.

    Raises
    ------
    ValueError
        If ``reference`` and ``candidate`` are empty or equal.
    """
    if not reference or not candidate or reference == candidate:
        raise ValueError(
            f"reference / candidate: expected two different tags, got "
            f"{reference!r} / {candidate!r}"
        )
    by = defaultdict(dict)  # (set, method) -> image -> nme
    for r in rows:
        if r["boxes"] == boxes:
            by[(r["set"], r["method"])][r["image"]] = float(r["nme"])
    out = []
    for (s, method), ref in by.items():
        if reference not in method:
            continue
        cand = by.get((s, method.replace(reference, candidate)))
        if not cand:
            continue
        images = [
            i
            for i in ref
            if i in cand and math.isfinite(ref[i]) and math.isfinite(cand[i])
        ]
        if not images:
            continue
        a = np.array([ref[i] for i in images]) * 100
        b = np.array([cand[i] for i in images]) * 100
        groups = [person_group(i) for i in images]
        mean, lo, hi = paired_difference(a, b, groups, n_boot=n_boot)
        out.append(PairedRow(s, method, len(images), len(set(groups)), mean, lo, hi))
    return out


def paired_table(paired, reference, candidate, boxes="detector"):
    """A markdown table of :func:`compare_methods`'s rows, with a title line.

    Parameters
    ----------
    paired : `list` of `PairedRow`
    reference, candidate, boxes : `str`
        As given to :func:`compare_methods` (for the title).

    Returns
    -------
    text : `str`
    """
    lines = [
        f"{candidate} - {reference}, {boxes} boxes, NME points of %, "
        "95 % bootstrap interval over people",
        "",
        "| set | method (reference) | images | groups | diff | 95 % interval | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for p in paired:
        # a set named "|yaw| 45-90" must not split its cell
        name, method = (t.replace("|", "\\|") for t in (p.set, p.method))
        lines.append(
            f"| {name} | {method} | {p.n_images} | {p.n_groups} | {p.mean:+.3f} | "
            f"[{p.lo:+.3f}, {p.hi:+.3f}] | {p.verdict} |"
        )
    return "\n".join(lines) + "\n"
