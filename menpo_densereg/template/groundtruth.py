"""Dense ground truth from 68 landmarks: fit the face template, z-buffer rasterise its UV.

:func:`fit_template` estimates a scaled-orthographic camera (rotation, scale, 2D
translation) that projects the template's 68 landmarks onto an annotation, with *landmark
marching* for the jaw contour (under yaw the annotated contour is the silhouette, so each
jaw landmark slides along a horizontal row of template points to the outermost one).
The remaining residuals are removed by a smooth non-rigid correction (a lightly
regularised thin-plate spline of the landmark residuals in the image plane), so the
fitted surface passes through the annotated points (to a few pixels where the template
cannot follow, e.g. inner lips of an open mouth: the template's mouth is closed).

:func:`rasterise` renders the fitted mesh with a vectorised z-buffer rasteriser
(:func:`rasterise_mesh`) into per-pixel (u, v), depth Z in [0, 1], a face mask and part
labels (:class:`DenseGroundTruth`, with menpo ``MaskedImage`` views).

Coordinates: public points are menpo ``(y, x)``; internally the camera works in
``(x, y)`` = (column, row); depth grows away from the camera.
"""

import numpy as np
from menpo.image import BooleanImage, Image, MaskedImage
from menpo.shape import PointCloud
from scipy.optimize import least_squares
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from menpo_densereg.data.markups import check_shape, get_markup
from menpo_densereg.template.face import FaceTemplate

__all__ = [
    "TemplateFit",
    "DenseGroundTruth",
    "fit_template",
    "rasterise",
    "rasterise_mesh",
    "dense_ground_truth",
    "landmarks_from_uv",
]

# camera looking at a frontal template: x right, template y up -> image rows down,
# template z towards the viewer -> depth (away from the camera) decreasing
_FRONTAL = np.diag([1.0, -1.0, -1.0])
_JAW = np.arange(17)


# ======================================================================================
# rasteriser


