"""The 3D face template, its deformation-free UV space and the labellings defined on it.

The template is menpo3d's ``template.ply`` (the mean LSFM/Basel topology, 53k vertices)
with its 68 3D landmarks (``template.ljson``), trimmed to the face (the ears and the neck
below the jaw contour removed) and decimated by vertex clustering to a light mesh of a
few thousand vertices, so that rasterising a 256 x 256 sample is cheap.

UV space
    ``(u, v)`` in [0, 1]^2 is the optimal cylindrical unwrap of the template
    (:func:`menpo3d.unwrap.optimal_cylindrical_unwrap`): ``u`` runs from the image-left
    of a frontal face to its image-right, ``v`` from the top of the forehead down to the
    chin (like image rows). It does not depend on the pose or the identity.

Labellings (defined once, on the template)
    * landmark markups ``ibug68`` (exactly the template's 68 landmarks), ``wflw98``,
      ``lfpw29`` and ``five`` (placed in UV from the 68: contour mid-points, eyelid
      mid-points, eyebrow lower edges, eye centres). Each point is an *anchor*: a triangle
      of the light mesh and barycentric weights, so it follows any deformation of the mesh.
    * face parts, the 8 classes of DenseReg (plus 0 = background), as a label map over
      UV space (:attr:`FaceTemplate.part_map`) and per vertex.
    * contour candidates for landmark marching: for every jaw point a row of anchors
      running from the jaw towards the face's midline at the same height.

The generated data ship as ``menpo_densereg/data/face_template.npz`` (no pickle) and are
rebuilt from menpo3d's assets by ``scripts/make_template_data.py`` (or, if the file is
missing, on first load).
"""

from pathlib import Path

import numpy as np

__all__ = ["FaceTemplate", "PART_NAMES", "MARKUP_NAMES", "build_template_data"]

DATA_FILE = Path(__file__).resolve().parents[1] / "data" / "face_template.npz"

PART_NAMES = [
    "background",
    "left_eyebrow",
    "right_eyebrow",
    "left_eye",
    "right_eye",
    "upper_lip",
    "lower_lip",
    "nose",
    "skin",
]

MARKUP_NAMES = ("ibug68", "wflw98", "lfpw29", "five")

# mirror permutations (image-left <-> image-right) of the markups, used for flips
_PART_MAP_SIZE = 256
_N_MARCH = 12  # candidates per contour point
_GRID = 90  # vertex clustering grid (per UV axis)


def _markup_name(markup):
    from menpo_densereg.data.markups import get_markup

    return get_markup(markup).name


