"""``menpo-densereg fit INPUT...``: landmarks (.pts) and overlays (PNG) for face photos.

``INPUT`` is any mix of image files, folders (their images, not recursive) and glob
patterns; all are fitted in one process with one loaded fitter. Faces are found by
``--detector`` (default: the cascade of :mod:`menpo_densereg.data.detectors`) unless
``--box`` gives the box; **every** detected face is fitted, largest first, each box
mapped to the landmark-box convention the networks are trained with
(:func:`menpo_densereg.data.detectors.calibrate_box`, with the calibration of the
detector that found it). The detection call lives in one helper, :func:`find_faces`.

Outputs go to ``--out`` (default ``out/fit``, never the input's folder), atomically:
``<stem>_<fitter>.pts`` for the largest face, ``<stem>_<fitter>_face<k>.pts`` for the
k-th (k >= 2), iBUG ``.pts`` (1-based ``x y``), and one ``<stem>_<fitter>.png`` overlay
per image with every face drawn. ``--json FILE`` (``-`` for stdout) writes the results
machine-readably: per image, the faces with their box and points in menpo's (y, x), and
``refiner_skipped`` (why a chain left the face unrefined, e.g. beyond its
``refine_max_yaw``; empty when it refined it).

A fitter whose markup does not suit the input (an ear fitter on a face detector's box)
gets a warning on stderr.
"""

import glob
import json
import sys
import time
from pathlib import Path

__all__ = [
    "configure_parser",
    "run",
    "load_fitter_by_name",
    "parse_box",
    "calibrate_detector_box",
    "find_faces",
    "find_face",
    "expand_inputs",
    "markup_warning",
    "IMAGE_EXTENSIONS",
    "DEFAULT_OUT",
    "DEFAULT_FITTER",
]

#: image file extensions taken from a folder or a glob
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".tif", ".tiff", ".gif")

#: default output folder (relative to the working directory)
DEFAULT_OUT = Path("out") / "fit"

#: default fitter: the DenseReg paper's headline chain (DenseReg + PCA clean-up -> MDM),
#: the most accurate of ours at its speed (README, *Held-out people*); it needs torch.
#: ``--fitter densereg-face-pca`` (the initialiser alone: held-out faces68 3.80 against
#: 3.32 %, large pose 8.01 against 5.72 %) runs on numpy without importing torch, which
#: saves ~2 s of start-up for one photo.
DEFAULT_FITTER = "densereg-mdm-face"


def calibrate_detector_box(box):
    """Map a dlib HOG face box to the landmark-box convention (see
    :func:`menpo_densereg.data.boxes.calibrate_detector_box`)."""
    from menpo_densereg.data.boxes import calibrate_detector_box as calibrate

    return calibrate(box)


def configure_parser(parser):
    parser.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="face photos (jpg, png, ...), folders of photos, or glob patterns",
    )
    parser.add_argument(
        "--fitter",
        default=DEFAULT_FITTER,
        help=f"shipped fitter name or fitter folder (default: {DEFAULT_FITTER}, "
        "DenseReg + PCA -> MDM; densereg-face-pca runs without torch)",
    )
    parser.add_argument(
        "--box",
        default=None,
        help="face box 'top,left,bottom,right' in pixels (default: every face the "
        "--detector finds)",
    )
    parser.add_argument(
        "--detector",
        default="cascade",
        choices=("hog", "mmod", "haar", "profile", "cascade"),  # DETECTOR_NAMES
        help="face detector: hog, mmod, haar, profile or cascade (default: cascade; "
        "dlib HOG, then dlib's CNN where HOG is unsure, then the profile detector, "
        "then OpenCV Haar)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help=f"output folder (default: {DEFAULT_OUT})",
    )
    parser.add_argument("--no-overlay", action="store_true", help="write only the .pts")
    parser.add_argument(
        "--json",
        default=None,
        metavar="FILE",
        help="also write the results as JSON to FILE ('-' for stdout)",
    )


