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

__all__ = [
    "pseudo_label_68",
    "cached_pseudo_labels",
    "consensus_pseudo_labels",
    "consensus_cache",
    "consensus_images",
    "label_with_consensus",
    "convention_offset",
    "apply_offset",
    "raw_hog_box",
]


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
    exact = {}  # markup name -> _exact_rows (the same for every image of a markup)
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
        if markup.name not in exact:
            exact[markup.name] = _exact_rows(markup)
        for i68, j in exact[markup.name].items():
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


# --------------------------------------------------------------------------------------
# Unlabelled pools: consensus of several labellers
# --------------------------------------------------------------------------------------


def _central_detection(image):
    """The dlib HOG detection nearest the image centre (large faces first), or None."""
    from menpo_densereg.data.boxes import detect_faces

    for upsample in (0, 1):
        boxes = detect_faces(image, upsample=upsample)
        if boxes:
            c = np.array(image.shape, float) / 2
            dist = [
                np.linalg.norm(b.points.mean(0) - c) / np.sqrt(np.prod(b.range()))
                for b in boxes
            ]
            return boxes[int(np.argmin(dist))]
    return None


def label_with_consensus(image, labellers):
    """Detect the central face and run every labeller from that detection.

    Parameters
    ----------
    image : menpo image
    labellers : `dict` ``{name: fitter}``
        ``dlib*`` peers get the raw dlib box (their convention); other fitters the box
        mapped by :func:`menpo_densereg.data.boxes.calibrate_detector_box`.

    Returns
    -------
    record : `dict`
        ``status`` (``"ok"`` or ``"no-face"``), ``box`` (``[[top, left], [bottom,
        right]]``), ``shapes`` (``{name: (68, 2) list}``) and ``nme``: the largest
        disagreement (outer-eye NME) between the first labeller and each other one.
    """
    from menpo_densereg.data.boxes import calibrate_detector_box

    box = _central_detection(image)
    if box is None:
        return {"status": "no-face", "box": None, "shapes": {}, "nme": None}
    calibrated = calibrate_detector_box(box)
    shapes = {}
    for name, fitter in labellers.items():
        b = box if name.startswith("dlib") else calibrated
        shapes[name] = np.asarray(fitter.fit_from_bb(image, b).final_shape.points)
    names = list(shapes)
    ref = PointCloud(shapes[names[0]])
    err = max((float(nme(PointCloud(shapes[n]), ref)) for n in names[1:]), default=0.0)
    lo, hi = box.points.min(0), box.points.max(0)
    return {
        "status": "ok",
        "box": [lo.tolist(), hi.tolist()],
        "shapes": {n: np.round(s, 3).tolist() for n, s in shapes.items()},
        "nme": err,
    }


def consensus_cache(folder, versions, cache_dir=None):
    """The folder of the consensus records of pool ``folder`` by labellers ``versions``.

    ``<cache>/consensus68/<folder name>-<digest of the labellers' versions>`` (not
    created here).

    Parameters
    ----------
    folder : `str` or `Path`
        The unlabelled pool.
    versions : `dict` ``{name: str}``
        Each labeller's version.
    cache_dir : `Path`, optional
        Default :func:`menpo_densereg.cache.cache_dir`.
    """
    import hashlib
    import json

    from menpo_densereg.cache import cache_dir as default_cache

    key = {n: str(v) for n, v in versions.items()}
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()
    root = Path(cache_dir) if cache_dir else default_cache()
    return root / "consensus68" / f"{Path(folder).name}-{digest[:10]}"


