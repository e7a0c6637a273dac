"""The data engine: dense samples from real annotated faces and re-posed 3D renders.

Two kinds of samples, both in the *dense sample format* (see :data:`SAMPLE_KEYS`):

* **real** (:func:`real_sample`): a real image with its 68 (or 98) landmarks, the face
  template fitted to them (:func:`~menpo_densereg.template.groundtruth.fit_template`), a jittered
  similarity crop (scale, shift, rotation) and photometric augmentation; the dense ground
  truth is rendered directly in the crop.
* **synthetic** (:func:`synthetic_sample`, 300W-LP-style "face profiling"): the fitted 3D
  face of a real image (:class:`TexturedFace`) is rotated to a new pose (yaw up to
  +-90 deg, pitch, roll), textured from the image (vertices unseen in the source take the
  colour of their mirror vertex, else of the nearest seen vertex), relit (Lambertian) and
  composited over a background (a random crop of another source image, a gradient or
  smooth noise).

Everything random is drawn from a `numpy.random.Generator`, so samples are a pure
function of ``(seed, index)``. :func:`write_shards` / :func:`read_shard` store samples as
npz shards (no pickle, atomic writes).
"""

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from menpo.image import Image
from menpo.shape import PointCloud
from menpo.transform import AlignmentSimilarity
from scipy import ndimage
from scipy.spatial import cKDTree

from menpo_densereg.template.groundtruth import (
    TemplateFit,
    fit_template,
    rasterise,
    rasterise_mesh,
)
from menpo_densereg.data.markups import check_shape, conversion_matrix, get_markup
from menpo_densereg.template.face import FaceTemplate

__all__ = [
    "SAMPLE_MARKUPS",
    "SAMPLE_KEYS",
    "SynthConfig",
    "AnnotatedFace",
    "TexturedFace",
    "annotated_face",
    "real_sample",
    "synthetic_sample",
    "empty_sample",
    "DataEngine",
    "flip_sample",
    "write_shards",
    "read_shard",
    "list_shards",
]

SAMPLE_MARKUPS = ("ibug68", "wflw98", "lfpw29", "five")
SAMPLE_KEYS = ("image", "uv", "mask", "depth", "parts") + tuple(
    f"{p}_{m}" for m in SAMPLE_MARKUPS for p in ("lm", "has", "vis")
)


@dataclass
class SynthConfig:
    """Ranges of the random draws (angles in degrees).

    ``margin`` is the crop margin (as :func:`menpo_densereg.data.crop.crop_face`); ``jitter_*``
    perturb the crop box (fraction of the box side / relative scale / degrees) so that
    detector boxes also work. Backgrounds of synthetic samples: with probability
    ``p_context`` the source image's own surroundings (hair, neck, scene; see
    :meth:`TexturedFace.context`), else with ``p_image_background`` a crop of another
    source image, else a procedural gradient / smooth noise.
    """

    size: int = 128
    margin: float = 0.25
    max_yaw: float = 90.0
    max_pitch: float = 30.0
    max_roll: float = 30.0
    jitter_shift: float = 0.08
    jitter_scale: float = 0.12
    jitter_rotation: float = 20.0
    ambient: tuple = (0.35, 0.8)
    p_image_background: float = 0.5
    p_context: float = 0.4
    p_flip: float = 0.5
    photometric: bool = True


# ======================================================================================
# sources


@dataclass
class AnnotatedFace:
    """A real image (float (C, H, W) pixels), its 68-point fit and its annotations."""

    pixels: np.ndarray
    fit: TemplateFit
    annotations: dict  # markup name -> (n, 2) (y, x) annotated points
    name: str = ""

    @property
    def shape(self):
        return self.pixels.shape[1:]


def _image_landmarks(image):
    lms = image.landmarks
    if lms.n_groups == 0:
        raise ValueError(f"{_name(image)}: image has no landmarks")
    g = "PTS" if "PTS" in lms.group_labels else lms.group_labels[0]
    return lms[g].points


def _name(image):
    p = getattr(image, "path", None)
    return str(p) if p is not None else "image"


