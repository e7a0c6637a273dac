"""Dataset readers: menpo images with named landmark groups, from the field's formats.

Formats
-------
- iBUG ``.pts`` folder trees (any number of points; 300-W, Helen, LFPW, AFW, ears...):
  :func:`read_pts_folder`.
- 300VW (``<clip>/annot/NNNNNN.pts`` with frames in ``<clip>/imgs`` or ``<clip>/frames``,
  or frames and .pts side by side): :func:`read_300vw`.
- WFLW annotation lists (98 x-y pairs, box, 6 attribute flags, image path):
  :func:`read_wflw`.
- CelebA landmark lists (``list_landmarks_*.txt``, 5 points): :func:`read_celeba`.
- COCO-style keypoint json: :func:`read_coco_keypoints`.

Every reader returns menpo images whose landmarks are in group ``markup.name`` when the
point count names a known markup (``"ibug68"``, ``"wflw98"``, ``"lfpw29"``, ``"five"``,
``"ear55"``) and in group ``"pts"`` otherwise; ``image.path`` is the image file. Images are
float RGB (or grey) in [0, 1]; RGBA/palette images lose their alpha, 16-bit images are
scaled to [0, 1].

Bad input raises :class:`DatasetError` naming the file. Folder readers take
``on_error="raise" | "skip"``; with ``"skip"`` they return the bad items in
``reader.bad`` (path, reason) instead of dying.
"""

import json
from pathlib import Path

import numpy as np
from menpo.image import Image
from menpo.shape import PointCloud

from menpo_densereg.data.markups import markup_for_n_points

__all__ = [
    "builtin_faces",
    "DatasetError",
    "ReadResult",
    "read_image",
    "to_pil_rgb",
    "max_pixels",
    "MAX_PIXELS",
    "PtsFolder",
    "read_pts",
    "write_pts",
    "read_pts_folder",
    "read_300vw",
    "read_wflw",
    "read_celeba",
    "read_coco_keypoints",
    "group_name",
    "IMAGE_EXTENSIONS",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".bmp", ".tif", ".tiff")


class DatasetError(ValueError):
    """An unusable file or folder; the message names it."""


class ReadResult(list):
    """A list of menpo images, plus ``bad``: the ``(path, reason)`` of skipped items."""

    def __init__(self, images=(), bad=()):
        super().__init__(images)
        self.bad = list(bad)

    def __str__(self):
        return f"{len(self)} images read, {len(self.bad)} bad items skipped"


def group_name(n_points):
    """Landmark group name for a shape of ``n_points`` points."""
    m = markup_for_n_points(n_points)
    return m.name if m is not None else "pts"


#: Default largest image read (pixels): 64 MP, far above any face photo, far below
#: the decompression bombs (a 166 kB PNG of 13,000 x 13,000 pixels decodes to GBs).
MAX_PIXELS = 64_000_000


def max_pixels():
    """The pixel limit of :func:`read_image` (``$MENPO_DENSEREG_MAX_PIXELS`` or 64 MP)."""
    import os

    env = os.environ.get("MENPO_DENSEREG_MAX_PIXELS")
    if env:
        try:
            value = int(float(env))
        except ValueError:
            raise ValueError(
                f"MENPO_DENSEREG_MAX_PIXELS={env!r}: expected a number of pixels"
            ) from None
        if value < 4:
            raise ValueError(f"MENPO_DENSEREG_MAX_PIXELS={env!r}: expected >= 4")
        return value
    return MAX_PIXELS


