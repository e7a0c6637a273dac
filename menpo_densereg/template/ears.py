"""Dense ground truth for ears: a reference-ear (u, v) space carried by thin-plate splines.

Ears have no 3D model, so (following DenseReg) the (u, v) space is the frame of a
*reference ear*: the mean of Procrustes-aligned 55-point annotations (iBUG ear markup),
normalised to [0, 1]^2 by its bounding box. For an annotated ear a thin-plate spline
(menpo's :class:`~menpo.transform.ThinPlateSplines`) from the ear's landmarks to the
reference landmarks gives every pixel its (u, v); the field is exact at the landmarks and
masked to the ear region (the convex hull of the landmarks).

No reference ear ships with the package (it would be built from annotated data): build
one from your *training split* with :meth:`EarSpace.from_shapes` (a few dozen shapes are
plenty) and keep it with the model (:meth:`EarSpace.to_dict` / :meth:`EarSpace.from_dict`
are plain JSON-able lists).
"""

import numpy as np
from matplotlib.path import Path as MPath
from menpo.image import Image
from menpo.shape import PointCloud
from scipy.spatial import ConvexHull

from menpo_densereg.template.groundtruth import DenseGroundTruth
from menpo_densereg.data.markups import check_shape

__all__ = ["EarSpace", "ear_dense_ground_truth", "procrustes_mean"]

EAR_PART_NAMES = ["background", "ear"]


def _points(shape):
    return shape.points if isinstance(shape, PointCloud) else np.asarray(shape, float)


def _check_ear(shape, what):
    pts = check_shape(_points(shape), "ear55", what).astype(float)
    extent = pts.max(0) - pts.min(0)
    if extent.min() < 2.0:
        raise ValueError(
            f"{what}: degenerate ear landmarks (extent {extent.round(2)} px)"
        )
    d = np.linalg.norm(pts[:, None] - pts[None], axis=-1) + np.eye(len(pts)) * 1e9
    if d.min() < 1e-6:
        i, j = np.unravel_index(np.argmin(d), d.shape)
        raise ValueError(f"{what}: landmarks {i} and {j} coincide (TPS is undefined)")
    return pts


def procrustes_mean(shapes):
    """Generalised Procrustes analysis (similarity, no reflection) → mean shape.

    menpo's :class:`~menpo.transform.GeneralizedProcrustesAnalysis` does the alignment;
    the mean keeps the orientation of the first shape and is returned centred, with unit
    RMS size.

    Parameters
    ----------
    shapes : sequence of ``(n, 2)`` `ndarray`
        The shapes (at least one).

    Returns
    -------
    mean : ``(n, 2)`` `ndarray`
    """
    from menpo.transform import AlignmentSimilarity, GeneralizedProcrustesAnalysis

    clouds = [PointCloud(np.asarray(p, float)) for p in shapes]
    if len(clouds) == 1:
        mean = clouds[0].points.copy()
    else:
        gpa = GeneralizedProcrustesAnalysis(clouds, target=clouds[0])
        mean = gpa.mean_aligned_shape()
        mean = AlignmentSimilarity(mean, clouds[0]).aligned_source().points
    mean = mean - mean.mean(0)
    return mean / np.sqrt((mean**2).sum(1).mean())