def expand_inputs(inputs):
    """Image paths from files, folders and glob patterns, in order, without repeats.

    Raises
    ------
    FileNotFoundError
        An input that is no file, no folder and a glob matching no image.
    """
    paths, seen = [], set()

    def add(p):
        key = str(Path(p).resolve())
        if key not in seen:
            seen.add(key)
            paths.append(Path(p))

    for item in inputs:
        p = Path(item)
        if p.is_file():
            add(p)
        elif p.is_dir():
            found = sorted(
                q for q in p.iterdir() if q.suffix.lower() in IMAGE_EXTENSIONS
            )
            if not found:
                raise FileNotFoundError(
                    f"{p}: folder has no image ({IMAGE_EXTENSIONS})"
                )
            for q in found:
                add(q)
        elif glob.has_magic(str(item)):
            found = sorted(
                Path(q)
                for q in glob.glob(str(item), recursive=True)
                if Path(q).is_file() and Path(q).suffix.lower() in IMAGE_EXTENSIONS
            )
            if not found:
                raise FileNotFoundError(f"{item}: pattern matches no image")
            for q in found:
                add(q)
        else:
            raise FileNotFoundError(f"{item}: image file not found")
    return paths


def parse_box(text):
    """``"t,l,b,r"`` -> menpo bounding box; a clear `ValueError` otherwise."""
    from menpo.shape import bounding_box

    try:
        t, l, b, r = (float(x) for x in str(text).split(","))
    except ValueError:
        raise ValueError(
            f"--box: expected 'top,left,bottom,right' numbers, got {text!r}"
        ) from None
    if b <= t or r <= l:
        raise ValueError(
            f"--box: empty box {text!r} (need bottom > top and right > left)"
        )
    return bounding_box((t, l), (b, r))


def check_box_in_image(box, shape, what="--box"):
    """Refuse a box less than half inside an image of ``shape`` ``(H, W)``."""
    (t, l), (b, r) = box.points.min(0), box.points.max(0)
    h, w = shape[:2]
    inside = max(0.0, min(b, h) - max(t, 0)) * max(0.0, min(r, w) - max(l, 0))
    if inside < 0.5 * (b - t) * (r - l):
        raise ValueError(
            f"{what}: box top,left,bottom,right = {t:g},{l:g},{b:g},{r:g} lies (mostly) "
            f"outside the {w}x{h} image (rows 0..{h}, columns 0..{w})"
        )
    return box


def load_fitter_by_name(name):
    """A fitter through :func:`menpo_densereg.fitting.registry.load_fitter`."""
    from menpo_densereg.fitting.registry import load_fitter

    return load_fitter(name)


def markup_warning(fitter, detected):
    """A warning text when the fitter's markup does not suit the input, else `None`.

    The detector finds faces: a fitter of a non-face markup (ears) run on a face box
    gives meaningless points.
    """
    name = _markup_name(fitter) if detected else None
    if name is not None and name.startswith("ear"):
        return (
            f"warning: fitter {getattr(fitter, 'name', '?')!r} gives {name} (ear) "
            "landmarks but the boxes come from a face detector; its points will not "
            "mean much. Give an ear box with --box, or use a face fitter."
        )
    return None


def _markup_name(fitter):
    from menpo_densereg.data.markups import get_markup

    try:
        return get_markup(fitter.markup).name
    except (AttributeError, ValueError):
        return None


def _shrink(pil, max_side):
    """A copy of a PIL image shrunk to ``max_side`` pixels; returns (image, scale)."""
    import PIL.Image

    scale = min(1.0, max_side / float(max(pil.size)))
    if scale < 1.0:
        size = (max(1, round(pil.size[0] * scale)), max(1, round(pil.size[1] * scale)))
        return pil.resize(size, PIL.Image.BILINEAR), scale
    return pil.copy(), 1.0