def read_image(path, max_pixels=None):
    """Read an image file into a float menpo `Image` in [0, 1] (RGB or grey).

    The one image reader of every command (``fit``, ``benchmark``, the dataset
    readers): 8- and 16-bit, grey, RGB, RGBA and palette files all give the same
    [0, 1] float32 pixels (16-bit is scaled by 65535, never clipped to 8 bits; alpha
    is dropped; palettes are expanded). The image size is checked from the header
    before anything is decoded.

    Parameters
    ----------
    path : `str` or `Path`
    max_pixels : `int`, optional
        Largest accepted width x height (default :func:`max_pixels`).

    Raises
    ------
    DatasetError
        Missing, unreadable, empty, or larger than ``max_pixels`` (a decompression
        bomb is refused before it is decoded).
    """
    import warnings

    import PIL.Image

    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: image file not found")
    limit = int(max_pixels) if max_pixels is not None else globals()["max_pixels"]()
    try:
        with warnings.catch_warnings():
            # PIL warns above its own limit (89 MP) and refuses at twice it: follow
            # ours, up to PIL's hard refusal (reported below with our message)
            warnings.simplefilter(
                "error" if limit <= PIL.Image.MAX_IMAGE_PIXELS else "ignore",
                PIL.Image.DecompressionBombWarning,
            )
            with PIL.Image.open(path) as im:
                w, h = im.size
                if w * h > limit:
                    raise DatasetError(
                        f"{path}: image of {w}x{h} = {w * h / 1e6:.1f} MP exceeds the "
                        f"{limit / 1e6:.1f} MP limit (a decompression bomb?); raise "
                        "it with MENPO_DENSEREG_MAX_PIXELS if the image is genuine"
                    )
                im.load()
                pixels = _pil_to_pixels(im)
    except DatasetError:
        raise
    except (PIL.Image.DecompressionBombError, PIL.Image.DecompressionBombWarning) as e:
        raise DatasetError(
            f"{path}: image exceeds the {limit / 1e6:.1f} MP limit (a decompression "
            f"bomb? {e}); raise it with MENPO_DENSEREG_MAX_PIXELS if the image is "
            "genuine"
        ) from None
    except (OSError, SyntaxError, ValueError) as e:
        raise DatasetError(f"{path}: unreadable image ({e})") from None
    if pixels.shape[1] < 2 or pixels.shape[2] < 2:
        raise DatasetError(f"{path}: image is empty ({pixels.shape[1:]})")
    image = Image(pixels, copy=False)
    image.path = path
    return image


def _pil_to_pixels(im):
    """Channels-first float32 pixels in [0, 1] from a loaded PIL image."""
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.float32)
        top = 65535.0 if mode != "I" or arr.max() > 255 else 255.0
        pixels = (arr / np.float32(top))[None]
    elif mode == "F":
        pixels = np.asarray(im, dtype=np.float32)[None]
    elif mode in ("L", "1"):
        pixels = (np.asarray(im.convert("L"), dtype=np.float32) / np.float32(255))[None]
    else:  # RGB, RGBA, P, CMYK, YCbCr...
        arr = np.asarray(im.convert("RGB"))
        pixels = np.empty((3,) + arr.shape[:2], dtype=np.float32)
        for c in range(3):
            np.divide(arr[..., c], np.float32(255), out=pixels[c], dtype=np.float32)
    pixels = np.ascontiguousarray(pixels, dtype=np.float32)
    np.clip(pixels, 0, 1, out=pixels)
    return pixels


def to_pil_rgb(image):
    """An 8-bit RGB PIL image of a menpo image read by :func:`read_image`.

    For detectors and overlays: grey images are repeated on three channels.
    """
    import PIL.Image

    px = np.asarray(image.pixels, dtype=np.float32)
    if px.shape[0] == 1:
        px = np.repeat(px, 3, axis=0)
    arr = np.moveaxis(np.clip(px[:3] * 255 + 0.5, 0, 255).astype(np.uint8), 0, -1)
    return PIL.Image.fromarray(np.ascontiguousarray(arr), "RGB")