def annotated_face(image, shape=None, template=None):
    """Fit the template to an image's 68 (or 98) landmarks → `AnnotatedFace`.

    Raises
    ------
    ValueError
        For a markup other than 68/98 points, or NaN/degenerate landmarks (the message
        names the image's file).
    """
    if not isinstance(image, Image):
        raise TypeError(f"expected a menpo Image, got {type(image).__name__}")
    name = _name(image)
    pts = np.asarray(_image_landmarks(image) if shape is None else _pts(shape), float)
    n = pts.shape[0] if pts.ndim == 2 else -1
    if n == 68:
        check_shape(pts, "ibug68", name)
        ann = {"ibug68": pts}
        p68 = pts
    elif n == 98:
        check_shape(pts, "wflw98", name)
        ann = {"wflw98": pts, "five": conversion_matrix("wflw98", "five") @ pts}
        p68 = conversion_matrix("wflw98", "ibug68") @ pts
    else:
        raise ValueError(
            f"{name}: dense ground truth needs 68- or 98-point landmarks, got {n} points"
        )
    try:
        fit = fit_template(p68, template=template)
    except ValueError as e:
        raise ValueError(f"{name}: {e}") from None
    px = np.asarray(image.pixels, dtype=np.float32)
    if px.shape[0] == 1:
        px = np.repeat(px, 3, 0)
    px = np.ascontiguousarray(px[:3])
    return AnnotatedFace(px, fit, ann, name)


def _pts(shape):
    return shape.points if isinstance(shape, PointCloud) else np.asarray(shape)


# ======================================================================================
# geometry helpers


def _crop_transform(centre, side, size, margin, angle_deg=0.0):
    """``(2, 3)`` matrix mapping crop (y, x) to image (y, x) (similarity)."""
    scale = side * (1 + 2 * margin) / float(size)
    a = np.deg2rad(angle_deg)
    # rotation acting on (y, x) points
    Rm = np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]]) * scale
    c0 = (size - 1) / 2.0
    return np.concatenate([Rm, (np.asarray(centre) - Rm @ [c0, c0])[:, None]], 1)


def _invert(A):
    M = np.linalg.inv(A[:, :2])
    return np.concatenate([M, (-M @ A[:, 2])[:, None]], 1)


def _box(points):
    lo, hi = points.min(0), points.max(0)
    return (lo + hi) / 2, float((hi - lo).max())


def _jittered_crop(points, cfg, rng, jitter=True):
    centre, side = _box(points)
    angle = 0.0
    if jitter:
        centre = centre + rng.uniform(-1, 1, 2) * cfg.jitter_shift * side
        side = side * np.exp(rng.uniform(-1, 1) * cfg.jitter_scale)
        angle = rng.uniform(-1, 1) * cfg.jitter_rotation
    return _crop_transform(centre, side, cfg.size, cfg.margin, angle)


def _warp_pixels(pixels, A, size, order=1):
    """Sample (C, H, W) pixels on the crop grid mapped by ``A`` (crop -> image)."""
    g = np.arange(size, dtype=np.float64)
    yy, xx = np.meshgrid(g, g, indexing="ij")
    iy = A[0, 0] * yy + A[0, 1] * xx + A[0, 2]
    ix = A[1, 0] * yy + A[1, 1] * xx + A[1, 2]
    out = np.empty((pixels.shape[0], size, size), dtype=np.float32)
    for c in range(pixels.shape[0]):
        out[c] = ndimage.map_coordinates(
            pixels[c], [iy, ix], order=order, mode="constant", cval=0.0
        )
    return out


def _apply(A, pts):
    return np.asarray(pts) @ A[:, :2].T + A[:, 2]


# ======================================================================================
# photometric augmentation