def rasterise_mesh(xy, depth, trilist, shape_hw, cull_back=False, protect=None):
    """Z-buffer rasterisation of a triangle mesh (vectorised numpy).

    Parameters
    ----------
    xy : ``(n_vertices, 2)`` `ndarray`
        Vertex positions in pixels as ``(x, y)`` = (column, row); pixel centres are at
        integer coordinates.
    depth : ``(n_vertices,)`` `ndarray`
        Distance from the camera (smaller = in front).
    trilist : ``(n_triangles, 3)`` `ndarray` of int
    shape_hw : ``(H, W)``
    cull_back : `bool`
        Skip triangles facing away from the camera (for the template's orientation and a
        proper rotation these have positive signed area in (column, row) coordinates).
        The face template is an open surface, so without culling its inside shows
        through at extreme poses.
    protect : ``(n_triangles,)`` `ndarray` of bool, optional
        Triangles never culled (e.g. those whose smooth normal faces the camera, so
        that small folds of a deformation leave no holes).

    Returns
    -------
    tri : ``(H, W)`` `ndarray` of int
        Index of the visible triangle, -1 on background.
    bary : ``(H, W, 3)`` `ndarray`
        Barycentric weights of the pixel in that triangle (0 on background).
    zbuf : ``(H, W)`` `ndarray`
        Depth of the visible surface (`inf` on background).
    """
    H, W = int(shape_hw[0]), int(shape_hw[1])
    xy = np.asarray(xy, dtype=np.float64)
    depth = np.asarray(depth, dtype=np.float64)
    P = xy[trilist]  # (T, 3, 2)
    x0, y0 = P[:, 0, 0], P[:, 0, 1]
    x1, y1 = P[:, 1, 0], P[:, 1, 1]
    x2, y2 = P[:, 2, 0], P[:, 2, 1]
    area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
    xmin = np.maximum(np.ceil(P[:, :, 0].min(1)), 0)
    xmax = np.minimum(np.floor(P[:, :, 0].max(1)), W - 1)
    ymin = np.maximum(np.ceil(P[:, :, 1].min(1)), 0)
    ymax = np.minimum(np.floor(P[:, :, 1].max(1)), H - 1)
    ok = (np.abs(area) > 1e-12) & (xmax >= xmin) & (ymax >= ymin)
    if cull_back:
        front = area < 0
        if protect is not None:
            front |= np.asarray(protect, dtype=bool)
        ok &= front
    ok &= np.isfinite(P).all(axis=(1, 2))
    tri_id = np.full(H * W, -1, dtype=np.int64)
    bary = np.zeros((H * W, 3))
    zbuf = np.full(H * W, np.inf)
    if not ok.any():
        return tri_id.reshape(H, W), bary.reshape(H, W, 3), zbuf.reshape(H, W)
    idx = np.nonzero(ok)[0]
    bw = (xmax[idx] - xmin[idx] + 1).astype(np.int64)
    bh = (ymax[idx] - ymin[idx] + 1).astype(np.int64)
    counts = bw * bh
    starts = np.cumsum(counts) - counts
    t = np.repeat(np.arange(len(idx)), counts)
    k = np.arange(counts.sum()) - starts[t]
    px = xmin[idx][t] + k % bw[t]
    py = ymin[idx][t] + k // bw[t]
    ti = idx[t]
    a = area[ti]
    w1 = ((px - x0[ti]) * (y2[ti] - y0[ti]) - (x2[ti] - x0[ti]) * (py - y0[ti])) / a
    w2 = ((x1[ti] - x0[ti]) * (py - y0[ti]) - (px - x0[ti]) * (y1[ti] - y0[ti])) / a
    w0 = 1.0 - w1 - w2
    eps = -1e-7
    inside = (w0 >= eps) & (w1 >= eps) & (w2 >= eps)
    w0, w1, w2, ti = w0[inside], w1[inside], w2[inside], ti[inside]
    pid = (py[inside] * W + px[inside]).astype(np.int64)
    d = depth[trilist[ti]]
    z = w0 * d[:, 0] + w1 * d[:, 1] + w2 * d[:, 2]
    np.minimum.at(zbuf, pid, z)
    win = z <= zbuf[pid]
    tri_id[pid[win]] = ti[win]
    bary[pid[win]] = np.stack([w0[win], w1[win], w2[win]], 1)
    return tri_id.reshape(H, W), bary.reshape(H, W, 3), zbuf.reshape(H, W)


# ======================================================================================
# fitting