class EarSpace:
    """The reference ear and its (u, v) frame.

    Attributes
    ----------
    reference : ``(55, 2)`` `ndarray`
        Mean aligned ear (y, x), unit RMS size.
    uv : ``(55, 2)`` `ndarray`
        The reference landmarks as (u, v) (u horizontal, v vertical); their bounding
        box spans [0.1, 0.9]^2 so that the ear region just outside the outermost
        landmarks still maps into [0, 1] without clipping.
    n_shapes : `int`
        How many annotations built it.
    """

    part_names = EAR_PART_NAMES

    margin = 0.1

    def __init__(self, reference, n_shapes=0):
        ref = np.asarray(reference, dtype=float)
        check_shape(ref, "ear55", "reference")
        self.reference = ref
        self.n_shapes = int(n_shapes)
        lo, hi = ref.min(0), ref.max(0)
        m = self.margin
        vu = m + (1 - 2 * m) * (ref - lo) / (hi - lo)
        self.uv = vu[:, [1, 0]]

    @classmethod
    def from_shapes(cls, shapes):
        """Build the space from 55-point ear annotations (e.g. a training split).

        Parameters
        ----------
        shapes : iterable of `PointCloud`, ``(55, 2)`` arrays or menpo images with
            55-point landmarks
        """
        pts = []
        for i, s in enumerate(shapes):
            if isinstance(s, Image):
                g = s.landmarks.group_labels
                if not g:
                    raise ValueError(f"shapes[{i}]: image without landmarks")
                s = s.landmarks[g[0]]
            pts.append(_check_ear(s, f"shapes[{i}]"))
        if len(pts) < 1:
            raise ValueError("EarSpace.from_shapes: need at least one 55-point shape")
        return cls(procrustes_mean(pts), len(pts))

    def to_dict(self):
        return {"reference": self.reference.tolist(), "n_shapes": self.n_shapes}

    @classmethod
    def from_dict(cls, d):
        return cls(np.asarray(d["reference"], float), d.get("n_shapes", 0))

    def landmark_uv(self, markup="ear55"):
        """(u, v) of the 55 ear landmarks."""
        check_shape(np.zeros((55, 2)), markup, "markup")
        return self.uv.copy()

    def __str__(self):
        return f"EarSpace: reference ear (55 points) from {self.n_shapes} annotations"

    def transform(self, shape55):
        """The TPS mapping image (y, x) points of an ear to its (v, u) coordinates."""
        from menpo.transform import ThinPlateSplines

        pts = _check_ear(shape55, "shape55")
        return ThinPlateSplines(PointCloud(pts), PointCloud(self.uv[:, [1, 0]]))


def ear_dense_ground_truth(image, shape55, space):
    """(u, v) field of an ear image through the reference-ear TPS space.

    Parameters
    ----------
    image : `menpo.image.Image` or ``(H, W)`` shape
    shape55 : `PointCloud` or ``(55, 2)`` `ndarray` (y, x); points may lie just outside
        the image
    space : `EarSpace`

    Returns
    -------
    gt : `DenseGroundTruth`
        ``u, v`` in [0, 1] on the ear (the convex hull of the landmarks, clipped to the
        image), depth 0, parts 1 on the ear (:data:`EAR_PART_NAMES`).
    """
    H, W = image.shape if isinstance(image, Image) else tuple(int(x) for x in image)
    pts = _check_ear(shape55, "shape55")
    tps = space.transform(pts)
    hull = pts[ConvexHull(pts[:, [1, 0]]).vertices]
    lo = np.clip(np.floor(pts.min(0)).astype(int), 0, [H - 1, W - 1])
    hi = np.clip(np.ceil(pts.max(0)).astype(int), 0, [H - 1, W - 1])
    u = np.zeros((H, W), np.float32)
    v = np.zeros((H, W), np.float32)
    mask = np.zeros((H, W), bool)
    if (hi >= lo).all():
        rr, cc = np.mgrid[lo[0] : hi[0] + 1, lo[1] : hi[1] + 1]
        q = np.stack([rr.ravel(), cc.ravel()], 1).astype(float)
        inside = MPath(hull).contains_points(q, radius=1e-9)
        q = q[inside]
        if len(q):
            vu = tps.apply(q)
            r, c = q[:, 0].astype(int), q[:, 1].astype(int)
            u[r, c] = np.clip(vu[:, 1], 0, 1)
            v[r, c] = np.clip(vu[:, 0], 0, 1)
            mask[r, c] = True
    depth = np.zeros((H, W), np.float32)
    parts = mask.astype(np.int64)
    zbuf = np.where(mask, 0.0, np.inf)
    return DenseGroundTruth(u, v, depth, mask, parts, zbuf, EAR_PART_NAMES, tol=0.5)