def read_pts(path, n_points=None, allow_outside=True):
    """Read an iBUG ``.pts`` file (1-based ``x y``) into a (y, x) 0-based `PointCloud`.

    Parameters
    ----------
    path : `str` or `Path`
    n_points : `int`, optional
        Expected point count.

    Raises
    ------
    DatasetError
        Missing file, malformed content, a count that disagrees with the header or with
        ``n_points``, or non-finite coordinates.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: landmark file not found")
    try:
        text = path.read_text(encoding="utf-8", errors="strict")
    except (UnicodeDecodeError, OSError) as e:
        raise DatasetError(f"{path}: unreadable landmark file ({e})") from None
    header_n = None
    for line in text.splitlines():
        if line.strip().lower().startswith("n_points"):
            try:
                header_n = int(line.split(":")[1])
            except (IndexError, ValueError):
                raise DatasetError(
                    f"{path}: malformed n_points line {line!r}"
                ) from None
    if "{" not in text or "}" not in text:
        raise DatasetError(f"{path}: not a .pts file (no '{{ ... }}' block)")
    body = text[text.index("{") + 1 : text.rindex("}")]
    rows = []
    for i, line in enumerate(body.strip().splitlines()):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2:
            raise DatasetError(f"{path}: point {i} is {line!r}, expected 'x y'")
        try:
            rows.append([float(parts[0]), float(parts[1])])
        except ValueError:
            raise DatasetError(f"{path}: point {i} is not numeric ({line!r})") from None
    pts = np.asarray(rows, dtype=float).reshape(-1, 2)
    if len(pts) == 0:
        raise DatasetError(f"{path}: no points")
    if header_n is not None and header_n != len(pts):
        raise DatasetError(
            f"{path}: header says n_points: {header_n} but {len(pts)} points follow"
        )
    if n_points is not None and len(pts) != n_points:
        raise DatasetError(f"{path}: {len(pts)} points, expected {n_points}")
    if not np.all(np.isfinite(pts)):
        raise DatasetError(f"{path}: NaN or infinite coordinates")
    return PointCloud(pts[:, ::-1] - 1.0)


def write_pts(path, shape):
    """Write a (y, x) 0-based shape as an iBUG ``.pts`` file (atomically)."""
    from menpo_densereg.atomic import atomic_write_text

    pts = shape.points if isinstance(shape, PointCloud) else np.asarray(shape)
    lines = [f"{x + 1:.3f} {y + 1:.3f}" for y, x in pts]
    text = f"version: 1\nn_points: {len(pts)}\n{{\n" + "\n".join(lines) + "\n}\n"
    atomic_write_text(path, text)


def _attach(image, points, group=None, path=None):
    points = points if isinstance(points, PointCloud) else PointCloud(points)
    image.landmarks[group or group_name(points.n_points)] = points
    return image


def _check_inside(image, shape, path, tolerance=0.25):
    """Landmarks may sit slightly outside the frame (the ear with x = -1), not far."""
    h, w = image.shape
    pts = shape.points
    margin = tolerance * np.array([h, w])
    if np.any(pts < -margin) or np.any(pts > np.array([h, w]) + margin):
        raise DatasetError(
            f"{path}: landmarks lie far outside the {w}x{h} image (wrong file?)"
        )


def _find_image(stem_path):
    for ext in IMAGE_EXTENSIONS + tuple(e.upper() for e in IMAGE_EXTENSIONS):
        p = stem_path.with_suffix(ext)
        if p.is_file():
            return p
    return None


def _collect(items, loader, on_error, progress, desc):
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    out = ReadResult()
    if progress:
        from tqdm.auto import tqdm

        items = tqdm(items, desc=desc, leave=False)
    for item in items:
        try:
            out.append(loader(item))
        except DatasetError as e:
            if on_error == "raise":
                raise
            if isinstance(item, tuple):  # (image, landmarks) pair or (line no, text)
                item = next((i for i in item if i is not None), item)
            out.bad.append((str(item), str(e)))
    return out


def _load_pair(pair, n_points=None, max_pixels=None):
    img_path, pts_path = pair
    if img_path is None:
        raise DatasetError(f"{pts_path}: no image beside the landmark file")
    shape = read_pts(pts_path, n_points=n_points)
    image = read_image(img_path, max_pixels=max_pixels)
    _check_inside(image, shape, pts_path)
    image.landmarks_path = pts_path
    return _attach(image, shape)


def _pts_pairs(folder, recursive=True):
    """``[(image path or None, .pts path)]`` of a folder tree, sorted by .pts path."""
    if not folder.is_dir():
        raise DatasetError(f"{folder}: folder not found")
    pts_files = sorted(folder.glob("**/*.pts" if recursive else "*.pts"))
    if not pts_files:
        raise DatasetError(f"{folder}: no .pts landmark files found")
    return [(_find_image(p), p) for p in pts_files]


def read_pts_folder(
    folder, recursive=True, n_points=None, on_error="raise", progress=False
):
    """Read every ``image + .pts`` pair of a folder tree (sorted by path).

    Parameters
    ----------
    folder : `str` or `Path`
    recursive : `bool`
    n_points : `int`, optional
        Expected point count (a file with another count is bad).
    on_error : ``"raise"`` or ``"skip"``
    progress : `bool`

    Returns
    -------
    images : `ReadResult`

    Raises
    ------
    DatasetError
        Missing or empty folder; a bad item when ``on_error="raise"``.
    """
    folder = Path(folder)
    pairs = _pts_pairs(folder, recursive)
    return _collect(
        pairs,
        lambda pair: _load_pair(pair, n_points),
        on_error,
        progress,
        f"reading {folder.name}",
    )


class PtsFolder:
    """A folder tree of ``image + .pts`` pairs read lazily, one image at a time.

    The pairs are listed up front (cheap: no image is opened); iterating reads, yields
    and forgets one image after another, so the memory a consumer needs does not grow
    with the folder. Bad items are skipped and recorded in ``bad`` as they are met.

    Parameters
    ----------
    folder : `str` or `Path`
    recursive : `bool`
    n_points : `int`, optional
        Expected point count (a file with another count is a bad item).
    limit : `int`, optional
        Stop after this many usable images (nothing beyond them is read).
    max_pixels : `int`, optional
        Pixel limit of :func:`read_image`.

    Raises
    ------
    DatasetError
        Missing folder, or no ``.pts`` file in it.
    """

    def __init__(
        self, folder, recursive=True, n_points=None, limit=None, max_pixels=None
    ):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise DatasetError(f"{self.folder}: folder not found")
        if limit is not None and int(limit) < 1:
            raise ValueError(
                f"limit: expected a positive number of images, got {limit}"
            )
        self.pairs = _pts_pairs(self.folder, recursive)
        self.n_points = n_points
        self.limit = None if limit is None else int(limit)
        self.max_pixels = max_pixels
        self.bad = []
        self.n_read = 0

    def __len__(self):
        """Images this folder can give at most (before bad items are found)."""
        n = len(self.pairs)
        return n if self.limit is None else min(n, self.limit)

    def __str__(self):
        return (
            f"{self.folder}: {len(self.pairs)} landmark files, {self.n_read} images "
            f"read, {len(self.bad)} bad items skipped"
        )

    def __iter__(self):
        self.bad, self.n_read = [], 0
        for img_path, pts_path in self.pairs:
            if self.limit is not None and self.n_read >= self.limit:
                return
            try:
                image = _load_pair(
                    (img_path, pts_path), self.n_points, max_pixels=self.max_pixels
                )
            except DatasetError as e:
                self.bad.append((str(img_path or pts_path), str(e)))
                continue
            self.n_read += 1
            yield image


def read_300vw(root, clips=None, on_error="raise", progress=False):
    """Read 300VW clips: ``{clip_name: [frames...]}`` with 68-point landmarks.

    Accepts the documented layout ``<root>/<clip>/annot/NNNNNN.pts`` with frames
    extracted to ``<clip>/imgs/`` or ``<clip>/frames/`` (same stem), and a flat layout
    with frames and .pts side by side in ``<root>/<clip>/``.

    Raises
    ------
    DatasetError
        Missing root, a clip without annotations.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: folder not found")
    clip_dirs = sorted(p for p in root.iterdir() if p.is_dir())
    if clips is not None:
        clip_dirs = [d for d in clip_dirs if d.name in set(map(str, clips))]
    if not clip_dirs:
        raise DatasetError(f"{root}: no clip folders")
    out = {}
    for clip in clip_dirs:
        annot = clip / "annot"
        if annot.is_dir():
            pts_files = sorted(annot.glob("*.pts"))
            frame_dirs = [clip / "imgs", clip / "frames", clip]
            pairs = []
            for p in pts_files:
                img = None
                for d in frame_dirs:
                    img = _find_image(d / p.stem)
                    if img is not None:
                        break
                pairs.append((img, p))
        else:
            pairs = [(_find_image(p), p) for p in sorted(clip.glob("*.pts"))]
        if not pairs:
            raise DatasetError(f"{clip}: no 300VW annotations (annot/*.pts)")
        frames = _collect(
            pairs, lambda pair: _load_pair(pair, 68), on_error, progress, clip.name
        )
        for f in frames:
            f.frame = int(f.path.stem) if f.path.stem.isdigit() else f.path.stem
        out[clip.name] = frames
    return out