class TemplateFit:
    """The face template fitted to one image's 68 landmarks.

    Attributes
    ----------
    rotation : ``(3, 3)`` `ndarray`
        Template -> camera rotation (camera: x = column, y = row, z away from the camera).
    scale : `float`
        Pixels per template unit (the template's outer-eye distance is 1).
    translation : ``(2,)`` `ndarray`
        ``(x, y)`` image translation.
    vertices_xy : ``(n_vertices, 2)`` `ndarray`
        Projected vertices ``(x, y)`` including the non-rigid correction.
    depth : ``(n_vertices,)`` `ndarray`
        Vertex depth in pixels (away from the camera).
    marching : ``(17,)`` `ndarray` of int
        Chosen contour candidate of every jaw landmark (0 = the template's jaw point).
    reprojection_error : `float`
        Mean distance (px) between the annotated 68 landmarks and the rigidly projected
        (marched) template landmarks, before the non-rigid correction.
    max_correction : `float`
        Largest displacement (px) of the non-rigid correction at a landmark.
    landmark_residual : `float`
        Largest distance (px) between an annotated landmark and the fitted surface's
        landmark after the correction (~0 with ``nonrigid``).
    """

    def __init__(
        self,
        template,
        rotation,
        scale,
        translation,
        vertices_xy,
        depth,
        marching,
        reprojection_error,
        max_correction,
        shape68=None,
    ):
        self.template = template
        self.rotation = rotation
        self.scale = float(scale)
        self.translation = np.asarray(translation, dtype=float)
        self.vertices_xy = vertices_xy
        self.depth = depth
        self.marching = marching
        self.reprojection_error = float(reprojection_error)
        self.max_correction = float(max_correction)
        self.shape68 = shape68
        self.landmark_residual = float("nan")

    def __str__(self):
        y, p, r = self.yaw_pitch_roll
        return (
            f"TemplateFit: yaw {y:+.1f} deg, pitch {p:+.1f} deg, roll {r:+.1f} deg, "
            f"scale {self.scale:.1f} px/unit, reprojection error "
            f"{self.reprojection_error:.2f} px (rigid), max non-rigid correction "
            f"{self.max_correction:.2f} px"
        )

    @property
    def yaw_pitch_roll(self):
        """Head pose in degrees (yaw > 0: the face turns to the image-right)."""
        R = _FRONTAL @ self.rotation  # template -> (x right, y up, z to viewer) frame
        # R = Rz(roll) Rx(pitch) Ry(yaw) applied to template points
        e = Rotation.from_matrix(R).as_euler("ZXY", degrees=True)
        roll, pitch, yaw = e
        return float(yaw), float(pitch), float(-roll)

    def landmark_uv(self, markup="ibug68"):
        """(u, v) of the landmarks as fitted (jaw points after marching)."""
        name = get_markup(markup).name
        uv = self.template.landmark_uv(name)
        if name in ("ibug68", "wflw98"):
            cand = self.template.march_points(self.template.uv, name)
            n = cand.shape[0]
            if name == "ibug68" and self.marching is not None:
                choice = self.marching
            else:
                V = np.concatenate([self.vertices_xy, self.depth[:, None]], 1)
                cxy = self.template.march_points(V, name)[..., :2]
                choice = _march_choice(cxy, self.rotation, name)
            uv[:n] = cand[np.arange(n), choice]
        return uv

    def landmarks(self, markup="ibug68", march=True):
        """Projected landmarks ``(n, 2)`` (y, x) and their depths ``(n,)``.

        With ``march`` the jaw contour (68 and 98 markups) follows the silhouette.
        """
        name = get_markup(markup).name
        V = np.concatenate([self.vertices_xy, self.depth[:, None]], 1)
        pts = self.template.landmark_points(V, name)
        if march and name in ("ibug68", "wflw98"):
            cand = self.template.march_points(V, name)
            choice = _march_choice(cand[..., :2], self.rotation, name)
            pts[: cand.shape[0]] = cand[np.arange(cand.shape[0]), choice]
        return pts[:, [1, 0]], pts[:, 2]

    def warped(self, A):
        """This fit carried by a 2D similarity ``A`` (2 x 3, acting on (y, x) points).

        Used to render the ground truth directly in a crop.
        """
        A = np.asarray(A, dtype=float)
        s = np.sqrt(abs(np.linalg.det(A[:, :2])))
        yx = self.vertices_xy[:, [1, 0]] @ A[:, :2].T + A[:, 2]
        # the rotation of the similarity, in (x, y)
        M = A[:, :2][::-1, ::-1] / s  # (x, y) version
        R3 = np.eye(3)
        R3[:2, :2] = M
        return TemplateFit(
            self.template,
            R3 @ self.rotation,
            self.scale * s,
            yx[:, [1, 0]].mean(0),
            yx[:, [1, 0]],
            self.depth * s,
            self.marching,
            self.reprojection_error * s,
            self.max_correction * s,
        )


def _as_points(shape, what):
    if isinstance(shape, PointCloud):
        pts = shape.points
    else:
        pts = np.asarray(shape, dtype=float)
    return check_shape(pts, "ibug68", what).astype(float)


def _project(R, s, t, X):
    C = X @ R.T
    return s * C[:, :2] + t, s * C[:, 2]


def _march_choice(cand_xy, R, markup):
    """Index of the outermost contour candidate for every contour point."""
    n = cand_xy.shape[0]
    ex = R[:2, 0]  # template x axis in the image
    ex = ex / max(np.linalg.norm(ex), 1e-12)
    mid = n // 2
    sign = np.where(np.arange(n) < mid, -1.0, 1.0)
    proj = cand_xy @ ex  # (n, K)
    choice = np.argmax(sign[:, None] * proj, axis=1)
    choice[mid] = 0
    return choice