class FaceTemplate:
    """The light face template with UV space and labellings (use :meth:`load`).

    Attributes
    ----------
    points : ``(n_vertices, 3)`` `ndarray`
        Vertices (x right, y up, z towards the viewer), in units of the inter-ocular
        distance (outer eye corners), centred on the landmarks' centroid.
    trilist : ``(n_triangles, 3)`` `ndarray` of int
    uv : ``(n_vertices, 2)`` `ndarray`
        Deformation-free (u, v) in [0, 1]^2.
    vertex_parts : ``(n_vertices,)`` `ndarray` of int
        Part label of every vertex (index into :attr:`part_names`).
    part_map : ``(R, R)`` `ndarray` of uint8
        Part label over UV space: ``part_map[row(v), col(u)]``.
    part_names : `list` of `str`
        Index = label; 0 is background.
    mirror : ``(n_vertices,)`` `ndarray` of int
        The vertex nearest to each vertex's mirror image (x -> -x).
    """

    _cache = None

    def __init__(self, data):
        self.points = data["points"].astype(np.float64)
        self.trilist = data["trilist"].astype(np.int64)
        self.uv = data["uv"].astype(np.float64)
        self.part_map = data["part_map"].astype(np.uint8)
        self.vertex_parts = data["vertex_parts"].astype(np.int64)
        self.mirror = data["mirror"].astype(np.int64)
        self.part_names = list(PART_NAMES)
        self._anchors = {}
        self._markup_uv = {}
        for m in MARKUP_NAMES:
            self._anchors[m] = (
                data[f"{m}_tri"].astype(np.int64),
                data[f"{m}_bary"].astype(np.float64),
            )
            self._markup_uv[m] = data[f"{m}_uv"].astype(np.float64)
        self.march_tri = data["march_tri"].astype(np.int64)  # (17, K)
        self.march_bary = data["march_bary"].astype(np.float64)  # (17, K, 3)
        self.march_tri98 = data["march98_tri"].astype(np.int64)  # (33, K)
        self.march_bary98 = data["march98_bary"].astype(np.float64)
        self._vertex_normals = None

    # ----------------------------------------------------------------------------------
    @classmethod
    def load(cls, path=None):
        """The template (loaded once and cached).

        Parameters
        ----------
        path : `str` or `Path`, optional
            A template data file; default the one shipped with the package. If the
            shipped file is missing it is regenerated from menpo3d's assets.
        """
        if path is None and cls._cache is not None:
            return cls._cache
        p = Path(path) if path is not None else DATA_FILE
        if not p.exists():
            if path is not None:
                raise FileNotFoundError(f"template data file not found: {p}")
            data = build_template_data()
        else:
            try:
                with np.load(p, allow_pickle=False) as f:
                    data = {k: f[k] for k in f.files}
            except Exception as e:  # corrupt / foreign file
                raise ValueError(f"{p}: not a face template data file ({e})") from e
        missing = [k for k in ("points", "trilist", "uv") if k not in data]
        if missing:
            raise ValueError(f"{p}: not a face template data file (missing {missing})")
        t = cls(data)
        if path is None:
            cls._cache = t
        return t

    # ----------------------------------------------------------------------------------
    @property
    def n_vertices(self):
        return self.points.shape[0]

    @property
    def n_triangles(self):
        return self.trilist.shape[0]

    def __str__(self):
        return (
            f"FaceTemplate: {self.n_vertices} vertices, {self.n_triangles} triangles, "
            f"UV in [0, 1]^2 (cylindrical unwrap), markups {list(MARKUP_NAMES)}, "
            f"{len(self.part_names) - 1} parts + background"
        )

    def landmark_uv(self, markup):
        """The (u, v) of every landmark of ``markup`` (``"68"``, ``"wflw98"``, ...).

        Returns
        -------
        uv : ``(n_points, 2)`` `ndarray` in [0, 1]
        """
        name = _markup_name(markup)
        if name not in self._markup_uv:
            raise ValueError(
                f"markup {name!r} is not defined on the face template "
                f"(defined: {list(MARKUP_NAMES)})"
            )
        return self._markup_uv[name].copy()

    def anchors(self, markup):
        """``(vertex indices (n, 3), barycentric weights (n, 3))`` of a markup."""
        name = _markup_name(markup)
        if name not in self._anchors:
            raise ValueError(
                f"markup {name!r} is not defined on the face template "
                f"(defined: {list(MARKUP_NAMES)})"
            )
        tri, bary = self._anchors[name]
        return self.trilist[tri], bary

    def landmark_points(self, vertices, markup):
        """Positions of a markup's landmarks on a (deformed, posed) copy of the mesh.

        Parameters
        ----------
        vertices : ``(n_vertices, d)`` `ndarray`
        markup : `str`

        Returns
        -------
        points : ``(n_points, d)`` `ndarray`
        """
        idx, w = self.anchors(markup)
        return np.einsum("nk,nkd->nd", w, np.asarray(vertices)[idx])

    def march_points(self, vertices, markup="ibug68"):
        """Contour candidates ``(n_contour, K, d)`` for landmark marching."""
        name = _markup_name(markup)
        if name == "ibug68":
            tri, bary = self.march_tri, self.march_bary
        elif name == "wflw98":
            tri, bary = self.march_tri98, self.march_bary98
        else:
            raise ValueError(f"no contour marching defined for markup {name!r}")
        v = np.asarray(vertices)[self.trilist[tri]]  # (n, K, 3, d)
        return np.einsum("nkj,nkjd->nkd", bary, v)

    def flip_permutation(self, markup):
        """Index permutation that mirrors a markup's landmarks left <-> right.

        Derived from the template: the one-to-one assignment (Hungarian) of every
        landmark ``i`` to the landmark nearest to its mirror image ``(1 - u_i, v_i)``.
        """
        from scipy.optimize import linear_sum_assignment

        name = _markup_name(markup)
        key = "_flip_" + name
        if key not in self.__dict__:
            uv = self.landmark_uv(name)
            target = np.stack([1 - uv[:, 0], uv[:, 1]], 1)
            d = ((target[:, None] - uv[None]) ** 2).sum(-1)
            rows, perm = linear_sum_assignment(d)
            self.__dict__[key] = perm
        return self.__dict__[key].copy()

    def flip_parts(self):
        """Label map ``new = flip_parts()[old]`` swapping the left and right parts."""
        names = self.part_names
        out = np.arange(len(names))
        for i, n in enumerate(names):
            for a, b in (("left_", "right_"), ("right_", "left_")):
                if n.startswith(a):
                    out[i] = names.index(b + n[len(a) :])
        return out

    def parts_from_uv(self, u, v):
        """Part labels of UV coordinates (arrays of any shape) via :attr:`part_map`."""
        r = self.part_map.shape[0]
        cu = np.clip(np.rint(np.asarray(u) * (r - 1)), 0, r - 1).astype(np.int64)
        cv = np.clip(np.rint(np.asarray(v) * (r - 1)), 0, r - 1).astype(np.int64)
        return self.part_map[cv, cu]

    def triangle_normals(self):
        """Smooth unit normals of the triangles: the mean of their vertex normals.

        Robust to the few triangles that decimation flipped (used for back-face culling).
        """
        if "_tri_normals" not in self.__dict__:
            fn = self.vertex_normals()[self.trilist].mean(1)
            fn /= np.maximum(np.linalg.norm(fn, axis=1, keepdims=True), 1e-12)
            self.__dict__["_tri_normals"] = fn
        return self.__dict__["_tri_normals"]

    def vertex_normals(self, vertices=None):
        """Unit vertex normals (area-weighted) of the template or of ``vertices``."""
        if vertices is None and self._vertex_normals is not None:
            return self._vertex_normals
        p = self.points if vertices is None else np.asarray(vertices, dtype=float)
        t = self.trilist
        fn = np.cross(p[t[:, 1]] - p[t[:, 0]], p[t[:, 2]] - p[t[:, 0]])
        n = np.zeros_like(p)
        for k in range(3):
            np.add.at(n, t[:, k], fn)
        n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
        if vertices is None:
            self._vertex_normals = n
        return n