def _menpo_image(pil):
    """An 8-bit RGB PIL image as a float32 menpo `Image` in [0, 1]."""
    import numpy as np
    from menpo.image import Image

    arr = np.asarray(pil, dtype=np.float32) / np.float32(255.0)
    return Image(np.ascontiguousarray(np.moveaxis(arr, -1, 0)), copy=False)


def find_faces(pil, max_side=640, detector="hog", calibrate=False, sources=False):
    """Every face box of ``detector`` in a PIL RGB image (largest first), detected on
    a shrunk copy, in the full image's pixel frame.

    Detection time grows with the image area (a 12 MP photo takes seconds); faces that
    matter for landmarking are large enough to be found at 640 px. Small images are
    upsampled by the detectors themselves. Returns an empty list when no face is found.
    The boxes are the detector's own, or with ``calibrate`` mapped to the landmark box
    (:func:`menpo_densereg.data.detectors.calibrate_box`); with ``sources`` each comes
    as ``(box, name of the detector that found it)``.
    """
    from menpo_densereg.data.detectors import detect
    from menpo_densereg.fitting.base import box_from_shape

    small, scale = _shrink(pil, max_side)
    found = detect(_menpo_image(small), detector, calibrate=calibrate)
    boxes = [box_from_shape(b.points / scale) for b, _ in found]
    if sources:
        return [(b, d.detector) for b, (_, d) in zip(boxes, found)]
    return boxes


def find_face(pil, max_side=640):
    """The largest face box of :func:`find_faces`, or `None`."""
    boxes = find_faces(pil, max_side=max_side)
    return boxes[0] if boxes else None


def _save_overlay(pil, shapes, boxes, path, max_side=1024):
    """Draw the boxes and landmarks on the image and write a PNG atomically.

    Drawn with Pillow rather than matplotlib (importing and rendering a matplotlib
    figure alone takes most of a second), on a copy shrunk to ``max_side`` pixels, with
    fast PNG compression.
    """
    import PIL.ImageDraw

    from menpo_densereg.atomic import atomic_path

    im, scale = _shrink(pil, max_side)
    draw = PIL.ImageDraw.Draw(im)
    lw = max(1, int(round(max(im.size) / 400)))
    rad = max(1.5, max(im.size) / 250)
    for shape, box in zip(shapes, boxes):
        (t, l), (b, r) = box.points.min(0) * scale, box.points.max(0) * scale
        draw.rectangle([l, t, r, b], outline=(255, 220, 0), width=lw)
        for y, x in shape.points * scale:
            draw.ellipse(
                [x - rad, y - rad, x + rad, y + rad],
                fill=(0, 255, 0),
                outline=(0, 0, 0),
            )
    with atomic_path(path) as tmp:
        im.save(tmp, format="PNG", compress_level=1)


def _read_rgb(path):
    """8-bit RGB PIL image through the one image reader (as ``benchmark`` reads it)."""
    from menpo_densereg.data.readers import read_image, to_pil_rgb

    return to_pil_rgb(read_image(path))