def _rigid_fit(X, y, R0=None):
    """Scaled-orthographic fit of 3D points ``X`` to 2D points ``y`` (x, y)."""
    if R0 is None:
        Xh = np.concatenate([X, np.ones((len(X), 1))], 1)
        sol, *_ = np.linalg.lstsq(Xh, y, rcond=None)
        A = sol[:3].T  # (2, 3)
        n1, n2 = np.linalg.norm(A[0]), np.linalg.norm(A[1])
        r1 = A[0] / n1
        r2 = A[1] - (A[1] @ r1) * r1
        r2 /= np.linalg.norm(r2)
        R0 = np.stack([r1, r2, np.cross(r1, r2)])
        s0 = (n1 + n2) / 2
    else:
        s0 = None
    U, _, Vt = np.linalg.svd(R0)
    R0 = U @ Vt
    if s0 is None:
        C = X @ R0.T
        Cc, yc = C[:, :2] - C[:, :2].mean(0), y - y.mean(0)
        s0 = (Cc * yc).sum() / max((Cc**2).sum(), 1e-12)
    t0 = y.mean(0) - s0 * (X @ R0.T)[:, :2].mean(0)

    def resid(p):
        R = Rotation.from_rotvec(p[:3]).as_matrix() @ R0
        return (p[3] * (X @ R.T)[:, :2] + p[4:6] - y).ravel()

    p0 = np.concatenate([[0, 0, 0, s0], t0])
    sol = least_squares(resid, p0, method="lm", max_nfev=200)
    R = Rotation.from_rotvec(sol.x[:3]).as_matrix() @ R0
    return R, sol.x[3], sol.x[4:6]


def _tps_kernel(d2):
    with np.errstate(divide="ignore", invalid="ignore"):
        k = 0.5 * d2 * np.log(d2)
    return np.nan_to_num(k)


def _tps_correction(centres, residuals, scale, smoothing=1e-5):
    """Thin-plate-spline interpolant of 2D residuals (lightly regularised).

    Coordinates are normalised by ``scale`` (pixels per template unit) so that the
    regulariser does not depend on the image size. Returns ``f(points) -> displacement``.
    """
    c = centres / scale
    n = len(c)
    K = _tps_kernel(((c[:, None] - c[None]) ** 2).sum(-1)) + smoothing * np.eye(n)
    P = np.concatenate([np.ones((n, 1)), c], 1)
    A = np.zeros((n + 3, n + 3))
    A[:n, :n], A[:n, n:], A[n:, :n] = K, P, P.T
    b = np.zeros((n + 3, 2))
    b[:n] = residuals
    sol = np.linalg.lstsq(A, b, rcond=None)[0]
    w, aff = sol[:n], sol[n:]

    def f(pts):
        q = pts / scale
        e = _tps_kernel(((q[:, None] - c[None]) ** 2).sum(-1))
        return e @ w + np.concatenate([np.ones((len(q), 1)), q], 1) @ aff

    return f