def photometric(img, rng, strength=1.0):
    """Random brightness, contrast, saturation, gamma, colour cast, blur and noise."""
    x = img.astype(np.float32)
    grey = x.mean(0, keepdims=True)
    x = grey + (x - grey) * rng.uniform(1 - 0.6 * strength, 1 + 0.4 * strength)
    x = x * rng.uniform(1 - 0.1 * strength, 1 + 0.1 * strength, (3, 1, 1))
    m = x.mean()
    x = (x - m) * rng.uniform(1 - 0.35 * strength, 1 + 0.35 * strength) + m
    x = x + rng.uniform(-0.15, 0.15) * strength
    x = np.clip(x, 0, 1) ** np.exp(rng.uniform(-0.35, 0.35) * strength)
    if rng.random() < 0.3 * strength:
        x = ndimage.gaussian_filter(x, (0, *([rng.uniform(0.3, 1.3)] * 2)))
    if rng.random() < 0.5 * strength:
        x = x + rng.normal(0, rng.uniform(0.0, 0.04), x.shape).astype(np.float32)
    if rng.random() < 0.1 * strength:
        x = np.repeat(x.mean(0, keepdims=True), 3, 0)
    return np.clip(x, 0, 1).astype(np.float32)


# ======================================================================================
# sample packing


def empty_sample(size):
    """A dense sample with every array zero and every ``has_`` flag 0."""
    s = {
        "image": np.zeros((3, size, size), np.float32),
        "uv": np.zeros((2, size, size), np.float32),
        "mask": np.zeros((size, size), np.float32),
        "depth": np.zeros((size, size), np.float32),
        "parts": np.zeros((size, size), np.int64),
    }
    for m in SAMPLE_MARKUPS:
        n = get_markup(m).n_points
        s[f"lm_{m}"] = np.zeros((n, 2), np.float32)
        s[f"has_{m}"] = np.float32(0)
        s[f"vis_{m}"] = np.zeros(n, np.float32)
    return s


def _pack(image, gt, landmarks):
    """Dense sample dict from a crop image, its `DenseGroundTruth` and landmarks.

    ``landmarks``: markup -> ((n, 2) (y, x) crop points, (n,) visibility).
    """
    s = empty_sample(gt.mask.shape[0])
    s["image"] = np.ascontiguousarray(image, dtype=np.float32)
    s["uv"] = np.stack([gt.u, gt.v]).astype(np.float32)
    s["mask"] = gt.mask.astype(np.float32)
    s["depth"] = gt.depth.astype(np.float32)
    s["parts"] = gt.parts.astype(np.int64)
    for m, (pts, vis) in landmarks.items():
        s[f"lm_{m}"] = np.asarray(pts, np.float32)
        s[f"has_{m}"] = np.float32(1)
        s[f"vis_{m}"] = np.asarray(vis, np.float32)
    return s


def _markup_landmarks(fit, gt, annotations, A_img_to_crop=None):
    """Landmarks of every markup for a (crop) fit: annotations where given, else the
    template's labelling projected by the fit; visibility from the z-buffer."""
    out = {}
    for m in SAMPLE_MARKUPS:
        pts, depth = fit.landmarks(m)
        vis = gt.is_visible(pts, depth)
        if m == "ibug68" or m == "wflw98":
            # contour points lie on the silhouette after marching: visible when on screen
            n_c = 17 if m == "ibug68" else 33
            H, W = gt.shape
            on = (pts[:n_c, 0] >= 0) & (pts[:n_c, 0] <= H - 1)
            on &= (pts[:n_c, 1] >= 0) & (pts[:n_c, 1] <= W - 1)
            vis[:n_c] = on
        if annotations is not None and m in annotations:
            pts = _apply(A_img_to_crop, annotations[m])
        out[m] = (pts, vis.astype(np.float32))
    return out


