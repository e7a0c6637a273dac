"""Pseudo-labels: 68-point shapes for images annotated with another markup.

Training data with 68 points is scarce here, while e.g. Helen carries the 29-point LFPW
markup. :func:`pseudo_label_68` runs a 68-point peer (dlib's ERT by default) from the
face box and keeps its shape only where it *agrees with the manual annotation* on the
corresponding points (NME of the converted prediction against the manual points, with the
manual markup's normaliser, below ``max_nme``); the manual points that coincide exactly
with 68-point landmarks then replace the peer's. Rejected images are listed, not used.

This is knowledge distillation with a manual-annotation filter: models trained on these
labels inherit some of the peer's bias, so benchmarks against that peer must be read with
this in mind (the model cards say which sources each model used).
"""

from pathlib import Path

import numpy as np
from menpo.shape import PointCloud

from menpo_densereg.data.boxes import detector_box
from menpo_densereg.data.markups import (
    conversion_matrix,
    convert,
    get_markup,
    markup_for_n_points,
)
from menpo_densereg.evaluation.metrics import nme

__all__ = ["pseudo_label_68", "cached_pseudo_labels"]


def _exact_rows(source_markup):
    """``{68-index: source-index}`` for 68-point landmarks the source has exactly."""
    M = conversion_matrix("68", source_markup)  # (n_source, 68) averages
    single = [
        (int(np.flatnonzero(r)[0]), j)
        for j, r in enumerate(M)
        if np.count_nonzero(r) == 1
    ]
    counts = np.bincount([i for i, _ in single], minlength=68)
    # a 68 point used for two source points (LFPW brow top and bottom both from 68's
    # brow point) is an approximation, not a correspondence: skip it
    return {i: j for i, j in single if counts[i] == 1}


def pseudo_label_68(images, peer=None, max_nme=0.06, progress=True, group=None):
    """Add a ``"ibug68"`` landmark group to images annotated with another markup.

    Parameters
    ----------
    images : `list` of menpo images with one known-markup landmark group
    peer : fitter with ``fit_from_bb``, optional
        A 68-point fitter (default: :class:`menpo_densereg.evaluation.peers.DlibPeer`).
    max_nme : `float`
        Maximum disagreement with the manual points (their markup's normaliser).
    group : `str`, optional
        The manual group (default: the first group naming a known markup).

    Returns
    -------
    accepted : `list` of images (copies) with ``"ibug68"`` added and attribute
        ``pseudo_nme``
    rejected : `list` of ``(path, nme)``
    """
    from tqdm.auto import tqdm

    if peer is None:
        from menpo_densereg.evaluation.peers import DlibPeer

        peer = DlibPeer()
    accepted, rejected = [], []
    for image in tqdm(images, desc="pseudo-labels", disable=not progress, leave=False):
        g = group or next(
            k
            for k in image.landmarks.group_labels
            if markup_for_n_points(image.landmarks[k].n_points) is not None
        )
        manual = image.landmarks[g]
        markup = get_markup(markup_for_n_points(manual.n_points).name)
        if markup.name == "ibug68":
            accepted.append(image)
            continue
        box, _ = detector_box(image, manual, min_iou=0.2)
        pred = peer.fit_from_bb(image, box).final_shape
        err = nme(convert(pred, "68", markup), manual, markup)
        if not err <= max_nme:
            rejected.append((str(getattr(image, "path", "?")), err))
            continue
        pts = pred.points.copy()
        for i68, j in _exact_rows(markup).items():
            pts[i68] = manual.points[j]
        out = image.copy()
        out.landmarks["ibug68"] = PointCloud(pts)
        out.pseudo_nme = err
        out.path = getattr(image, "path", None)
        accepted.append(out)
    return accepted, rejected


def cached_pseudo_labels(folder, cache_dir=None, max_nme=0.06, progress=True):
    """Pseudo-label every image of a ``.pts`` folder once; reuse the cached ``.pts``.

    The 68-point shapes are written as ``<cache_dir>/<stem>.pts`` (atomically) and read
    back on later calls, so the peer runs once per image.

    Returns
    -------
    images : `list` of images with their manual group and ``"ibug68"``
    """
    from menpo_densereg.data.readers import read_pts, read_pts_folder, write_pts
    from menpo_densereg.cache import cache_dir as default_cache

    folder = Path(folder)
    cache = (
        Path(cache_dir) if cache_dir else default_cache() / f"pseudo68_{folder.name}"
    )
    images = read_pts_folder(folder, on_error="skip", progress=progress)
    todo, out = [], []
    for im in images:
        f = cache / f"{Path(im.path).stem}.pts"
        if f.is_file():
            im.landmarks["ibug68"] = read_pts(f, n_points=68)
            out.append(im)
        elif not (cache / f"{Path(im.path).stem}.rejected").is_file():
            todo.append(im)
    accepted, rejected = pseudo_label_68(todo, max_nme=max_nme, progress=progress)
    cache.mkdir(parents=True, exist_ok=True)
    for im in accepted:
        write_pts(cache / f"{Path(im.path).stem}.pts", im.landmarks["ibug68"])
    for path, err in rejected:
        (cache / f"{Path(path).stem}.rejected").write_text(f"{err}\n")
    return out + accepted