def fit_template(
    image_or_shape,
    shape68=None,
    n_iters=3,
    nonrigid=True,
    template=None,
):
    """Fit the face template to 68 landmarks.

    Parameters
    ----------
    image_or_shape : `menpo.image.Image` or `PointCloud` or ``(68, 2)`` `ndarray`
        An image carrying 68 landmarks (its only / ``"PTS"`` group), or the landmarks.
    shape68 : `PointCloud` or ``(68, 2)`` `ndarray`, optional
        The 68 landmarks ``(y, x)`` (overrides the image's).
    n_iters : `int`
        Rounds of (pose fit, landmark marching).
    nonrigid : `bool`
        Apply the non-rigid correction so the surface passes through the landmarks.
    template : `FaceTemplate`, optional

    Returns
    -------
    fit : `TemplateFit`

    Raises
    ------
    ValueError
        If the landmarks are not 68 finite points or are degenerate (collinear / tiny).
    """
    tpl = template or FaceTemplate.load()
    if shape68 is None:
        if isinstance(image_or_shape, Image):
            lms = image_or_shape.landmarks
            if lms.n_groups == 0:
                raise ValueError("image: has no landmarks; pass shape68")
            g = "PTS" if "PTS" in lms.group_labels else lms.group_labels[0]
            shape68 = lms[g]
        else:
            shape68 = image_or_shape
    pts = _as_points(shape68, "shape68")
    extent = pts.max(0) - pts.min(0)
    if extent.min() < 2.0:
        raise ValueError(
            f"shape68: degenerate landmarks (extent {extent[0]:.2f} x {extent[1]:.2f} px)"
        )
    sv = np.linalg.svd(pts - pts.mean(0), compute_uv=False)
    if sv[1] < 1e-3 * sv[0]:
        raise ValueError("shape68: degenerate landmarks (collinear)")
    y = pts[:, [1, 0]]  # (x, y)
    V = tpl.points
    X = tpl.landmark_points(V, "ibug68")
    cand3 = tpl.march_points(V, "ibug68")  # (17, K, 3)
    marching = np.zeros(17, dtype=np.int64)
    R = None
    for _ in range(n_iters):
        Xm = X.copy()
        Xm[_JAW] = cand3[_JAW, marching]
        R, s, t = _rigid_fit(Xm, y, R)
        cand_xy = s * (cand3 @ R.T)[..., :2] + t
        new = _march_choice(cand_xy, R, "ibug68")
        if np.array_equal(new, marching):
            break
        marching = new
    Xm = X.copy()
    Xm[_JAW] = cand3[_JAW, marching]
    R, s, t = _rigid_fit(Xm, y, R)
    if not (np.isfinite(s) and s > 0):
        raise ValueError("shape68: the template fit failed (degenerate landmarks)")
    lm_xy, _ = _project(R, s, t, Xm)
    res = y - lm_xy
    err = float(np.linalg.norm(res, axis=1).mean())
    vxy, vdepth = _project(R, s, t, V)
    max_corr = 0.0
    if nonrigid:
        f = _tps_correction(lm_xy, res, s)
        vxy = vxy + f(vxy)
        # residual of the correction at the landmarks (through the anchors)
        after = tpl.landmark_points(np.concatenate([vxy, vdepth[:, None]], 1), "ibug68")
        cand = tpl.march_points(np.concatenate([vxy, vdepth[:, None]], 1), "ibug68")
        after[_JAW] = cand[_JAW, marching]
        max_corr = float(np.linalg.norm(res, axis=1).max())
        exact_err = float(np.linalg.norm(after[:, :2] - y, axis=1).max())
    else:
        exact_err = float(np.linalg.norm(res, axis=1).max())
    fit = TemplateFit(tpl, R, s, t, vxy, vdepth, marching, err, max_corr, shape68=pts)
    fit.landmark_residual = exact_err
    return fit


# ======================================================================================
# dense ground truth