WFLW_ATTRIBUTES = ("pose", "expression", "illumination", "make_up", "occlusion", "blur")


def read_wflw(annotation_file, image_root, on_error="raise", progress=False, crop=True):
    """Read a WFLW annotation list (``list_98pt_rect_attr_*.txt``).

    Each line holds 196 numbers (x, y of 98 points, 0-based pixels), 4 box numbers
    (x_min y_min x_max y_max), 6 attribute flags and the image path relative to
    ``image_root``. One face per line: the image is returned once per face (cropped to
    the face box enlarged by 50 % when ``crop``, to keep memory bounded), with landmarks
    in group ``"wflw98"``, the box in ``"box"`` and ``image.attributes`` a dict of the
    six flags.
    """
    annotation_file, image_root = Path(annotation_file), Path(image_root)
    if not annotation_file.is_file():
        raise DatasetError(f"{annotation_file}: annotation list not found")
    lines = [
        (i, ln)
        for i, ln in enumerate(annotation_file.read_text().splitlines())
        if ln.strip()
    ]
    if not lines:
        raise DatasetError(f"{annotation_file}: empty annotation list")

    def load(item):
        i, line = item
        where = f"{annotation_file}:{i + 1}"
        parts = line.split()
        if len(parts) != 196 + 4 + 6 + 1:
            raise DatasetError(f"{where}: {len(parts)} fields, expected 207")
        try:
            nums = np.asarray(parts[:206], dtype=float)
        except ValueError:
            raise DatasetError(f"{where}: non-numeric landmark/box fields") from None
        if not np.all(np.isfinite(nums)):
            raise DatasetError(f"{where}: NaN or infinite values")
        pts = nums[:196].reshape(98, 2)[:, ::-1]
        x0, y0, x1, y1 = nums[196:200]
        image = read_image(image_root / parts[206])
        shape = PointCloud(pts)
        _check_inside(image, shape, where)
        _attach(image, shape, "wflw98")
        image.landmarks["box"] = PointCloud(
            np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]], dtype=float)
        )
        image.attributes = dict(zip(WFLW_ATTRIBUTES, (int(v) for v in nums[200:206])))
        if crop:
            image = image.crop_to_landmarks_proportion(0.5, group="wflw98")
            image.path = image_root / parts[206]
            image.attributes = dict(
                zip(WFLW_ATTRIBUTES, (int(v) for v in nums[200:206]))
            )
        return image

    return _collect(lines, load, on_error, progress, "reading WFLW")


