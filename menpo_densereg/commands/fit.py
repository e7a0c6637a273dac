"""``menpo-densereg fit IMAGE``: landmarks (.pts) and an overlay (PNG) for a face photo.

The face is found with dlib's HOG detector (through menpodetect) unless ``--box`` gives
it; the largest detection is used, mapped to the landmark-box convention the networks
are trained with (:func:`menpo_densereg.data.boxes.calibrate_detector_box`). Landmarks are written as an iBUG ``.pts`` file (1-based
``x y``) and drawn on the image in a PNG, both atomically, into ``--out`` (default: the
image's folder) as ``<stem>_<fitter>.pts`` / ``<stem>_<fitter>.png``.
"""

import time
from pathlib import Path

from menpo_densereg.data.boxes import (
    DLIB_TO_LANDMARK_BOX,
    calibrate_detector_box,
)  # noqa: F401

__all__ = [
    "configure_parser",
    "run",
    "load_fitter_by_name",
    "parse_box",
    "calibrate_detector_box",
    "find_face",
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


def load_fitter_by_name(name):
    """Registry lookup when available, else ``fitters/<name>`` with DenseReg's loader."""
    try:
        from menpo_densereg.fitting.registry import load_fitter
    except ImportError:  # pragma: no cover - registry is part of the package
        load_fitter = None
    if load_fitter is not None:
        return load_fitter(name)
    from menpo_densereg.densereg.initialiser import from_fitter_dir

    p = Path(name)
    if not (p / "recipe.toml").is_file():
        p = Path(__file__).resolve().parents[2] / "fitters" / name
    return from_fitter_dir(p)


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


def find_face(pil, max_side=640):
    """The largest dlib HOG face box in a PIL RGB image, detected on a shrunk copy.

    Detection time grows with the image area (a 12 MP photo takes seconds); faces that
    matter for landmarking are large enough to be found at 640 px. Small images are
    upsampled once by dlib instead. Returns `None` when no face is found.
    """
    from menpo.shape import bounding_box

    from menpo_densereg.data.boxes import detect_faces

    small, scale = _shrink(pil, max_side)
    upsample = 1 if max(small.size) < 400 else 0
    boxes = detect_faces(_menpo_image(small), upsample=upsample)
    if not boxes:
        return None
    pts = boxes[0].points / scale
    return bounding_box(pts.min(0), pts.max(0))


def _save_overlay(pil, shape, box, path, max_side=1024):
    """Draw the box and landmarks on the image and write a PNG atomically.

    Drawn with Pillow rather than matplotlib (importing and rendering a matplotlib
    figure alone takes most of a second, and this command must stay well under one),
    on a copy shrunk to ``max_side`` pixels, with fast PNG compression.
    """
    import PIL.ImageDraw

    from menpo_densereg.atomic import atomic_path

    im, scale = _shrink(pil, max_side)
    draw = PIL.ImageDraw.Draw(im)
    (t, l), (b, r) = box.points.min(0) * scale, box.points.max(0) * scale
    lw = max(1, int(round(max(im.size) / 400)))
    draw.rectangle([l, t, r, b], outline=(255, 220, 0), width=lw)
    rad = max(1.5, max(im.size) / 250)
    for y, x in shape.points * scale:
        draw.ellipse(
            [x - rad, y - rad, x + rad, y + rad], fill=(0, 255, 0), outline=(0, 0, 0)
        )
    with atomic_path(path) as tmp:
        im.save(tmp, format="PNG", compress_level=1)


def _read_rgb(path):
    import PIL.Image

    try:
        with PIL.Image.open(path) as im:
            return im.convert("RGB")
    except (OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"{path}: unreadable image ({e})") from None


def run(args):
    from menpo_densereg.atomic import atomic_path

    t0 = time.perf_counter()
    if not Path(args.image).is_file():
        raise FileNotFoundError(f"{args.image}: image file not found")
    pil = _read_rgb(args.image)
    image = _menpo_image(pil)
    t1 = time.perf_counter()
    if args.box is not None:
        box = parse_box(args.box)
    else:
        found = find_face(pil)
        if found is None:
            raise ValueError(
                f"{args.image}: no face found by the dlib HOG detector; give the face "
                "box with --box top,left,bottom,right"
            )
        box = calibrate_detector_box(found)
    t2 = time.perf_counter()
    fitter = load_fitter_by_name(args.fitter)
    t3 = time.perf_counter()
    shape = fitter.fit_from_bb(image, box).final_shape
    t4 = time.perf_counter()
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
        _save_overlay(pil, shape, box, png)
        written.append(png)
    t5 = time.perf_counter()
    print(
        f"{args.image}: {shape.n_points} landmarks by {getattr(fitter, 'name', args.fitter)}"
        f" -> {', '.join(str(p) for p in written)}"
    )
    print(
        f"time: read {1000 * (t1 - t0):.0f} ms, detect {1000 * (t2 - t1):.0f} ms, load "
        f"fitter {1000 * (t3 - t2):.0f} ms, fit {1000 * (t4 - t3):.0f} ms, write "
        f"{1000 * (t5 - t4):.0f} ms; total {1000 * (t5 - t0):.0f} ms"
    )
    return 0