class DenseGroundTruth:
    """Per-pixel ground truth of one face: (u, v), depth, mask and part labels.

    Attributes (raw arrays, ``(H, W)``)
    -----------------------------------
    u, v : float32, in [0, 1] on the face, 0 on background
    depth : float32, Z in [0, 1] on the face (0 = nearest point of the face), 0 elsewhere
    mask : bool, True on the visible face surface
    parts : int64, 0 background, 1..8 parts (:attr:`part_names`)
    zbuffer : float64, depth in pixels (`inf` on background), for visibility tests
    triangles : int64, visible triangle (-1 on background); barycentric : (H, W, 3)
    """

    def __init__(self, u, v, depth, mask, parts, zbuffer, part_names, tol):
        self.u, self.v, self.depth, self.mask = u, v, depth, mask
        self.parts, self.zbuffer, self.part_names = parts, zbuffer, part_names
        self._tol = tol

    def __str__(self):
        h, w = self.mask.shape
        return (
            f"DenseGroundTruth {h}x{w}: {int(self.mask.sum())} face pixels, "
            f"parts {np.unique(self.parts[self.mask]).tolist()}"
        )

    @property
    def shape(self):
        return self.mask.shape

    @property
    def mask_image(self):
        """The face mask as a menpo `BooleanImage`."""
        return BooleanImage(self.mask.copy())

    @property
    def uv_image(self):
        """(u, v) as a 2-channel menpo `MaskedImage` masked to the face."""
        return MaskedImage(np.stack([self.u, self.v]), mask=self.mask.copy())

    @property
    def depth_image(self):
        """Depth Z as a menpo `MaskedImage`."""
        return MaskedImage(self.depth[None].copy(), mask=self.mask.copy())

    @property
    def parts_image(self):
        """Part labels (float) as a menpo `MaskedImage`."""
        return MaskedImage(self.parts[None].astype(float), mask=self.mask.copy())

    def is_visible(self, points_yx, depth):
        """Whether 3D points (image (y, x) + depth in px) are on the visible surface.

        A point is visible when it lies inside the image, on the face, and not behind
        the z-buffer (tolerance 5 % of the template's outer-eye distance + 0.5 px).
        """
        p = np.asarray(points_yx, dtype=float)
        d = np.asarray(depth, dtype=float)
        H, W = self.mask.shape
        r = np.rint(p[:, 0]).astype(np.int64)
        c = np.rint(p[:, 1]).astype(np.int64)
        inside = (r >= 0) & (r < H) & (c >= 0) & (c < W) & np.isfinite(d)
        vis = np.zeros(len(p), dtype=bool)
        rr, cc = r[inside], c[inside]
        # the surface at the point's pixel; contour points on the silhouette edge may
        # fall just off the mask: then the nearest surface in a 3x3 neighbourhood
        best = self.zbuffer[rr, cc].copy()
        off = ~np.isfinite(best)
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                r2 = np.clip(rr[off] + dr, 0, H - 1)
                c2 = np.clip(cc[off] + dc, 0, W - 1)
                best[off] = np.minimum(best[off], self.zbuffer[r2, c2])
        vis[inside] = d[inside] <= best + self._tol
        return vis


def _front_facing(fit, threshold=0.0):
    """Triangles whose rotated template normal points towards the camera."""
    tn = fit.template.triangle_normals()
    return (tn @ fit.rotation[2]) < threshold


def rasterise(fit, shape_hw, cull_back=True):
    """Z-buffer render a `TemplateFit` into a `DenseGroundTruth` of size ``shape_hw``.

    Only the window covered by the projected mesh is rasterised, so large images cost
    no more than the face in them. ``cull_back`` drops back-facing triangles (the
    template is an open surface: its inside would show at extreme poses): those that
    project with reversed orientation *and* whose smooth normal, rotated by the fitted
    pose, faces away from the camera, so small folds of the non-rigid correction or of
    the decimation leave no holes.
    """
    tpl = fit.template
    H, W = int(shape_hw[0]), int(shape_hw[1])
    xy = fit.vertices_xy
    lo = np.clip(np.floor(xy.min(0)).astype(int) - 1, 0, [W - 1, H - 1])
    hi = np.clip(np.ceil(xy.max(0)).astype(int) + 1, 0, [W - 1, H - 1])
    wh = hi - lo + 1
    tri_w, bary_w, zbuf_w = rasterise_mesh(
        xy - lo,
        fit.depth,
        tpl.trilist,
        (int(wh[1]), int(wh[0])),
        cull_back=cull_back,
        protect=_front_facing(fit) if cull_back else None,
    )
    tri = np.full((H, W), -1, dtype=np.int64)
    bary = np.zeros((H, W, 3))
    zbuf = np.full((H, W), np.inf)
    win = (slice(lo[1], hi[1] + 1), slice(lo[0], hi[0] + 1))
    tri[win], bary[win], zbuf[win] = tri_w, bary_w, zbuf_w
    mask = tri >= 0
    u = np.zeros((H, W), np.float32)
    v = np.zeros((H, W), np.float32)
    m_w = tri_w >= 0
    vidx = tpl.trilist[tri_w[m_w]]  # (n, 3)
    uv = np.einsum("nk,nkc->nc", bary_w[m_w], tpl.uv[vidx])
    u[win][m_w] = uv[:, 0]
    v[win][m_w] = uv[:, 1]
    # depth normalised by the template's diameter at this scale
    diam = np.linalg.norm(np.ptp(tpl.points, axis=0)) * fit.scale
    dmin = fit.depth.min()
    Z = np.zeros((H, W), np.float32)
    Z[mask] = np.clip((zbuf[mask] - dmin) / diam, 0, 1)
    parts = np.zeros((H, W), np.int64)
    parts[mask] = tpl.parts_from_uv(u[mask], v[mask])
    gt = DenseGroundTruth(
        u, v, Z, mask, parts, zbuf, tpl.part_names, tol=0.05 * fit.scale + 0.5
    )
    gt.triangles, gt.barycentric = tri, bary
    return gt