CELEBA_POINTS = ("lefteye", "righteye", "nose", "leftmouth", "rightmouth")


def read_celeba(
    landmark_file, image_root, limit=None, on_error="raise", progress=False
):
    """Read a CelebA landmark list (``list_landmarks_celeba.txt`` or the aligned one).

    Format: a count line, a header line naming ``lefteye_x lefteye_y ...``, then
    ``<file> x1 y1 ... x5 y5`` (0-based pixels). Landmarks go to group ``"five"``.
    """
    landmark_file, image_root = Path(landmark_file), Path(image_root)
    if not landmark_file.is_file():
        raise DatasetError(f"{landmark_file}: landmark list not found")
    lines = landmark_file.read_text().splitlines()
    if len(lines) < 3 or not lines[1].split() or "lefteye_x" not in lines[1]:
        raise DatasetError(
            f"{landmark_file}: not a CelebA landmark list (count + header lines)"
        )
    rows = [(i + 2, ln) for i, ln in enumerate(lines[2:]) if ln.strip()]
    if limit is not None:
        rows = rows[:limit]

    def load(item):
        i, line = item
        where = f"{landmark_file}:{i + 1}"
        parts = line.split()
        if len(parts) != 11:
            raise DatasetError(f"{where}: {len(parts)} fields, expected 11")
        try:
            xy = np.asarray(parts[1:], dtype=float).reshape(5, 2)
        except ValueError:
            raise DatasetError(f"{where}: non-numeric coordinates") from None
        if not np.all(np.isfinite(xy)):
            raise DatasetError(f"{where}: NaN or infinite coordinates")
        image = read_image(image_root / parts[0])
        shape = PointCloud(xy[:, ::-1])
        _check_inside(image, shape, where)
        return _attach(image, shape, "five")

    return _collect(rows, load, on_error, progress, "reading CelebA")


