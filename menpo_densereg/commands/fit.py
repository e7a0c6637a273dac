"""``menpo-densereg fit IMAGE``: landmarks (.pts) and an overlay (PNG) for a face photo.

The face is found with dlib's HOG detector (through menpodetect) unless ``--box`` gives
it; the largest detection is used, mapped to the landmark-box convention the networks
are trained with (:func:`calibrate_detector_box`). Landmarks are written as an iBUG ``.pts`` file (1-based
``x y``) and drawn on the image in a PNG, both atomically, into ``--out`` (default: the
image's folder) as ``<stem>_<fitter>.pts`` / ``<stem>_<fitter>.png``.
"""

import time
from pathlib import Path

__all__ = [
    "configure_parser",
    "run",
    "load_fitter_by_name",
    "parse_box",
    "calibrate_detector_box",
]


def configure_parser(parser):
    parser.add_argument("image", type=Path, help="face photo (jpg, png, ...)")
    parser.add_argument(
        "--fitter", default="densereg-face", help="shipped fitter name or fitter folder"
    )
    parser.add_argument(
        "--box",
        default=None,
        help="face box 'top,left,bottom,right' in pixels (default: dlib HOG detector)",
    )
    parser.add_argument("--out", type=Path, default=None, help="output folder")
    parser.add_argument("--no-overlay", action="store_true", help="write only the .pts")


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


#: dlib HOG box -> tight landmark box: centre shift (fraction of the dlib box side,
#: y then x) and side ratio, measured on the 14 training faces of densereg-face that
#: dlib detects (afw, 300wlp, video68, wflw98): mean shift (0.096, 0.043), ratio
#: (0.906, 0.940); the networks are trained on jittered landmark boxes.
DLIB_TO_LANDMARK_BOX = ((0.096, 0.0), (0.906, 0.94))


def calibrate_detector_box(box):
    """Map a dlib HOG face box to the landmark-box convention the networks expect."""
    from menpo.shape import bounding_box

    lo, hi = box.points.min(0), box.points.max(0)
    side = hi - lo
    centre = (lo + hi) / 2 + side * DLIB_TO_LANDMARK_BOX[0]
    half = side * DLIB_TO_LANDMARK_BOX[1] / 2
    return bounding_box(centre - half, centre + half)


def load_fitter_by_name(name):
    """Registry lookup when available, else ``fitters/<name>`` with DenseReg's loader."""
    try:
        from ..registry import load_fitter
    except ImportError:  # pragma: no cover - registry is part of the package
        load_fitter = None
    if load_fitter is not None:
        return load_fitter(name)
    from ..densereg_initialiser import from_fitter_dir

    p = Path(name)
    if not (p / "recipe.toml").is_file():
        p = Path(__file__).resolve().parents[2] / "fitters" / name
    return from_fitter_dir(p)


def _save_overlay(image, shape, box, path):
    """Draw the box and landmarks on the image and write a PNG atomically.

    Drawn with Pillow rather than matplotlib: importing and rendering a matplotlib
    figure alone takes most of a second, and this command must stay well under one.
    """
    import numpy as np
    import PIL.Image
    import PIL.ImageDraw

    from ..atomic import atomic_path

    px = np.clip(np.moveaxis(image.pixels, 0, -1), 0, 1)
    if px.shape[-1] == 1:
        px = np.repeat(px, 3, axis=-1)
    im = PIL.Image.fromarray((px * 255).round().astype(np.uint8), "RGB")
    draw = PIL.ImageDraw.Draw(im)
    (t, l), (b, r) = box.points.min(0), box.points.max(0)
    lw = max(1, int(round(max(im.size) / 400)))
    draw.rectangle([l, t, r, b], outline=(255, 220, 0), width=lw)
    rad = max(1.5, max(im.size) / 250)
    for y, x in shape.points:
        draw.ellipse(
            [x - rad, y - rad, x + rad, y + rad], fill=(0, 255, 0), outline=(0, 0, 0)
        )
    with atomic_path(path) as tmp:
        im.save(tmp, format="PNG")


def run(args):
    from ..atomic import atomic_path
    from ..readers import read_image

    t0 = time.perf_counter()
    if not Path(args.image).is_file():
        raise FileNotFoundError(f"{args.image}: image file not found")
    image = read_image(args.image)
    if args.box is not None:
        box = parse_box(args.box)
    else:
        from ..boxes import detect_faces

        boxes = detect_faces(image, upsample=1)
        if not boxes:
            raise ValueError(
                f"{args.image}: no face found by the dlib HOG detector; give the face "
                "box with --box top,left,bottom,right"
            )
        box = calibrate_detector_box(boxes[0])
    t1 = time.perf_counter()
    fitter = load_fitter_by_name(args.fitter)
    t2 = time.perf_counter()
    if image.n_channels not in (1, 3):
        image = image.as_greyscale() if image.n_channels != 4 else image
    result = fitter.fit_from_bb(image, box)
    shape = result.final_shape
    t3 = time.perf_counter()
    out = Path(args.out) if args.out is not None else Path(args.image).parent
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{Path(args.image).stem}_{Path(str(args.fitter)).name}"
    pts_path = out / f"{stem}.pts"
    import menpo.io as mio

    with atomic_path(pts_path) as tmp:
        mio.export_landmark_file(shape, tmp, extension=".pts", overwrite=True)
    written = [pts_path]
    if not args.no_overlay:
        png = out / f"{stem}.png"
        _save_overlay(image, shape, box, png)
        written.append(png)
    t4 = time.perf_counter()
    print(
        f"{args.image}: {shape.n_points} landmarks by {getattr(fitter, 'name', args.fitter)}"
        f" -> {', '.join(str(p) for p in written)}"
    )
    print(
        f"time: detect {1000 * (t1 - t0):.0f} ms (incl. reading), load fitter "
        f"{1000 * (t2 - t1):.0f} ms, fit {1000 * (t3 - t2):.0f} ms, write "
        f"{1000 * (t4 - t3):.0f} ms"
    )
    return 0