def consensus_pseudo_labels(
    folder,
    labellers,
    versions,
    max_nme=0.05,
    files=None,
    cache_dir=None,
    limit=None,
    progress=True,
    label_missing=True,
    max_faces=None,
    label="first",
):
    """68-point labels of an unlabelled folder, kept where the labellers agree.

    Every image is labelled once (dlib HOG detection of the central face, then each
    labeller from it) and its record cached as ``<stem>.json`` (atomic writes) in
    ``<cache>/consensus68/<folder name>-<digest of the labellers' versions>/``, beside a
    ``provenance.json`` (labellers, their versions). Interrupted runs resume. The
    threshold is applied when reading, so changing ``max_nme`` needs no relabelling.

    The label is the *first* labeller's shape (dlib's by default: distillation from that
    peer, checked by our own chain); the others only vote. With ``label="mean"`` it is
    the mean of every labeller's shape (label fusion: errors the labellers do not share
    shrink; the agreement filter bounds how far the mean moves from each of them).

    Parameters
    ----------
    folder : `str` or `Path`
        Images (any menpo-readable format); annotations are not needed.
    labellers : `dict` ``{name: fitter or zero-argument factory}``
        At least two, in order (the first one's shape is the label); ``dlib*`` names get
        dlib's raw detector box. Factories are called only when something is labelled.
        :func:`menpo_densereg.fitting.labellers.consensus_labellers` gives the default
        ones (dlib ERT + ``densereg-aam-face``) with their versions.
    versions : `dict` ``{name: str}``
        Each labeller's version (they key the cache: new versions, new labels).
    max_nme : `float`
        Keep a face when the disagreement (outer-eye NME) is at most this.
    files : `list` of `Path`, optional
        The images to use (default: every image of ``folder``), e.g. the training side
        of :func:`menpo_densereg.data.splits.split_files`.
    cache_dir : `Path`, optional
        Default :func:`menpo_densereg.cache.cache_dir`.
    limit : `int`, optional
        Label at most this many (the first in sorted order).
    label_missing : `bool`
        With `False`, images without a cached record are skipped (not labelled).
    max_faces : `int`, optional
        Return at most this many kept faces, evenly spread over the sorted list.
    label : ``"first"`` or ``"mean"``
        The first labeller's shape, or the mean of all of them.

    Returns
    -------
    kept : `list` of ``(path, (68, 2) array, nme)``
    summary : `dict`
        ``pool``, ``n_images``, ``n_no_face``, ``n_labelled``, ``n_kept``,
        ``kept_fraction`` (of the images with a face), ``max_nme``, ``labellers``,
        ``versions``, ``label_seconds`` (time spent labelling in this call),
        ``median_nme``.
    """
    import json
    import time

    import menpo.io as mio
    from tqdm.auto import tqdm

    from menpo_densereg.atomic import atomic_write_text

    folder = Path(folder)
    factories = dict(labellers)
    labellers = tuple(factories)
    if len(labellers) < 2:
        raise ValueError(f"labellers: a consensus needs two or more, got {labellers}")
    if set(versions) != set(labellers):
        raise ValueError(f"versions: expected one per labeller {labellers}")
    if label not in ("first", "mean"):
        raise ValueError(f"label = {label!r}: expected 'first' or 'mean'")
    if files is None:
        from menpo_densereg.data.splits import _images

        files = _images(folder)
    files = [Path(f) for f in files][: limit if limit else None]
    versions = {n: str(versions[n]) for n in labellers}
    cache = consensus_cache(folder, versions, cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    prov = {"pool": str(folder), "labellers": list(labellers), "versions": versions}
    atomic_write_text(cache / "provenance.json", json.dumps(prov, indent=1))
    fitters, t0 = None, time.time()
    records = {}
    for f in tqdm(files, desc=f"consensus {folder.name}", disable=not progress):
        rec_file = cache / f"{f.stem}.json"
        if rec_file.is_file():
            records[f] = json.loads(rec_file.read_text())
            continue
        if not label_missing:
            continue
        if fitters is None:
            fitters = {
                n: f() if callable(f) and not hasattr(f, "fit_from_bb") else f
                for n, f in factories.items()
            }
        image = mio.import_image(f, normalize=True)
        rec = label_with_consensus(image, fitters)
        rec["file"] = f.name
        atomic_write_text(rec_file, json.dumps(rec))
        records[f] = rec
    seconds = time.time() - t0 if fitters is not None else 0.0
    kept, errs = [], []
    for f, rec in records.items():
        if rec["status"] != "ok":
            continue
        errs.append(rec["nme"])
        if rec["nme"] <= max_nme:
            names = labellers if label == "mean" else labellers[:1]
            shape = np.mean(
                [np.asarray(rec["shapes"][n], float) for n in names], axis=0
            )
            kept.append((f, shape, rec["nme"]))
    n_face, n_kept = len(errs), len(kept)
    if max_faces and len(kept) > int(max_faces):
        idx = np.linspace(0, len(kept) - 1, int(max_faces)).round().astype(int)
        kept = [kept[i] for i in sorted(set(idx))]
    summary = {
        "pool": folder.name,
        "n_images": len(records),
        "n_no_face": len(records) - n_face,
        "n_labelled": n_face,
        "n_kept": n_kept,
        "n_returned": len(kept),
        "kept_fraction": n_kept / n_face if n_face else 0.0,
        "max_nme": float(max_nme),
        "median_nme": float(np.median(errs)) if errs else float("nan"),
        "labellers": list(labellers),
        "versions": versions,
        "label": label,
        "label_seconds": round(seconds, 1),
        "cache": str(cache),
    }
    return kept, summary


def consensus_images(
    folder, labellers, versions, max_nme=0.05, files=None, group="PTS", **kwargs
):
    """Menpo images of :func:`consensus_pseudo_labels`' kept faces, label in ``group``.

    Each image gets attributes ``path`` and ``pseudo_nme``. Other keyword arguments go
    to :func:`consensus_pseudo_labels`.

    Returns
    -------
    images : `list`
    summary : `dict`
    """
    import menpo.io as mio

    kept, summary = consensus_pseudo_labels(
        folder, labellers, versions, max_nme=max_nme, files=files, **kwargs
    )
    images = []
    for f, pts, err in kept:
        im = mio.import_image(f, normalize=True)
        im.landmarks.clear()
        im.landmarks[group] = PointCloud(pts)
        im.path, im.pseudo_nme = f, err
        images.append(im)
    return images, summary


def convention_offset(images, peer=None, group="PTS", boxes="detector"):
    """Mean per-point offset of a peer's points from the images' own, face-normalised.

    For each image the peer is run from its own detector's box (``boxes="detector"``,
    dlib HOG, images without an overlapping detection skipped) or from the tight
    landmark box (``boxes="gt"``); the difference
    ``peer - manual`` is expressed in the frame of the manual shape (rotated so the
    outer eye corners are level, divided by their distance) and averaged. Adding the
    offset back (:func:`apply_offset`) moves a markup variant (e.g. ``ytf68``'s) to the
    peer's convention (300-W's for dlib) without the peer's per-image noise.

    Returns
    -------
    offset : ``(68, 2)`` array (units of the outer-eye distance, face frame)
    """
    from menpo_densereg.fitting.base import box_from_shape

    if boxes not in ("detector", "gt"):
        raise ValueError(f"boxes: expected 'detector' or 'gt', got {boxes!r}")
    if peer is None:
        from menpo_densereg.evaluation.peers import DlibPeer

        # raw HOG boxes as they are; landmark boxes mapped back to dlib's convention
        peer = DlibPeer(box_convention="dlib" if boxes == "detector" else "landmark")
    diffs = []
    for im in images:
        gt = np.asarray(im.landmarks[group].points, float)
        if boxes == "detector":
            box = raw_hog_box(im, PointCloud(gt))
            if box is None:
                continue
        else:
            box = box_from_shape(PointCloud(gt))
        pred = peer.fit_from_bb(im, box).final_shape.points
        R, s = _face_frame(gt)
        diffs.append((pred - gt) @ R / s)
    if not diffs:
        raise ValueError("convention_offset: no images")
    return np.mean(diffs, axis=0)


def offset_convention_images(folder, every=1, n_samples=300, group="PTS"):
    """A 68-point folder in a variant of the 300-W convention, moved to 300-W's.

    The training side of the person split (:func:`menpo_densereg.data.splits.
    training_side`) is read, ``_t`` copies are skipped and every ``every``-th frame is
    kept (frames of a clip are near-duplicates). The labels are moved by the mean
    per-point offset to dlib's ERT (:func:`convention_offset`, measured on up to
    ``n_samples`` of these frames, evenly spread), so a variant such as ``ytf68``'s
    (nose 5.8 %, brows 4.6 % of the eye distance from 300-W's) trains models that
    predict the 300-W convention. Used by the MDM and DenseReg recipes
    (``offset68``).

    Returns
    -------
    images : `list` of menpo images, labels in ``group``
    offset : ``(68, 2)`` array (units of the outer-eye distance, face frame)
    """
    from menpo_densereg.data.readers import read_pts_folder
    from menpo_densereg.data.splits import training_side

    folder = Path(folder)
    images = []
    for im in training_side(read_pts_folder(folder, on_error="skip")):
        g = im.landmarks.group_labels[0]
        if Path(im.path).stem.endswith("_t") or im.landmarks[g].n_points != 68:
            continue
        shape = im.landmarks[g]
        im.landmarks.clear()
        im.landmarks["PTS"] = shape
        images.append(im)
    images = images[:: max(1, int(every))]
    if not images:
        raise ValueError(f"offset68 {folder}: no 68-point training images")
    n = max(1, int(n_samples))
    offset = convention_offset(images[:: max(1, len(images) // n)][:n])
    for im in images:
        shape = apply_offset(im.landmarks["PTS"], offset)
        im.landmarks.clear()
        im.landmarks[group] = shape
    return images, offset


def raw_hog_box(image, gt_shape, min_iou=0.3):
    """dlib HOG's own (uncalibrated) box best overlapping the annotated face, or None.

    dlib's ERT is trained on these boxes: it gets them as they are, while our fitters
    get them through :func:`menpo_densereg.data.boxes.calibrate_detector_box`.
    """
    from menpo_densereg.data.boxes import box_from_landmarks, box_iou, detect_faces

    gt_box = box_from_landmarks(gt_shape)
    best, best_iou = None, min_iou
    for b in detect_faces(image, upsample=1):
        iou = box_iou(b, gt_box)
        if iou >= best_iou:
            best, best_iou = b, iou
    return best


def _face_frame(pts):
    """Rotation (columns: the face's y and x axes) and the outer-eye distance."""
    d = pts[45] - pts[36]  # (dy, dx) along the eyes: the face's x axis
    s = float(np.hypot(*d))
    ex = d / max(s, 1e-9)
    ey = np.array([ex[1], -ex[0]])  # perpendicular, pointing down the face
    return np.stack([ey, ex], axis=1), max(s, 1e-9)


def apply_offset(shape, offset):
    """``shape`` (``(68, 2)`` array or PointCloud) moved by :func:`convention_offset`."""
    pts = np.asarray(getattr(shape, "points", shape), float)
    R, s = _face_frame(pts)
    out = pts + (np.asarray(offset, float) * s) @ R.T
    return PointCloud(out) if hasattr(shape, "points") else out