def read_coco_keypoints(json_file, image_root, on_error="raise", progress=False):
    """Read COCO-style keypoint annotations (one image per annotation).

    ``keypoints`` are ``[x, y, v, ...]`` (0-based pixels; ``v = 0``: not labelled). The
    landmarks go to the group named by the point count (unlabelled points are set to
    NaN) and ``image.visibility`` holds the ``v > 0`` flags; the ``bbox`` (x, y, w, h),
    when present, goes to group ``"box"``.
    """
    json_file, image_root = Path(json_file), Path(image_root)
    if not json_file.is_file():
        raise DatasetError(f"{json_file}: annotation file not found")
    try:
        data = json.loads(json_file.read_text())
        images = {im["id"]: im for im in data["images"]}
        annotations = list(data["annotations"])
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise DatasetError(f"{json_file}: not COCO keypoint json ({e})") from None
    if not annotations:
        raise DatasetError(f"{json_file}: no annotations")

    def load(ann):
        where = f"{json_file} annotation {ann.get('id', '?')}"
        try:
            kp = np.asarray(ann["keypoints"], dtype=float).reshape(-1, 3)
            info = images[ann["image_id"]]
        except (KeyError, ValueError, TypeError) as e:
            raise DatasetError(f"{where}: bad keypoints ({e})") from None
        visible = kp[:, 2] > 0
        if not visible.any():
            raise DatasetError(f"{where}: no labelled keypoints")
        if not np.all(np.isfinite(kp[visible, :2])):
            raise DatasetError(f"{where}: NaN or infinite coordinates")
        pts = kp[:, 1::-1].copy()
        pts[~visible] = np.nan
        image = read_image(image_root / info["file_name"])
        _check_inside(image, PointCloud(pts[visible]), where)
        _attach(image, PointCloud(pts))
        image.visibility = visible
        if ann.get("bbox"):
            x, y, w, h = map(float, ann["bbox"])
            image.landmarks["box"] = PointCloud(
                np.array([[y, x], [y, x + w], [y + h, x + w], [y + h, x]])
            )
        return image

    return _collect(annotations, load, on_error, progress, "reading COCO")


def builtin_faces():
    """menpo's built-in 68-point faces (takeo, einstein, breakingbad, lenna).

    Returns
    -------
    images : `list` of `menpo.image.Image`
        Each with its 68 points in the group ``ibug68`` and ``path`` set to the asset name.
    """
    import menpo.io as mio

    images = []
    for name in ("takeo.ppm", "einstein.jpg", "breakingbad.jpg", "lenna.png"):
        im = mio.import_builtin_asset(name)
        group = next(
            g for g in im.landmarks.group_labels if im.landmarks[g].n_points == 68
        )
        shape = PointCloud(im.landmarks[group].points)
        im.landmarks.clear()
        im.landmarks["ibug68"] = shape
        im.path = Path(name)
        images.append(im)
    return images