def flip_sample(sample, template=None):
    """Mirror a dense sample left-right (image, dense fields, parts and landmarks).

    The template is symmetric, so the mirrored face's ``u`` is ``1 - u`` (to ~0.002);
    left/right part labels swap and landmark indices follow
    :meth:`~menpo_densereg.template.face.FaceTemplate.flip_permutation`.
    """
    tpl = template or FaceTemplate.load()
    s = dict(sample)
    size = s["mask"].shape[1]
    m = s["mask"][:, ::-1]
    s["image"] = np.ascontiguousarray(s["image"][:, :, ::-1])
    u = np.where(m > 0, 1.0 - s["uv"][0][:, ::-1], 0.0)
    s["uv"] = np.ascontiguousarray(
        np.stack([u, s["uv"][1][:, ::-1]]).astype(np.float32)
    )
    s["mask"] = np.ascontiguousarray(m)
    s["depth"] = np.ascontiguousarray(s["depth"][:, ::-1])
    s["parts"] = np.ascontiguousarray(tpl.flip_parts()[s["parts"][:, ::-1]])
    for mk in SAMPLE_MARKUPS:
        perm = tpl.flip_permutation(mk)
        lm = s[f"lm_{mk}"][perm].copy()
        lm[:, 1] = (size - 1) - lm[:, 1]
        if not s[f"has_{mk}"]:
            lm[:] = 0
        s[f"lm_{mk}"] = lm.astype(np.float32)
        s[f"vis_{mk}"] = s[f"vis_{mk}"][perm].copy()
    if "pose" in s:
        s["pose"] = s["pose"] * np.array([-1, 1, -1], np.float32)
    return s


# ======================================================================================
# real samples


def real_sample(face, cfg=None, rng=None, augment=True, derived_markups=True):
    """A dense sample from a real annotated face (jittered crop + photometric aug).

    Parameters
    ----------
    face : `AnnotatedFace`
    cfg : `SynthConfig`
    rng : `numpy.random.Generator`
    augment : `bool`
        Jitter the crop and apply photometric augmentation.
    derived_markups : `bool`
        Also give the markups that were not annotated, projected from the fitted
        template (``has_`` = 1); otherwise they are absent (``has_`` = 0).
    """
    cfg = cfg or SynthConfig()
    rng = rng if rng is not None else np.random.default_rng(0)
    size = cfg.size
    ref = face.annotations.get("ibug68", face.fit.shape68)
    A = _jittered_crop(ref, cfg, rng, jitter=augment)  # crop -> image
    Ainv = _invert(A)
    img = _warp_pixels(face.pixels, A, size)
    fit_c = face.fit.warped(Ainv)
    gt = rasterise(fit_c, (size, size))
    lms = _markup_landmarks(fit_c, gt, face.annotations, Ainv)
    if not derived_markups:
        lms = {m: v for m, v in lms.items() if m in face.annotations}
    if augment and cfg.photometric:
        img = photometric(img, rng)
    s = _pack(img, gt, lms)
    if augment and rng.random() < cfg.p_flip:
        s = flip_sample(s, face.fit.template)
    return s


# ======================================================================================
# synthetic samples


