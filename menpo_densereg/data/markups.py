"""Landmark markups as data: point counts, semantic groups, normalisers, correspondences.

A :class:`Markup` knows how many points it has, how they group into semantic parts, which
two points (or point sets) define its error normaliser, and it can be converted to other
markups through :func:`convert` where the points correspond. Correspondences are linear:
a target point is a fixed average of source points (e.g. the 5-point eye centre is the mean
of the six 68-point eye points), so one matrix multiplication converts a whole shape.

All indices are 0-based. "Left" means image-left for a frontal face (the subject's right),
as in the iBUG 300-W convention.
"""

from dataclasses import dataclass, field

import numpy as np
from menpo.shape import PointCloud

__all__ = [
    "Markup",
    "MARKUPS",
    "get_markup",
    "markup_for_n_points",
    "convert",
    "conversion_matrix",
    "can_convert",
    "check_shape",
    "FLIP_PERMUTATIONS",
    "flip_permutation",
    "mirror_points",
    "average_with_mirror",
]


@dataclass(frozen=True)
class Markup:
    """A landmark markup.

    Parameters
    ----------
    name : `str`
        Short identifier (``"ibug68"``, ``"wflw98"``, ...).
    n_points : `int`
        Number of landmarks.
    groups : `dict` of `str` -> `tuple` of `int`
        Semantic groups of point indices.
    normaliser : ``((a...), (b...))`` or `None`
        Two index sets: the normaliser is the distance between the means of the two sets
        (e.g. ``((36,), (45,))`` for the 68-point outer eye corners). `None` means the
        average edge length of the ground-truth bounding box.
    normaliser_name : `str`
        What the normaliser is, for tables.
    """

    name: str
    n_points: int
    groups: dict = field(default_factory=dict, compare=False, hash=False)
    normaliser: tuple = None
    normaliser_name: str = "bounding box average edge"
    description: str = ""

    def __str__(self):
        return (
            f"{self.name}: {self.n_points}-point markup ({self.description}); "
            f"{len(self.groups)} groups; normaliser: {self.normaliser_name}"
        )

    def normalising_distance(self, shape):
        """The normaliser of a ground-truth shape of this markup.

        Parameters
        ----------
        shape : `menpo.shape.PointCloud` or ``(n_points, 2)`` `ndarray`

        Returns
        -------
        distance : `float`
        """
        pts = _points(shape)
        check_shape(pts, self, "shape")
        if self.normaliser is None:
            extent = pts.max(axis=0) - pts.min(axis=0)
            return float(extent.mean())
        a, b = self.normaliser
        return float(
            np.linalg.norm(pts[list(a)].mean(axis=0) - pts[list(b)].mean(axis=0))
        )


def _range(a, b):
    return tuple(range(a, b))


IBUG68 = Markup(
    "ibug68",
    68,
    groups={
        "jaw": _range(0, 17),
        "left_eyebrow": _range(17, 22),
        "right_eyebrow": _range(22, 27),
        "nose": _range(27, 36),
        "left_eye": _range(36, 42),
        "right_eye": _range(42, 48),
        "mouth": _range(48, 68),
    },
    normaliser=((36,), (45,)),
    normaliser_name="outer eye corners (36, 45)",
    description="iBUG 300-W",
)

WFLW98 = Markup(
    "wflw98",
    98,
    groups={
        "jaw": _range(0, 33),
        "left_eyebrow": _range(33, 42),
        "right_eyebrow": _range(42, 51),
        "nose": _range(51, 60),
        "left_eye": _range(60, 68) + (96,),
        "right_eye": _range(68, 76) + (97,),
        "mouth": _range(76, 96),
    },
    normaliser=((60,), (72,)),
    normaliser_name="outer eye corners (60, 72)",
    description="WFLW",
)

LFPW29 = Markup(
    "lfpw29",
    29,
    groups={
        "left_eyebrow": (0, 2, 4, 5),
        "right_eyebrow": (1, 3, 6, 7),
        "left_eye": (8, 10, 12, 13, 16),
        "right_eye": (9, 11, 14, 15, 17),
        "nose": (18, 19, 20, 21),
        "mouth": (22, 23, 24, 25, 26, 27),
        "chin": (28,),
    },
    normaliser=((8,), (9,)),
    normaliser_name="outer eye corners (8, 9)",
    description="LFPW / COFW / Helen-29",
)

FIVE = Markup(
    "five",
    5,
    groups={
        "left_eye": (0,),
        "right_eye": (1,),
        "nose": (2,),
        "mouth": (3, 4),
    },
    normaliser=((0,), (1,)),
    normaliser_name="eye centres (0, 1)",
    description="CelebA: eye centres, nose tip, mouth corners",
)

EAR55 = Markup(
    "ear55",
    55,
    groups={"ear": _range(0, 55)},
    normaliser=None,
    normaliser_name="GT box average edge",
    description="iBUG in-the-wild ear",
)