# ======================================================================================
# building the template data from menpo3d's assets


def _bary_locate(uv, tris_uv, q):
    """Triangle index and barycentric weights of UV points ``q`` (brute force)."""
    a, b, c = tris_uv[:, 0], tris_uv[:, 1], tris_uv[:, 2]
    v0, v1 = b - a, c - a
    d00 = (v0 * v0).sum(1)
    d01 = (v0 * v1).sum(1)
    d11 = (v1 * v1).sum(1)
    den = d00 * d11 - d01 * d01
    ok = np.abs(den) > 1e-18
    out_t = np.zeros(len(q), dtype=np.int64)
    out_w = np.zeros((len(q), 3))
    for i, pt in enumerate(q):
        v2 = pt - a
        d20 = (v2 * v0).sum(1)
        d21 = (v2 * v1).sum(1)
        with np.errstate(divide="ignore", invalid="ignore"):
            wb = (d11 * d20 - d01 * d21) / den
            wc = (d00 * d21 - d01 * d20) / den
        wa = 1 - wb - wc
        w = np.stack([wa, wb, wc], 1)
        viol = np.where(ok, np.maximum(-w.min(1), 0), np.inf)
        # prefer containing triangles; among them the best-shaped (largest min weight)
        j = int(np.argmin(viol - 1e-9 * np.where(ok, w.min(1), 0)))
        if viol[j] > 1e-9:
            # outside the mesh: nearest vertex
            k = int(np.argmin(((uv - pt) ** 2).sum(1)))
            tj = np.nonzero((tris_uv == uv[k]).all(-1).any(-1))[0][0]
            out_t[i] = tj
            wk = (tris_uv[tj] == uv[k]).all(-1).astype(float)
            out_w[i] = wk / wk.sum()
        else:
            out_t[i] = j
            out_w[i] = np.clip(w[j], 0, 1) / np.clip(w[j], 0, 1).sum()
    return out_t, out_w


