"""Honest train / held-out splits by *person*, stable across runs and machines.

Frames of one person in ``ytf68`` come from the same few clips and are nearly identical,
so a split by frame measures memory. Here every image is assigned by the identity it
shows, through a salted SHA-1 of the person's name: the same name always lands on the
same side, whatever folder it appears in (``ytf68`` frames and ``unlabelled_lfw`` images
of one person go together), and adding files never moves a person.

Rules (:func:`split_of`):

- ``ytf68`` (``Person_Name_NN[_t]``) and ``unlabelled_lfw`` (``Person_Name_NNNN``): held
  out when the person's hash falls below :data:`HOLDOUT_FRACTION` (~15 % of people);
- ``faces68/lfpw``, ``faces68/helen``: always held out (the common 300-W test faces);
- ``helen29`` (``<flickr id>_<face>``): a fixed ~15 % of the source photographs (hash of
  the Flickr id, so two faces of one photo stay together);
- everything else (``faces68/afw``, ``faces68/300wlp``, ``video68``, ``wflw98``,
  ``unlabelled_utk``, ...): training.

Examples
--------
>>> from menpo_densereg.data.splits import person_of, split_of
>>> person_of("ytf68/Tom_Hanks_41_t.jpg")
'Tom_Hanks'
>>> split_of("../shared/data/faces68/lfpw/image_0001.png")
'heldout'
"""

import hashlib
import re
from pathlib import Path

__all__ = [
    "HOLDOUT_FRACTION",
    "SPLIT_SALT",
    "person_of",
    "is_held_out_person",
    "split_of",
    "split_files",
    "training_side",
    "held_out_people",
    "heldout_ytf68_frames",
]

#: Share of people (and of helen29 photographs) held out.
HOLDOUT_FRACTION = 0.15
#: Salt of the hash: changing it defines a different split (never do it silently).
SPLIT_SALT = "menpo-densereg-split-v1"

_IMAGE_EXT = (".jpg", ".jpeg", ".png", ".ppm", ".bmp")
_BY_PERSON = ("ytf68", "unlabelled_lfw")
_ALWAYS_HELD_OUT = ("faces68/lfpw", "faces68/helen")


def person_of(path):
    """The person's name in a ``Person_Name_NN[_t]`` / ``Person_Name_NNNN`` file name.

    Parameters
    ----------
    path : `str` or `Path`

    Returns
    -------
    name : `str`
        The stem without the trailing ``_t`` and frame/image number.

    Raises
    ------
    ValueError
        If the stem does not end in ``_<digits>`` (optionally ``_t``).
    """
    stem = Path(path).stem
    m = re.fullmatch(r"(.+?)_\d+(?:_t)?", stem)
    if m is None:
        raise ValueError(f"{path}: expected a 'Person_Name_NN' file name")
    return m.group(1)


def _unit_hash(key, salt=SPLIT_SALT):
    """A number in [0, 1) from the SHA-1 of ``salt/key`` (stable everywhere)."""
    h = hashlib.sha1(f"{salt}/{key}".encode("utf-8")).hexdigest()
    return int(h[:15], 16) / float(16**15)


def is_held_out_person(name, fraction=HOLDOUT_FRACTION, salt=SPLIT_SALT):
    """Whether the person ``name`` belongs to the held-out people.

    Parameters
    ----------
    name : `str`
        As :func:`person_of` returns it (case and spelling matter).
    fraction : `float`
        Share of people held out, in [0, 1].
    salt : `str`
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction: expected a value in [0, 1], got {fraction}")
    return _unit_hash(name, salt) < fraction


def _dataset_of(path):
    parts = Path(path).parts
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] in _BY_PERSON or parts[i] == "helen29":
            return parts[i]
        if i > 0 and f"{parts[i - 1]}/{parts[i]}" in _ALWAYS_HELD_OUT:
            return f"{parts[i - 1]}/{parts[i]}"
    return None


def split_of(path, dataset=None, fraction=HOLDOUT_FRACTION, salt=SPLIT_SALT):
    """``"train"`` or ``"heldout"`` for one image file.

    Parameters
    ----------
    path : `str` or `Path`
        The image (or its ``.pts``) path; its folder names say which set it is from.
    dataset : `str`, optional
        ``"ytf68"``, ``"unlabelled_lfw"``, ``"helen29"``, ``"faces68/lfpw"``,
        ``"faces68/helen"`` or any other name (training); default: from the path.
    fraction, salt : see :func:`is_held_out_person`
    """
    dataset = dataset or _dataset_of(path)
    if dataset in _ALWAYS_HELD_OUT:
        return "heldout"
    if dataset in _BY_PERSON:
        held = is_held_out_person(person_of(path), fraction, salt)
        return "heldout" if held else "train"
    if dataset == "helen29":
        photo = Path(path).stem.split("_")[0]
        return "heldout" if _unit_hash(f"helen29/{photo}", salt) < fraction else "train"
    return "train"


def _images(folder):
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in _IMAGE_EXT)


def split_files(folder, dataset=None, fraction=HOLDOUT_FRACTION, salt=SPLIT_SALT):
    """The image files of ``folder`` as ``(train, heldout)`` sorted lists of `Path`.

    Parameters
    ----------
    folder : `str` or `Path`
    dataset : `str`, optional
        See :func:`split_of` (default: the folder's own name / parent).
    """
    train, held = [], []
    for p in _images(folder):
        side = split_of(p, dataset, fraction, salt)
        (held if side == "heldout" else train).append(p)
    return train, held


def training_side(images, fraction=HOLDOUT_FRACTION, salt=SPLIT_SALT):
    """The images (with a ``path`` attribute) on the training side of the split.

    Images without a ``path`` (e.g. built-in assets, mirrored copies) are kept.
    """
    return [
        im
        for im in images
        if getattr(im, "path", None) is None
        or split_of(im.path, fraction=fraction, salt=salt) == "train"
    ]


def held_out_people(folder, fraction=HOLDOUT_FRACTION, salt=SPLIT_SALT):
    """Sorted names of the held-out people among a ``Person_Name_NN`` folder's files."""
    people = {person_of(p) for p in _images(folder)}
    return sorted(n for n in people if is_held_out_person(n, fraction, salt))


def heldout_ytf68_frames(folder, per_person=1, fraction=HOLDOUT_FRACTION):
    """A deterministic evaluation subset: ``per_person`` frames of each held-out person.

    Frames are taken evenly spaced over the person's sorted frames (``_t`` variants
    excluded: they repeat a neighbouring frame), so different clips are represented.

    Returns
    -------
    frames : sorted `list` of `Path` (images with a ``.pts`` beside them)
    """
    if per_person < 1:
        raise ValueError(f"per_person: expected >= 1, got {per_person}")
    _, held = split_files(folder, "ytf68", fraction)
    by_person = {}
    for p in held:
        if p.stem.endswith("_t") or not p.with_suffix(".pts").is_file():
            continue
        by_person.setdefault(person_of(p), []).append(p)
    out = []
    for name in sorted(by_person):
        frames = by_person[name]
        n = min(per_person, len(frames))
        idx = sorted(
            {int(round(i * (len(frames) - 1) / max(n - 1, 1))) for i in range(n)}
        )
        out.extend(frames[i] for i in idx)
    return sorted(out)