MARKUPS = {m.name: m for m in (IBUG68, WFLW98, LFPW29, FIVE, EAR55)}
_ALIASES = {
    "68": "ibug68",
    "ibug": "ibug68",
    "300w": "ibug68",
    "98": "wflw98",
    "wflw": "wflw98",
    "29": "lfpw29",
    "lfpw": "lfpw29",
    "cofw": "lfpw29",
    "helen29": "lfpw29",
    "5": "five",
    "celeba": "five",
    "55": "ear55",
    "ear": "ear55",
}


def get_markup(name):
    """Look a markup up by name, alias or point count (``"68"``, ``"wflw"``, ...).

    Raises
    ------
    ValueError
        If the name is unknown.
    """
    if isinstance(name, Markup):
        return name
    key = str(name).lower()
    key = _ALIASES.get(key, key)
    if key not in MARKUPS:
        raise ValueError(
            f"unknown markup {name!r}; known: {sorted(MARKUPS)} "
            f"(aliases {sorted(_ALIASES)})"
        )
    return MARKUPS[key]


def markup_for_n_points(n_points):
    """The known markup with ``n_points`` points, or `None`."""
    for m in MARKUPS.values():
        if m.n_points == n_points:
            return m
    return None


def _points(shape):
    if isinstance(shape, PointCloud):
        return shape.points
    return np.asarray(shape, dtype=float)


def check_shape(shape, markup, what="shape"):
    """Raise a clear `ValueError` unless ``shape`` is a finite shape of ``markup``.

    Parameters
    ----------
    shape : `PointCloud` or ``(n, 2)`` `ndarray`
    markup : `Markup` or `str`
    what : `str`
        How to name the shape in the error (file name, argument name).
    """
    markup = get_markup(markup)
    pts = _points(shape)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"{what}: expected (n, 2) points, got array of {pts.shape}")
    if pts.shape[0] != markup.n_points:
        raise ValueError(
            f"{what}: has {pts.shape[0]} points but the {markup.name} markup needs "
            f"{markup.n_points}"
        )
    if not np.all(np.isfinite(pts)):
        raise ValueError(f"{what}: contains NaN or infinite coordinates")
    return pts


# --------------------------------------------------------------------------------------
# correspondences: target index -> tuple of source indices (averaged)

_WFLW98_TO_68 = (
    [(i,) for i in range(0, 33, 2)]  # jaw: every other contour point
    + [(33,), (34,), (35,), (36,), (37,)]  # left brow upper edge
    + [(42,), (43,), (44,), (45,), (46,)]  # right brow upper edge
    + [(i,) for i in range(51, 60)]  # nose
    + [(60,), (61,), (63,), (64,), (65,), (67,)]  # left eye
    + [(68,), (69,), (71,), (72,), (73,), (75,)]  # right eye
    + [(i,) for i in range(76, 96)]  # mouth
)

_68_TO_5 = [
    _range(36, 42),  # left eye centre
    _range(42, 48),  # right eye centre
    (30,),  # nose tip
    (48,),  # left mouth corner
    (54,),  # right mouth corner
]

_98_TO_5 = [(96,), (97,), (54,), (76,), (82,)]

# 68 -> 29: where the LFPW points coincide with 300-W points (eyelid mid-points and
# pupils are averages of the neighbouring 68-point eye points).
_68_TO_29 = [
    (17,),
    (26,),
    (21,),
    (22,),
    (19,),  # left brow top (300-W has only the upper edge)
    (19,),  # left brow bottom approximated by its top
    (24,),
    (24,),
    (36,),
    (45,),
    (39,),
    (42,),
    (37, 38),
    (40, 41),
    (43, 44),
    (46, 47),
    _range(36, 42),
    _range(42, 48),
    (31,),
    (35,),
    (30,),
    (33,),
    (48,),
    (54,),
    (51,),
    (62,),
    (66,),
    (57,),
    (8,),
]

# exact correspondences only (no approximations) are flagged here
_CONVERSIONS = {
    ("wflw98", "ibug68"): _WFLW98_TO_68,
    ("ibug68", "five"): _68_TO_5,
    ("wflw98", "five"): _98_TO_5,
    ("ibug68", "lfpw29"): _68_TO_29,
}


def can_convert(source, target):
    """Whether a shape of ``source`` markup can be converted to ``target``."""
    s, t = get_markup(source).name, get_markup(target).name
    return s == t or (s, t) in _CONVERSIONS or _via(s, t) is not None


def _via(s, t):
    for a, b in _CONVERSIONS:
        if a == s and (b, t) in _CONVERSIONS:
            return b
    return None


def conversion_matrix(source, target):
    """The ``(n_target, n_source)`` averaging matrix that converts markups.

    Raises
    ------
    ValueError
        If no correspondence is known.
    """
    s, t = get_markup(source), get_markup(target)
    if s.name == t.name:
        return np.eye(s.n_points)
    key = (s.name, t.name)
    if key in _CONVERSIONS:
        M = np.zeros((t.n_points, s.n_points))
        for i, src in enumerate(_CONVERSIONS[key]):
            M[i, list(src)] = 1.0 / len(src)
        return M
    mid = _via(s.name, t.name)
    if mid is not None:
        return conversion_matrix(mid, t) @ conversion_matrix(s, mid)
    raise ValueError(f"no known correspondence from {s.name} to {t.name}")