def _fit_one(path, fitter, fitter_label, args, out):
    """Fit every face of one image; returns its JSON record."""
    import menpo.io as mio

    from menpo_densereg.atomic import atomic_path
    from menpo_densereg.data.readers import read_image, to_pil_rgb
    from menpo_densereg.fitting.base import fit_from_detection

    t0 = time.perf_counter()
    # the one reader of every command: 16-bit, grey, RGBA, palette as in benchmark
    image = read_image(path)
    pil = to_pil_rgb(image)  # for the detector and the overlay
    t1 = time.perf_counter()
    if args.box is not None:
        found = [(check_box_in_image(parse_box(args.box), image.shape), "landmarks")]
    else:
        detector = getattr(args, "detector", "cascade")
        found = find_faces(pil, detector=detector, calibrate=True, sources=True)
        if not found:
            raise ValueError(
                f"{path}: no face found by the {detector} detector; give the face "
                "box with --box top,left,bottom,right"
            )
    boxes = [b for b, _ in found]
    t2 = time.perf_counter()
    results = [fit_from_detection(fitter, image, box, src) for box, src in found]
    shapes = [r.final_shape for r in results]
    t3 = time.perf_counter()
    stem = f"{Path(path).stem}_{fitter_label}"
    faces = []
    for k, (shape, box) in enumerate(zip(shapes, boxes)):
        pts_path = out / (f"{stem}.pts" if k == 0 else f"{stem}_face{k + 1}.pts")
        with atomic_path(pts_path) as tmp:
            mio.export_landmark_file(shape, tmp, extension=".pts", overwrite=True)
        faces.append(
            {
                "box": box.points.min(0).tolist() + box.points.max(0).tolist(),
                "points": shape.points.tolist(),
                "pts": str(pts_path),
                # a chain that left its start unrefined says why (refine_max_yaw)
                "refiner_skipped": getattr(results[k], "skipped", ""),
            }
        )
    png = None
    if not args.no_overlay:
        png = out / f"{stem}.png"
        _save_overlay(pil, shapes, boxes, png)
    t4 = time.perf_counter()
    times = {"read": t1 - t0, "detect": t2 - t1, "fit": t3 - t2, "write": t4 - t3}
    return {
        "image": str(path),
        "n_faces": len(faces),
        "faces": faces,
        "overlay": None if png is None else str(png),
        "times_s": {k: round(v, 4) for k, v in times.items()},
    }


def run(args):
    from menpo_densereg.atomic import atomic_path

    t0 = time.perf_counter()
    paths = expand_inputs(args.inputs)
    fitter = load_fitter_by_name(args.fitter)
    t_load = time.perf_counter() - t0
    warning = markup_warning(fitter, detected=args.box is None)
    if warning:
        print(warning, file=sys.stderr)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    label = Path(str(args.fitter)).name
    name = getattr(fitter, "name", args.fitter)
    records, failed = [], []
    for path in paths:
        try:
            rec = _fit_one(path, fitter, label, args, out)
        except ValueError as e:
            if len(paths) == 1:
                raise
            print(f"{path}: skipped: {e}", file=sys.stderr)
            failed.append({"image": str(path), "error": str(e)})
            continue
        records.append(rec)
        written = [f["pts"] for f in rec["faces"]] + (
            [rec["overlay"]] if rec["overlay"] else []
        )
        n = rec["n_faces"]
        tm = rec["times_s"]
        print(
            f"{path}: {n} face{'s' if n != 1 else ''}, "
            f"{len(rec['faces'][0]['points'])} landmarks each by {name} -> "
            f"{', '.join(written)}"
        )
        for k, face in enumerate(rec["faces"]):
            if face["refiner_skipped"]:
                print(f"  face {k + 1}: not refined ({face['refiner_skipped']})")
        print(
            f"  time: read {1000 * tm['read']:.0f} ms, detect {1000 * tm['detect']:.0f}"
            f" ms, fit {1000 * tm['fit']:.0f} ms, write {1000 * tm['write']:.0f} ms"
        )
    total = time.perf_counter() - t0
    n_faces = sum(r["n_faces"] for r in records)
    print(
        f"{len(records)} image{'s' if len(records) != 1 else ''}, {n_faces} "
        f"face{'s' if n_faces != 1 else ''} fitted"
        + (f", {len(failed)} skipped" if failed else "")
        + f"; load fitter {1000 * t_load:.0f} ms, total {1000 * total:.0f} ms"
    )
    if args.json is not None:
        doc = {
            "fitter": str(args.fitter),
            "fitter_name": str(name),
            "markup": _markup_name(fitter),
            "points": "menpo (y, x), 0-based pixels",
            "box": "top, left, bottom, right",
            "warning": warning,
            "images": records,
            "skipped": failed,
        }
        text = json.dumps(doc, indent=1)
        if args.json == "-":
            print(text)
        else:
            with atomic_path(args.json) as tmp:
                Path(tmp).write_text(text, encoding="utf-8")
    if not records:
        raise ValueError("no image could be fitted")
    return 0