def _polygon_mask(poly_uv, r):
    from matplotlib.path import Path as MPath

    g = (np.arange(r) + 0.0) / (r - 1)
    uu, vv = np.meshgrid(g, g)
    pts = np.stack([uu.ravel(), vv.ravel()], 1)
    return MPath(np.asarray(poly_uv)).contains_points(pts).reshape(r, r)


def _markup_uv_from_68(L, t_brow):
    """UV of the 98/29/5 markups placed from the 68 template landmarks (UV ``L``)."""
    from menpo_densereg.data.markups import conversion_matrix

    mid = lambda i, j: (L[i] + L[j]) / 2.0  # noqa: E731
    low = lambda p: p + np.array([0.0, t_brow])  # noqa: E731
    w = []
    for k in range(16):
        w += [L[k], mid(k, k + 1)]
    w.append(L[16])
    w += [L[i] for i in range(17, 22)]
    w += [low(mid(20, 21)), low(mid(19, 20)), low(mid(18, 19)), low(mid(17, 18))]
    w += [L[i] for i in range(22, 27)]
    w += [low(mid(25, 26)), low(mid(24, 25)), low(mid(23, 24)), low(mid(22, 23))]
    w += [L[i] for i in range(27, 36)]
    w += [L[36], L[37], mid(37, 38), L[38], L[39], L[40], mid(40, 41), L[41]]
    w += [L[42], L[43], mid(43, 44), L[44], L[45], L[46], mid(46, 47), L[47]]
    w += [L[i] for i in range(48, 68)]
    w += [L[36:42].mean(0), L[42:48].mean(0)]
    wflw = np.array(w)
    assert wflw.shape == (98, 2)
    lfpw = conversion_matrix("ibug68", "lfpw29") @ L
    lfpw[5] = low(L[19])
    lfpw[7] = low(L[24])
    five = conversion_matrix("ibug68", "five") @ L
    return {"ibug68": L.copy(), "wflw98": wflw, "lfpw29": lfpw, "five": five}


def _part_map(L, t_brow, r=_PART_MAP_SIZE, face_poly=None):
    low = lambda p: p + np.array([0.0, t_brow])  # noqa: E731
    pm = np.zeros((r, r), dtype=np.uint8)
    if face_poly is not None:
        pm[_polygon_mask(face_poly, r)] = PART_NAMES.index("skin")
    else:
        pm[:] = PART_NAMES.index("skin")

    def brow(ids):
        up = [L[i] - np.array([0, 0.2 * t_brow]) for i in ids]
        lo = [low(L[i]) for i in ids[::-1]]
        return up + lo

    eye_w = abs(L[42, 0] - L[39, 0])
    nw, aw = 0.22 * eye_w, 0.35 * abs(L[35, 0] - L[31, 0])
    nose = [
        L[27] - [nw, 0],
        L[29] - [1.3 * nw, 0],
        L[31] - [aw, 0.005],
        L[32],
        L[33],
        L[34],
        L[35] + [aw, -0.005],
        L[29] + [1.3 * nw, 0],
        L[27] + [nw, 0],
    ]
    polys = [
        ("left_eyebrow", brow(list(range(17, 22)))),
        ("right_eyebrow", brow(list(range(22, 27)))),
        ("nose", nose),
        ("left_eye", [L[i] for i in range(36, 42)]),
        ("right_eye", [L[i] for i in range(42, 48)]),
        ("upper_lip", [L[i] for i in list(range(48, 55)) + [64, 63, 62, 61, 60]]),
        (
            "lower_lip",
            [L[i] for i in list(range(54, 60)) + [48, 60, 67, 66, 65, 64]],
        ),
    ]
    for name, poly in polys:
        pm[_polygon_mask(np.array(poly), r)] = PART_NAMES.index(name)
    return pm