def dense_ground_truth(image, shape=None, **kwargs):
    """Fit the template to an image's 68 landmarks and rasterise at the image's size.

    Parameters
    ----------
    image : `menpo.image.Image`
    shape : `PointCloud`, optional
        68 landmarks ``(y, x)``; default the image's landmarks.
    **kwargs
        Passed to :func:`fit_template`.

    Returns
    -------
    gt : `DenseGroundTruth`
    fit : `TemplateFit`
    """
    if not isinstance(image, Image):
        raise TypeError(f"image: expected a menpo Image, got {type(image).__name__}")
    fit = fit_template(image, shape, **kwargs)
    return rasterise(fit, image.shape), fit


def landmarks_from_uv(u, v, mask, landmark_uv, max_uv_distance=0.05):
    """Look landmarks up in a dense (u, v) field: the pixel whose (u, v) is nearest.

    The nearest face pixel is refined to sub-pixel precision by inverting a local affine
    model of the field (least squares over the 5 x 5 neighbourhood).

    Parameters
    ----------
    u, v : ``(H, W)`` `ndarray`
    mask : ``(H, W)`` `ndarray` of bool
    landmark_uv : ``(n, 2)`` `ndarray`
        Target (u, v) of every landmark.
    max_uv_distance : `float`
        Landmarks whose nearest (u, v) is farther than this are reported as not found.

    Returns
    -------
    points : ``(n, 2)`` `ndarray`
        ``(y, x)`` positions (NaN where not found).
    found : ``(n,)`` `ndarray` of bool
    """
    mask = np.asarray(mask, dtype=bool)
    q = np.asarray(landmark_uv, dtype=float)
    if q.ndim != 2 or q.shape[1] != 2:
        raise ValueError(f"landmark_uv: expected (n, 2), got {q.shape}")
    out = np.full((len(q), 2), np.nan)
    found = np.zeros(len(q), dtype=bool)
    rows, cols = np.nonzero(mask)
    if len(rows) == 0:
        return out, found
    fuv = np.stack([u[rows, cols], v[rows, cols]], 1)
    dist, j = cKDTree(fuv).query(q)
    H, W = mask.shape
    for i, (dd, jj) in enumerate(zip(dist, j)):
        if dd > max_uv_distance:
            continue
        r0, c0 = rows[jj], cols[jj]
        rs = slice(max(r0 - 2, 0), min(r0 + 3, H))
        cs = slice(max(c0 - 2, 0), min(c0 + 3, W))
        mm = mask[rs, cs]
        rr, cc = np.mgrid[rs, cs]
        A = np.stack([u[rs, cs][mm], v[rs, cs][mm], np.ones(mm.sum())], 1)
        B = np.stack([rr[mm], cc[mm]], 1).astype(float)
        pt = np.array([r0, c0], dtype=float)
        if len(A) >= 6:
            sol, *_ = np.linalg.lstsq(A, B, rcond=None)
            cand = np.array([q[i, 0], q[i, 1], 1.0]) @ sol
            if np.all(np.isfinite(cand)) and np.linalg.norm(cand - pt) <= 2.5:
                pt = cand
        out[i] = pt
        found[i] = True
    return out, found