def convert(shape, source, target):
    """Convert a shape between markups.

    Parameters
    ----------
    shape : `PointCloud` or ``(n, 2)`` `ndarray`
    source, target : `Markup` or `str`

    Returns
    -------
    converted : `PointCloud`
    """
    pts = check_shape(shape, source, "shape")
    return PointCloud(conversion_matrix(source, target) @ pts)


def _pairs_to_perm(n, pairs):
    perm = np.arange(n)
    for a, b in pairs:
        perm[a], perm[b] = b, a
    return perm


_IBUG68_PAIRS = (
    [(i, 16 - i) for i in range(8)]  # jaw
    + [(17 + i, 26 - i) for i in range(5)]  # brows
    + [(31, 35), (32, 34)]  # nostrils
    + [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]  # eyes
    + [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58)]  # outer lips
    + [(60, 64), (61, 63), (65, 67)]  # inner lips
)
_WFLW98_PAIRS = (
    [(i, 32 - i) for i in range(16)]  # jaw
    + [(33 + i, 46 - i) for i in range(5)]  # brow upper edges
    + [(38, 50), (39, 49), (40, 48), (41, 47)]  # brow lower edges
    + [(55, 59), (56, 58)]  # nostrils
    + [(60, 72), (61, 71), (62, 70), (63, 69), (64, 68), (65, 75), (66, 74), (67, 73)]
    + [(76, 82), (77, 81), (78, 80), (83, 87), (84, 86)]  # outer lips
    + [(88, 92), (89, 91), (93, 95)]  # inner lips
    + [(96, 97)]  # pupils
)
_LFPW29_PAIRS = [
    (0, 1),
    (2, 3),
    (4, 6),
    (5, 7),
    (8, 9),
    (10, 11),
    (12, 14),
    (13, 15),
    (16, 17),
    (18, 19),
    (22, 23),
]
_FIVE_PAIRS = [(0, 1), (3, 4)]

#: Index permutation that relabels a horizontally flipped shape (image-left <-> right),
#: per markup name.
FLIP_PERMUTATIONS = {
    "ibug68": _pairs_to_perm(68, _IBUG68_PAIRS),
    "wflw98": _pairs_to_perm(98, _WFLW98_PAIRS),
    "lfpw29": _pairs_to_perm(29, _LFPW29_PAIRS),
    "five": _pairs_to_perm(5, _FIVE_PAIRS),
}


def flip_permutation(markup):
    """The left/right permutation of ``markup`` (`ValueError` when unknown)."""
    name = get_markup(markup).name
    if name not in FLIP_PERMUTATIONS:
        raise ValueError(f"markup {name}: no flip permutation defined")
    return FLIP_PERMUTATIONS[name]


def mirror_points(points, width, permutation):
    """Points of the horizontally mirrored image, in the mirrored image's frame.

    Parameters
    ----------
    points : ``(n, 2)`` `ndarray`
        ``(y, x)`` points in an image ``width`` pixels wide (pixel centres at integer
        ``x``, menpo's convention).
    width : `int`
        Width of the image in pixels.
    permutation : ``(n,)`` int `ndarray`
        Left/right relabelling (:func:`flip_permutation`).

    Returns
    -------
    ``(n, 2)`` `ndarray`
        ``x -> width - 1 - x`` and relabelled, so that image-left stays image-left. The
        mapping is its own inverse.
    """
    pts = np.asarray(points, dtype=np.float64)[np.asarray(permutation)].copy()
    pts[:, 1] = (width - 1) - pts[:, 1]
    return pts


def average_with_mirror(points, mirrored, width, permutation, weights=None):
    """Test-time flip averaging: combine a prediction with one made on the mirror image.

    Parameters
    ----------
    points : ``(n, 2)`` `ndarray`
        ``(y, x)`` prediction on the image.
    mirrored : ``(n, 2)`` `ndarray`
        Prediction on the horizontally mirrored image (its own frame and labels).
    width : `int`
        Image width in pixels.
    permutation : ``(n,)`` int `ndarray`
    weights : pair of ``(n,)`` `ndarray`, optional
        Per-point confidences of ``points`` and ``mirrored`` (``mirrored``'s in its
        own labels); the points are then averaged by confidence (plus a small floor).

    Returns
    -------
    points : ``(n, 2)`` `ndarray`
    weights : ``(n,)`` `ndarray` or `None`
        The mean confidence of the two predictions (`None` without ``weights``).
    """
    back = mirror_points(mirrored, width, permutation)
    pts = np.asarray(points, dtype=np.float64)
    if weights is None:
        return 0.5 * (pts + back), None
    w1 = np.asarray(weights[0], dtype=np.float64)
    w2 = np.asarray(weights[1], dtype=np.float64)[np.asarray(permutation)]
    a, b = w1 + 1e-3, w2 + 1e-3
    avg = (pts * a[:, None] + back * b[:, None]) / (a + b)[:, None]
    return avg, 0.5 * (w1 + w2)