def build_template_data(grid=_GRID):
    """Build the light template, UV space and labellings from menpo3d's assets.

    Deterministic. Takes a few seconds (reading the 53k-vertex ``template.ply``).

    Returns
    -------
    data : `dict` of `str` -> `ndarray`
        What :meth:`FaceTemplate.load` reads (and ``scripts/make_template_data.py`` saves).
    """
    from menpo_densereg.compat import require_menpo3d

    require_menpo3d("build_template_data")
    import menpo3d.io as m3io
    from menpo.shape import PointCloud
    from menpo3d.unwrap import optimal_cylindrical_unwrap
    from scipy.spatial import cKDTree

    mesh = m3io.import_builtin_asset("template.ply")
    p = np.asarray(mesh.points, dtype=np.float64)
    tris = np.asarray(mesh.trilist, dtype=np.int64)
    lm3 = np.asarray(mesh.landmarks[mesh.landmarks.group_labels[0]].points, float)
    if lm3.shape != (68, 3):
        raise ValueError(f"template.ljson: expected 68 3D landmarks, got {lm3.shape}")

    unwrap = optimal_cylindrical_unwrap(PointCloud(p))
    c = unwrap.apply(p)[:, :2]
    lc = unwrap.apply(lm3)[:, :2]
    # raw cylindrical (theta * r, y): u right, v down
    raw = np.stack([c[:, 0], -c[:, 1]], 1)
    lraw = np.stack([lc[:, 0], -lc[:, 1]], 1)

    # --- trim to the face: between the outer jaw points, above the jaw contour
    margin = 0.012 * (lraw[16, 0] - lraw[0, 0])
    jaw = lraw[:17]
    keep = (raw[:, 0] >= jaw[0, 0] - margin) & (raw[:, 0] <= jaw[16, 0] + margin)
    jaw_v = np.interp(raw[:, 0], jaw[:, 0], jaw[:, 1])
    below_level = raw[:, 1] > min(jaw[0, 1], jaw[16, 1])
    keep &= ~(below_level & (raw[:, 1] > jaw_v + margin))
    tkeep = keep[tris].all(1)
    tris = tris[tkeep]
    used = np.unique(tris)
    remap = -np.ones(len(p), dtype=np.int64)
    remap[used] = np.arange(len(used))
    p, raw, tris = p[used], raw[used], remap[tris]

    # --- normalise UV to [0, 1]^2
    lo, hi = raw.min(0), raw.max(0)
    uv_full = (raw - lo) / (hi - lo)
    L = (lraw - lo) / (hi - lo)

    # --- decimate by vertex clustering on a UV grid
    cell = np.minimum((uv_full * grid).astype(np.int64), grid - 1)
    key = cell[:, 1] * grid + cell[:, 0]
    uniq, inv = np.unique(key, return_inverse=True)
    centre = (np.stack([uniq % grid, uniq // grid], 1) + 0.5) / grid
    d = ((uv_full - centre[inv]) ** 2).sum(1)
    order = np.lexsort((d, inv))
    first = np.ones(len(order), bool)
    first[1:] = inv[order][1:] != inv[order][:-1]
    rep = order[first]  # representative original vertex per cluster (sorted by cluster)
    t2 = inv[tris]
    ok = (t2[:, 0] != t2[:, 1]) & (t2[:, 1] != t2[:, 2]) & (t2[:, 0] != t2[:, 2])
    t2 = t2[ok]
    # drop duplicate triangles (any vertex order)
    t2 = t2[np.unique(np.sort(t2, 1), axis=0, return_index=True)[1]]
    t2 = t2[np.lexsort(t2.T[::-1])]
    # drop clusters no triangle uses
    used = np.unique(t2)
    remap = -np.ones(len(rep), dtype=np.int64)
    remap[used] = np.arange(len(used))
    rep, t2 = rep[used], remap[t2]
    pts, uv = p[rep], uv_full[rep]

    # --- normalise 3D: centre on landmarks, unit outer-eye distance
    scale = np.linalg.norm(lm3[45] - lm3[36])
    centre3 = lm3.mean(0)
    pts = (pts - centre3) / scale

    fn = np.cross(pts[t2[:, 1]] - pts[t2[:, 0]], pts[t2[:, 2]] - pts[t2[:, 0]])
    if fn[:, 2].sum() < 0:
        t2 = t2[:, [0, 2, 1]]

    # --- labellings
    eye_top_v = (L[37, 1] + L[38, 1] + L[43, 1] + L[44, 1]) / 4
    brow_v = (L[19, 1] + L[24, 1]) / 2
    t_brow = 0.33 * (eye_top_v - brow_v)
    markup_uv = _markup_uv_from_68(L, t_brow)
    tris_uv = uv[t2]
    data = {
        "points": pts.astype(np.float32),
        "trilist": t2.astype(np.int32),
        "uv": uv.astype(np.float32),
    }
    for m, q in markup_uv.items():
        tri_i, bary = _bary_locate(uv, tris_uv, q)
        data[f"{m}_tri"] = tri_i.astype(np.int32)
        data[f"{m}_bary"] = bary.astype(np.float32)
        # the UV actually carried by the anchors (points just outside the trimmed mesh
        # snap onto it), so that the rendered field contains every landmark's UV
        q_eff = np.einsum("nk,nkc->nc", bary, uv[t2[tri_i]])
        data[f"{m}_uv"] = q_eff.astype(np.float32)

    # marching candidates: from each jaw point towards the midline at the same height
    def march(q):
        ts, bs = [], []
        for pt in q:
            frac = np.linspace(0.0, 0.6, _N_MARCH)
            cand = np.stack([pt[0] + frac * (0.5 - pt[0]), np.full(_N_MARCH, pt[1])], 1)
            ti, bi = _bary_locate(uv, tris_uv, cand)
            ts.append(ti)
            bs.append(bi)
        return np.array(ts, dtype=np.int32), np.array(bs, dtype=np.float32)

    data["march_tri"], data["march_bary"] = march(markup_uv["ibug68"][:17])
    data["march98_tri"], data["march98_bary"] = march(markup_uv["wflw98"][:33])

    # parts
    pm = _part_map(L, t_brow)
    data["part_map"] = pm
    r = pm.shape[0]
    vp = pm[
        np.clip(np.rint(uv[:, 1] * (r - 1)), 0, r - 1).astype(int),
        np.clip(np.rint(uv[:, 0] * (r - 1)), 0, r - 1).astype(int),
    ]
    vp[vp == 0] = PART_NAMES.index("skin")
    data["vertex_parts"] = vp.astype(np.uint8)
    # the part map is only meaningful on the face; outside UV-space it stays "skin"
    # mirror vertices
    mirror_pts = pts * np.array([-1.0, 1.0, 1.0])
    data["mirror"] = cKDTree(pts).query(mirror_pts)[1].astype(np.int32)
    return data