class TexturedFace:
    """A fitted face with per-vertex colours, ready to be re-posed.

    Vertices seen in the source image take the image's colour there; unseen ones the
    colour of their mirror vertex if that was seen, else of the nearest seen vertex.
    """

    def __init__(self, face):
        self.face = face
        fit = face.fit
        tpl = fit.template
        self.template = tpl
        H, W = face.shape
        tri, bary, zbuf = rasterise_mesh(
            fit.vertices_xy, fit.depth, tpl.trilist, (H, W)
        )
        xy = fit.vertices_xy
        r = np.clip(np.rint(xy[:, 1]).astype(int), 0, H - 1)
        c = np.clip(np.rint(xy[:, 0]).astype(int), 0, W - 1)
        inside = (
            (xy[:, 0] >= 0)
            & (xy[:, 0] <= W - 1)
            & (xy[:, 1] >= 0)
            & (xy[:, 1] <= H - 1)
        )
        front = fit.depth <= zbuf[r, c] + 0.02 * fit.scale + 0.5
        normals = tpl.vertex_normals() @ fit.rotation.T  # camera frame
        facing = normals[:, 2] < -0.25
        seen = inside & front & facing
        cols = np.stack(
            [
                ndimage.map_coordinates(face.pixels[k], [xy[:, 1], xy[:, 0]], order=1)
                for k in range(3)
            ],
            1,
        )
        if seen.sum() < 10:
            raise ValueError(f"{face.name}: too few face vertices visible to texture")
        mir = tpl.mirror
        fill = ~seen & seen[mir]
        cols[fill] = cols[mir[fill]]
        have = seen | fill
        if (~have).any():
            j = cKDTree(tpl.points[have]).query(tpl.points[~have])[1]
            cols[~have] = cols[np.nonzero(have)[0][j]]
        self.colours = np.clip(cols, 0, 1).astype(np.float32)
        self.seen = seen
        # 3D shape in camera frame (pixels), centred
        V = np.concatenate([fit.vertices_xy, fit.depth[:, None]], 1)
        self.centre = V.mean(0)
        self.vertices = V - self.centre
        self.rotation = fit.rotation
        self.scale = fit.scale
        self._context = None

    def context(self, size=384, fill_sigma=0.12):
        """The source image around the face with the face itself filled in (cached).

        A square of three face widths around the face, resampled to ``size`` pixels,
        where the face region (slightly dilated) is replaced by a normalised-convolution
        blur of its surroundings, so that the hair, ears, neck and scene remain but no
        ghost of the original face shows beside a re-posed one.

        Returns
        -------
        pixels : ``(3, size, size)`` `ndarray`
        ctx_to_image : ``(2, 3)`` `ndarray`
            Maps context (y, x) to source-image (y, x).
        """
        if self._context is not None and self._context[0].shape[-1] == size:
            return self._context
        face = self.face
        xy = face.fit.vertices_xy
        lo, hi = xy.min(0), xy.max(0)
        centre = ((lo + hi) / 2)[::-1]
        side = 3.0 * float((hi - lo).max())
        A = _crop_transform(centre, side, size, 0.0)
        px = _warp_pixels(face.pixels, A, size)
        # the face region in the context frame (rasterise the fit there)
        fit_ctx = face.fit.warped(_invert(A))
        tri, _, _ = rasterise_mesh(
            fit_ctx.vertices_xy, fit_ctx.depth, self.template.trilist, (size, size)
        )
        m = ndimage.binary_dilation(tri >= 0, iterations=max(2, size // 64))
        w = (~m).astype(np.float32)
        sigma = fill_sigma * size / 3.0
        num = ndimage.gaussian_filter(px * w[None], (0, sigma, sigma))
        den = ndimage.gaussian_filter(w, sigma)[None]
        fill = num / np.maximum(den, 1e-3)
        px = np.where(m[None], fill, px).astype(np.float32)
        self._context = (px, A)
        return self._context

    def posed(self, yaw, pitch, roll):
        """A `TemplateFit` of this face rotated to an absolute pose (degrees), centred
        at the origin in pixels of the source image."""
        from scipy.spatial.transform import Rotation

        # absolute target rotation: template -> camera
        Rt = Rotation.from_euler("ZXY", [-roll, pitch, yaw], degrees=True).as_matrix()
        Rnew = np.diag([1.0, -1.0, -1.0]) @ Rt
        dR = Rnew @ self.rotation.T
        V = self.vertices @ dR.T
        return TemplateFit(
            self.template,
            Rnew,
            self.scale,
            np.zeros(2),
            V[:, :2],
            V[:, 2],
            None,
            0.0,
            0.0,
        )


def _background(size, rng, pool):
    """A random background: a crop of a pool image, a gradient or smooth noise."""
    kind = rng.random()
    if pool and kind < 0.5:
        px = pool[int(rng.integers(len(pool)))]
        H, W = px.shape[1:]
        side = rng.uniform(0.2, 1.0) * min(H, W)
        cy = rng.uniform(side / 2, max(H - side / 2, side / 2 + 1e-3))
        cx = rng.uniform(side / 2, max(W - side / 2, side / 2 + 1e-3))
        A = _crop_transform((cy, cx), side, size, 0.0, rng.uniform(-30, 30))
        bg = _warp_pixels(px, A, size)
        if rng.random() < 0.5:
            bg = bg[:, :, ::-1]
        return np.ascontiguousarray(bg)
    g = np.linspace(0, 1, size, dtype=np.float32)
    yy, xx = np.meshgrid(g, g, indexing="ij")
    if kind < 0.75:
        a = rng.uniform(0, 2 * np.pi)
        t = np.cos(a) * xx + np.sin(a) * yy
        t = (t - t.min()) / max(np.ptp(t), 1e-6)
        c0, c1 = rng.random(3), rng.random(3)
        bg = c0[:, None, None] * (1 - t) + c1[:, None, None] * t
    else:
        n = int(rng.integers(3, 9))
        coarse = rng.random((3, n, n))
        g2 = np.linspace(0, n - 1, size)
        yy2, xx2 = np.meshgrid(g2, g2, indexing="ij")
        bg = np.stack([ndimage.map_coordinates(c, [yy2, xx2], order=1) for c in coarse])
        bg = np.clip(bg, 0, 1)
    bg = bg + rng.normal(0, rng.uniform(0, 0.05), bg.shape)
    return np.clip(bg, 0, 1).astype(np.float32)


def _compose(A, B):
    """``A`` after ``B`` for (2, 3) affine maps."""
    M = A[:, :2] @ B[:, :2]
    return np.concatenate([M, (A[:, :2] @ B[:, 2] + A[:, 2])[:, None]], 1)


def _context_background(textured, lm68_posed, A, size):
    """The source's surroundings moved with the face (a similarity on the inner
    landmarks from the posed face back to the source image)."""
    ctx, ctx_to_image = textured.context()
    inner = slice(17, 68)
    src = textured.face.fit.landmarks("ibug68", march=False)[0][inner]
    # posed frame -> source image (least-squares similarity, no reflection)
    T = AlignmentSimilarity(PointCloud(lm68_posed[inner]), PointCloud(src)).h_matrix[:2]
    M = _compose(_invert(ctx_to_image), _compose(T, A))  # crop -> context
    return _warp_pixels(ctx, M, size)


def synthetic_sample(textured, cfg=None, rng=None, backgrounds=()):
    """A re-posed render of a `TexturedFace` with exact dense ground truth.

    Parameters
    ----------
    textured : `TexturedFace`
    cfg : `SynthConfig`
    rng : `numpy.random.Generator`
    backgrounds : sequence of ``(3, H, W)`` float arrays
        Pool of images to crop backgrounds from (e.g. the other source images).
    """
    cfg = cfg or SynthConfig()
    rng = rng if rng is not None else np.random.default_rng(0)
    size = cfg.size
    # yaw: half the samples anywhere in the range, half near-profile-heavy
    if rng.random() < 0.5:
        yaw = rng.uniform(-cfg.max_yaw, cfg.max_yaw)
    else:
        yaw = np.sign(rng.uniform(-1, 1)) * cfg.max_yaw * np.sqrt(rng.random())
    pitch = rng.uniform(-cfg.max_pitch, cfg.max_pitch)
    roll = rng.uniform(-cfg.max_roll, cfg.max_roll)
    posed = textured.posed(yaw, pitch, roll)
    lm68, _ = posed.landmarks("ibug68")
    A = _jittered_crop(lm68, cfg, rng, jitter=True)
    Ainv = _invert(A)
    fit_c = posed.warped(Ainv)
    gt = rasterise(fit_c, (size, size))
    # texture + Lambertian relighting
    tpl = textured.template
    tri, bary = gt.triangles, gt.barycentric
    mask = gt.mask
    b = bary[mask]  # (n, 3), face pixels only
    vid = tpl.trilist[tri[mask]]
    n = tpl.vertex_normals() @ fit_c.rotation.T  # camera frame (the template's normals)
    light = np.array([rng.uniform(-1, 1), rng.uniform(-1, 1), -rng.uniform(0.5, 1.5)])
    light /= np.linalg.norm(light)
    ka = rng.uniform(*cfg.ambient)
    shade_v = ka + (1 - ka) * 1.3 * np.clip(n @ light, 0, 1)
    shade = np.einsum("nk,nk->n", b, shade_v[vid])
    col = np.einsum("nk,nkc->nc", b, textured.colours[vid]) * shade[:, None]
    tint = rng.uniform(0.85, 1.15, 3)
    face_rgb = np.zeros((3, size, size), np.float32)
    face_rgb[:, mask] = np.clip(col * tint, 0, 1).T
    if rng.random() < cfg.p_context:
        bg = _context_background(textured, lm68, A, size)
    else:
        pool = list(backgrounds) if rng.random() < cfg.p_image_background else []
        bg = _background(size, rng, pool)
    # anti-aliased edge: boundary pixels of the mask mix in some background
    alpha = mask * (0.5 + 0.5 * ndimage.gaussian_filter(mask.astype(np.float32), 0.7))
    img = face_rgb * alpha[None] + bg * (1 - alpha[None])
    if cfg.photometric:
        img = photometric(img, rng, strength=0.7)
    lms = _markup_landmarks(fit_c, gt, None)
    s = _pack(img.astype(np.float32), gt, lms)
    s["pose"] = np.array([yaw, pitch, roll], np.float32)
    if rng.random() < cfg.p_flip:
        s = flip_sample(s, tpl)
    return s


class DataEngine:
    """Deterministic sample source: item ``i`` is a pure function of ``(seed, i)``.

    A fraction ``real_fraction`` of the items are augmented real crops
    (:func:`real_sample`), the others re-posed renders (:func:`synthetic_sample`) of a
    random source face over a background cropped from the *other* sources (or a
    procedural one).

    Parameters
    ----------
    faces : list of `AnnotatedFace`
    config : `SynthConfig`
    seed : `int`
    real_fraction : `float`
    """

    def __init__(self, faces, config=None, seed=0, real_fraction=0.0):
        if not faces:
            raise ValueError("DataEngine: no source faces")
        self.faces = list(faces)
        self.textured = [TexturedFace(f) for f in self.faces]
        self.config = config or SynthConfig()
        self.seed = int(seed)
        self.real_fraction = float(real_fraction)

    def __str__(self):
        return (
            f"DataEngine: {len(self.faces)} source faces, S={self.config.size}, "
            f"seed={self.seed}, real fraction {self.real_fraction:.2f}"
        )

    def sample(self, index):
        """The numpy dense sample number ``index``."""
        rng = np.random.default_rng([self.seed, int(index)])
        k = int(rng.integers(len(self.faces)))
        if rng.random() < self.real_fraction:
            s = real_sample(self.faces[k], self.config, rng, augment=True)
            s["pose"] = np.array(
                self.faces[k].fit.yaw_pitch_roll, np.float32
            )  # source pose
            return s
        pool = [f.pixels for j, f in enumerate(self.faces) if j != k]
        return synthetic_sample(self.textured[k], self.config, rng, pool)


# ======================================================================================
# shards


def write_shards(samples, out_dir, shard_size=256, meta=None, start=0):
    """Write an iterable of dense samples as npz shards ``shard_00000.npz``, ...

    Every shard is written atomically and holds stacked arrays (one key per sample key)
    plus ``index`` (the global sample indices). ``meta.json`` records the settings.

    Returns
    -------
    paths : `list` of `Path`
    """
    from menpo_densereg.atomic import atomic_path, atomic_write_text

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths, buf, k = [], [], start

    def flush():
        nonlocal buf
        if not buf:
            return
        keys = buf[0][1].keys()
        arrays = {key: np.stack([b[1][key] for b in buf]) for key in keys}
        arrays["index"] = np.array([b[0] for b in buf], dtype=np.int64)
        path = out_dir / f"shard_{buf[0][0]:07d}.npz"
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
        paths.append(path)
        buf = []

    for s in samples:
        buf.append((k, s))
        k += 1
        if len(buf) >= shard_size:
            flush()
    flush()
    if meta is not None:
        atomic_write_text(
            out_dir / "meta.json", json.dumps(meta, indent=2, default=str)
        )
    return paths


def list_shards(cache_dir):
    """Sorted shard paths of a cache folder (raises if there are none)."""
    paths = sorted(Path(cache_dir).glob("shard_*.npz"))
    if not paths:
        raise FileNotFoundError(f"no shard_*.npz files in {cache_dir}")
    return paths


def read_shard(path):
    """Load a shard as a `dict` of stacked arrays (``allow_pickle=False``)."""
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except Exception as e:
        raise ValueError(f"{path}: not a readable dense-sample shard ({e})") from e


def config_dict(cfg):
    """A JSON-able dict of a `SynthConfig`."""
    return asdict(cfg)
