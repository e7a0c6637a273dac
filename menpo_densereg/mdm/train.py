"""Training MDM: perturbed starts *and* initialiser outputs, heavy augmentation.

:class:`MDMTrainingSet` turns a few annotated faces into an endless stream of training
items. Each item draws a face, a random similarity (rotation, scale) of its image, a
photometric change and an occluder, and a start shape of one of three kinds:

- ``box``: the mean shape aligned (menpofit style) to the ground-truth box jittered in
  position and scale — what :meth:`MDMFitter.fit_from_bb` starts from;
- ``init``: the output of an initialiser (any object with ``fit_from_bb``) on that face,
  carried through the same augmentation — so MDM learns to correct the initialiser's
  typical errors;
- ``gt``: the ground truth slightly perturbed (the refiner must not drift when the
  start is already good).

The network input is then the grey crop around the start shape's box, exactly as at fit
time (:func:`menpo_densereg.mdm.fitter.prepare_crop`), sampled in one ``grid_sample`` call.

:func:`train_from_recipe` wires a ``fitters/<name>/recipe.toml`` to the shared training
engine (:func:`menpo_densereg.training.train_loop`) and writes ``mdm.safetensors``.
"""

import math
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from menpo.shape import PointCloud

from menpo_densereg.data.crop import crop_face
from menpo_densereg.fitting.base import box_from_shape
from menpo_densereg.mdm.fitter import MDMNet, _config, save_mdm

__all__ = [
    "SourceFace",
    "faces_from_images",
    "faces_from_engine",
    "MDMTrainingSet",
    "mdm_loss",
    "evaluate",
    "train_mdm",
    "train_from_recipe",
    "check_init_config",
    "check_step_weights",
    "AUGMENT_DEFAULTS",
    "FRAME_KEYS",
]

#: Augmentation / start-shape settings (recipe ``[augment]``).
AUGMENT_DEFAULTS = {
    "rotation_std": 12.0,
    "max_rotation": 35.0,
    "scale_range": 0.12,
    "box_shift": 0.12,
    "box_scale": 0.12,
    "p_init": 0.0,
    "p_gt": 0.1,
    "gt_noise": 0.03,
    "init_noise": 0.01,
    "p_occlude": 0.3,
    "p_blur": 0.3,
    "noise_std": 0.03,
}

_PRE_SIZE = 192
_PRE_MARGIN = 0.75


class SourceFace:
    """A grey face image (``(H, W)`` float32) with its ground truth and optional start.

    ``init`` is an initialiser's output on this image (same frame as ``gt``), ``(N, 2)``,
    or several initialisers' outputs, ``(K, N, 2)`` (stored as ``(K, N, 2)``; an item
    draws one of them).
    """

    def __init__(self, pixels, gt, init=None, name=""):
        self.pixels = np.ascontiguousarray(pixels, dtype=np.float32)
        self.gt = np.asarray(gt, dtype=np.float64)
        if init is not None:
            init = np.asarray(init, dtype=np.float64)
            init = init[None] if init.ndim == 2 else init
            if init.ndim != 3 or init.shape[1:] != self.gt.shape or not len(init):
                raise ValueError(
                    f"init: expected (N, 2) or (K, N, 2) with N = {len(self.gt)}, "
                    f"got {init.shape}"
                )
        self.init = init
        self.name = name


def _grey(px):
    px = np.asarray(px, dtype=np.float32)
    if px.ndim == 3 and px.shape[0] == 3:
        return 0.2989 * px[0] + 0.5870 * px[1] + 0.1140 * px[2]
    return px[0] if px.ndim == 3 else px


def _jittered_box(gt, rng, shift, scale):
    """The tight box of ``gt`` (``(N, 2)``) moved by ``±shift`` and scaled by ``±scale``."""
    from menpo.shape import bounding_box

    lo, hi = gt.min(0), gt.max(0)
    side = (hi - lo).mean()
    c = (lo + hi) / 2 + rng.uniform(-shift, shift, 2) * side
    half = (hi - lo) / 2 * math.exp(rng.uniform(-scale, scale))
    return bounding_box(c - half, c + half)


def faces_from_images(
    images,
    initialiser=None,
    group=None,
    progress=False,
    box_jitter=0.0,
    seed=0,
    pre_size=_PRE_SIZE,
):
    """:class:`SourceFace` pre-crops of 68-point annotated menpo images.

    Each image is cropped around its landmarks (wide margin, ``pre_size`` px: the
    landmark box spans ``pre_size / 2.5`` of them, which bounds the detail the
    network's crop can show, so a recipe with a larger ``crop_size`` needs a larger
    ``pre_size``; recipe key ``[data] pre_size``, default 192). With an
    ``initialiser`` (or a list of them), each one's ``fit_from_bb`` is run once per
    image and stored as the face's ``init`` starts: from the tight landmark box, or with
    ``box_jitter > 0`` from that box shifted by up to ``box_jitter`` and scaled by up
    to ``±box_jitter`` of its side (detector-like boxes: the initialisers' real error
    distribution, not their best case).
    """
    from tqdm.auto import tqdm

    if initialiser is None:
        inits = []
    elif isinstance(initialiser, (list, tuple)):
        inits = list(initialiser)
    else:
        inits = [initialiser]
    rng = np.random.default_rng(seed)
    faces = []
    for im in tqdm(list(images), desc="MDM sources", disable=not progress):
        g = group or ("PTS" if "PTS" in im.landmarks else list(im.landmarks.keys())[0])
        gt = PointCloud(np.asarray(im.landmarks[g].points, dtype=float))
        box = box_from_shape(gt)
        starts = []
        for ini in inits:
            b = box
            if box_jitter > 0:
                b = _jittered_box(gt.points, rng, box_jitter, box_jitter)
            starts.append(ini.fit_from_bb(im, b).final_shape)
        crop, crop_to_image = crop_face(im, box, int(pre_size), margin=_PRE_MARGIN)
        to_crop = crop_to_image.pseudoinverse()
        faces.append(
            SourceFace(
                _grey(crop.pixels),
                to_crop.apply(gt).points,
                [to_crop.apply(s).points for s in starts] if starts else None,
                name=str(getattr(im, "path", "")),
            )
        )
    return faces


def _with_ibug68(samples):
    """The data-engine samples that carry 68 rendered points."""
    return [s for s in samples if float(np.asarray(s.get("has_ibug68", 1.0))) >= 0.5]


def faces_from_engine(samples):
    """:class:`SourceFace` s from data-engine dense samples (``image``, ``lm_ibug68``)."""
    return [
        SourceFace(_grey(s["image"]), np.asarray(s["lm_ibug68"], float))
        for s in _with_ibug68(samples)
    ]


def _align_to_box(mean, lo, hi):
    """menpofit's ``align_shape_with_bounding_box`` (similarity of the box corners)."""
    mlo, mhi = mean.min(axis=0), mean.max(axis=0)
    src = np.array([mlo, [mlo[0], mhi[1]], mhi, [mhi[0], mlo[1]]])
    dst = np.array([lo, [lo[0], hi[1]], hi, [hi[0], lo[1]]])
    sc, dc = src.mean(0), dst.mean(0)
    s0, d0 = src - sc, dst - dc
    scale = (s0 * d0).sum() / (s0**2).sum()
    return (mean - sc) * scale + dc


class MDMTrainingSet(torch.utils.data.Dataset):
    """Endless augmented MDM items: ``image`` (1, S, S), ``gt`` and ``start`` (N, 2).

    Parameters
    ----------
    faces : `list` of `SourceFace`
    mean_shape : ``(N, 2)`` array
    crop_size, margin : as the network's configuration
    augment : `dict`, optional
        Overrides of :data:`AUGMENT_DEFAULTS`.
    length : `int`
        Nominal length (items are random; the index seeds them).
    seed : `int`
    face_weights : ``(n_faces,)`` array, optional
        Relative probability of drawing each face (default uniform), e.g. to keep real
        faces as frequent as many synthetic renders.
    """

    def __init__(
        self,
        faces,
        mean_shape,
        crop_size=112,
        margin=0.25,
        augment=None,
        length=100000,
        seed=0,
        face_weights=None,
    ):
        if not faces:
            raise ValueError("MDMTrainingSet: no source faces")
        self.faces = list(faces)
        self.mean = np.asarray(getattr(mean_shape, "points", mean_shape), dtype=float)
        from menpo_densereg.data.markups import markup_for_n_points

        self.markup = markup_for_n_points(len(self.mean))
        if self.markup is None:
            raise ValueError(f"mean_shape: no known markup has {len(self.mean)} points")
        self.crop_size = int(crop_size)
        self.margin = float(margin)
        self.aug = dict(AUGMENT_DEFAULTS)
        for k, v in (augment or {}).items():
            if k not in AUGMENT_DEFAULTS:
                raise ValueError(f"augment: unknown option {k!r}")
            self.aug[k] = float(v)
        self.has_init = [f.init is not None for f in self.faces]
        w = (
            np.ones(len(self.faces))
            if face_weights is None
            else np.asarray(face_weights, float)
        )
        if w.shape != (len(self.faces),) or np.any(w < 0) or w.sum() <= 0:
            raise ValueError("face_weights: expected one non-negative weight per face")
        self.cum_weights = np.cumsum(w / w.sum())
        self.length = int(length)
        self.seed = int(seed)
        self.epoch = 0

    def __len__(self):
        return self.length

    def _start(self, rng, face, M, t, gt):
        a = self.aug
        u = rng.random()
        lo, hi = gt.min(0), gt.max(0)
        side = (hi - lo).mean()
        if face.init is not None and u < a["p_init"]:
            init = face.init[int(rng.integers(len(face.init)))]
            start = init @ M.T + t
            start = start + rng.normal(0, a["init_noise"] * side, start.shape)
            return start, "init"
        if u < a["p_init"] + a["p_gt"]:
            c = gt.mean(0)
            ang = rng.normal(0, 3) * math.pi / 180
            R = np.array(
                [[math.cos(ang), -math.sin(ang)], [math.sin(ang), math.cos(ang)]]
            )
            s = math.exp(rng.normal(0, a["gt_noise"]))
            start = (gt - c) @ R.T * s + c + rng.normal(0, a["gt_noise"] * side, 2)
            start = start + rng.normal(0, 0.01 * side, start.shape)
            return start, "gt"
        c = (lo + hi) / 2 + rng.uniform(-a["box_shift"], a["box_shift"], 2) * side
        half = (hi - lo) / 2 * math.exp(rng.uniform(-a["box_scale"], a["box_scale"]))
        half = half * np.exp(rng.uniform(-0.05, 0.05, 2))
        return _align_to_box(self.mean, c - half, c + half), "box"

    def __getitem__(self, index):
        a = self.aug
        rng = np.random.default_rng([self.seed, int(index), self.epoch])
        k = int(np.searchsorted(self.cum_weights, rng.random(), side="right"))
        face = self.faces[min(k, len(self.faces) - 1)]
        H, W = face.pixels.shape
        # similarity augmentation of the source image: aug = M @ src + t
        ang = float(
            np.clip(
                rng.normal(0, a["rotation_std"]), -a["max_rotation"], a["max_rotation"]
            )
        )
        ang = ang * math.pi / 180
        sc = math.exp(rng.uniform(-a["scale_range"], a["scale_range"]))
        R = (
            np.array([[math.cos(ang), -math.sin(ang)], [math.sin(ang), math.cos(ang)]])
            * sc
        )
        centre = np.array([(H - 1) / 2, (W - 1) / 2])
        M, t = R, centre - R @ centre
        gt = face.gt @ M.T + t
        start, kind = self._start(rng, face, M, t, gt)
        # network crop around the start's box (as crop_face): crop -> aug coordinates
        slo, shi = start.min(0), start.max(0)
        side = (shi - slo).max() * (1 + 2 * self.margin)
        step = side / self.crop_size
        offset = (slo + shi) / 2 - step * (self.crop_size - 1) / 2
        # crop pixel p -> aug = step*p + offset -> src = M^-1 (aug - t)
        Minv = np.linalg.inv(M)
        S = self.crop_size
        ii = np.arange(S, dtype=np.float64)
        grid_aug = np.stack(np.meshgrid(ii, ii, indexing="ij"), -1) * step + offset
        src = (grid_aug - t) @ Minv.T
        gx = src[..., 1] / (W - 1) * 2 - 1
        gy = src[..., 0] / (H - 1) * 2 - 1
        grid = torch.from_numpy(np.stack([gx, gy], -1)[None].astype(np.float32))
        img = torch.from_numpy(face.pixels)[None, None]
        crop = F.grid_sample(
            img, grid, mode="bilinear", padding_mode="zeros", align_corners=True
        )[0]
        crop = self._photometric(crop, rng)
        to_crop = lambda p: (p - offset) / step  # noqa: E731
        norm = self.markup.normalising_distance(gt)
        if self.markup.name == "ibug68":
            # the outer-eye distance shrinks to ~0 at profile: at least half the
            # landmark box's mean edge (frontal faces: 0.7-0.8 of it, unchanged)
            norm = max(norm, 0.5 * float(np.mean(gt.max(0) - gt.min(0))))
        norm = norm / step
        return {
            "norm": torch.tensor(max(norm, 1.0), dtype=torch.float32),
            "image": crop,
            "gt": torch.from_numpy(to_crop(gt).astype(np.float32)),
            "start": torch.from_numpy(to_crop(start).astype(np.float32)),
            "kind": torch.tensor({"box": 0, "init": 1, "gt": 2}[kind]),
        }

    def _photometric(self, crop, rng):
        a = self.aug
        x = crop
        gamma = math.exp(rng.uniform(-0.4, 0.4))
        x = x.clamp(0, 1) ** gamma
        x = (
            (x - 0.5) * math.exp(rng.uniform(-0.4, 0.3))
            + 0.5
            + rng.uniform(-0.15, 0.15)
        )
        if rng.random() < a["p_blur"]:
            k = torch.tensor([1.0, 2.0, 1.0])
            k = (k[:, None] * k[None, :]) / 16
            x = F.conv2d(x[None], k[None, None], padding=1)[0]
        if rng.random() < a["p_occlude"]:
            S = x.shape[-1]
            h, w = rng.integers(S // 8, S // 3, 2)
            y0, x0 = rng.integers(0, S - h), rng.integers(0, S - w)
            x = x.clone()
            x[:, y0 : y0 + h, x0 : x0 + w] = float(rng.random())
        x = x + torch.from_numpy(
            rng.normal(0, a["noise_std"] * rng.random(), x.shape).astype(np.float32)
        )
        return x.clamp(0, 1)


def _iod(gt):
    return (gt[:, 36] - gt[:, 45]).norm(dim=-1).clamp_min(1.0)


def mdm_loss(model, batch, device, step_weights=None):
    """Weighted sum over steps of the mean point error / the markup's normaliser.

    The normaliser is ``batch["norm"]`` (the markup's: outer-eye distance for 68
    points, GT box average edge for ears), else the 68-point outer-eye distance.
    ``step_weights``: one non-negative weight per step (default: 1 each, the
    paper's sum). Lower early weights let the coarse first steps leave a good start
    alone instead of each step being trained to be best on its own.
    """
    shapes = model(batch["image"], batch["start"])
    gt = batch["gt"]
    iod = batch["norm"] if "norm" in batch else _iod(gt)
    losses = [((s - gt).norm(dim=-1).mean(dim=1) / iod).mean() for s in shapes]
    if step_weights is None:
        loss = sum(losses)
    else:
        if len(step_weights) != len(losses):
            raise ValueError(
                f"step_weights: {len(step_weights)} weights for {len(losses)} steps"
            )
        loss = sum(float(w) * l for w, l in zip(step_weights, losses))
    with torch.no_grad():
        start = ((batch["start"] - gt).norm(dim=-1).mean(dim=1) / iod).mean()
    return loss, {"nme_start": float(start), "nme_final": float(losses[-1].detach())}


def evaluate(fitter, images, boxes=None, progress=False):
    """NME (outer eye corners) of ``fitter.fit_from_bb`` on 68-point images.

    Returns ``(start_errors, final_errors)`` arrays.
    """
    from menpo_densereg.evaluation.metrics import nme

    e0, e1 = [], []
    for k, im in enumerate(images):
        g = "PTS" if "PTS" in im.landmarks else list(im.landmarks.keys())[0]
        gt = PointCloud(np.asarray(im.landmarks[g].points, dtype=float))
        box = boxes[k] if boxes is not None else box_from_shape(gt)
        res = fitter.fit_from_bb(im, box, gt_shape=gt)
        e0.append(nme(res.initial_shape, gt))
        e1.append(nme(res.final_shape, gt))
    return np.array(e0), np.array(e1)


def train_mdm(
    faces,
    mean_shape,
    model_config=None,
    train_config=None,
    augment=None,
    val_fn=None,
    face_weights=None,
    init_state=None,
    step_weights=None,
):
    """Train an :class:`MDMNet` on :class:`SourceFace` s; returns ``(net, history)``.

    ``init_state``: a state dict to start from (fine-tuning a shipped MDM).
    ``step_weights``: the loss weight of each step (:func:`mdm_loss`).
    """
    from menpo_densereg.training import TrainConfig, seed_everything, train_loop

    cfg = train_config or TrainConfig(steps=100, batch_size=16, progress=False)
    seed_everything(cfg.seed)  # before the network is built: same seed, same run
    net = MDMNet(**(model_config or {}))
    if init_state is not None:
        net.load_state_dict(init_state, strict=True)
    data = MDMTrainingSet(
        faces,
        mean_shape,
        net.config["crop_size"],
        net.config["margin"],
        augment,
        length=max(1000, cfg.steps * cfg.batch_size),
        seed=cfg.seed,
        face_weights=face_weights,
    )
    weights = check_step_weights(step_weights, net.config["steps"])
    loss_fn = mdm_loss if weights is None else partial(mdm_loss, step_weights=weights)
    history = train_loop(net, data, loss_fn, cfg, val_fn=val_fn)
    net.eval()
    return net, history


def check_step_weights(step_weights, steps):
    """``step_weights`` as a list of floats (or `None`), checked against ``steps``.

    Raises
    ------
    ValueError
        If there is not one finite, non-negative weight per step, or all are 0.
    """
    if step_weights is None:
        return None
    w = np.asarray(step_weights, dtype=float).ravel()
    if w.shape != (int(steps),) or not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError(
            f"[loss] step_weights: expected {int(steps)} finite non-negative "
            f"weights (one per MDM step), got {list(step_weights)}"
        )
    if not w.sum() > 0:
        raise ValueError("[loss] step_weights: at least one weight must be > 0")
    return [float(x) for x in w]


#: Keys of an MDM configuration that set its frame, not its weights' shapes.
FRAME_KEYS = ("crop_size", "margin", "patch_scale", "steps")


def check_init_config(init_config, config):
    """Can weights trained with ``init_config`` start a run with ``config``?

    The architecture (markup, patch size, CNN, GRU) must be the same; the frame (crop
    size, margin, patch spacing, number of steps, :data:`FRAME_KEYS`) may change: the
    weights have the same shapes and the increments are in units of the crop. A
    larger crop with the same spacing in face units (``crop_size`` x k, ``patch_scale``
    x k) samples the same geometry at a finer resolution.

    Returns
    -------
    moved : `dict`
        ``{key: (old, new)}`` of the frame keys that change.

    Raises
    ------
    ValueError
        If an architecture key differs.
    """
    arch = {k for k in set(init_config) | set(config) if k not in FRAME_KEYS}
    bad = {k: (init_config.get(k), config.get(k)) for k in sorted(arch)}
    bad = {k: v for k, v in bad.items() if v[0] != v[1]}
    if bad:
        raise ValueError(
            "[mdm] init_weights: its architecture differs from the recipe's "
            f"(key: (weights, recipe)): {bad}"
        )
    moved = {k: (init_config.get(k), config.get(k)) for k in FRAME_KEYS}
    return {k: v for k, v in moved.items() if v[0] != v[1]}


def named_initialisers(names, options=None, fitter_dir="."):
    """The initialisers whose outputs become MDM's training starts.

    Parameters
    ----------
    names : `list` of `str`
        Fitter names (sibling folders of ``fitter_dir`` first, then the registry).
    options : `dict`, optional
        Initialiser name -> keyword options for its ``with_options`` (``[data]
        initialiser_options``), so that a refiner trains on the start a chain gives it
        (``[chain] initialiser_options``) rather than on the initialiser's own recipe.
    fitter_dir : `Path` or `str`
        The recipe's folder (names are resolved and errors reported against it).

    Returns
    -------
    initialisers : `list`

    Raises
    ------
    ValueError
        ``options`` names a fitter that ``names`` does not list, the fitter takes no
        options, or it rejects them.
    """
    from menpo_densereg.fitting.composition import (
        _load_named,
        with_initialiser_options,
    )

    where = f"{Path(fitter_dir)}/recipe.toml: [data] initialiser_options"
    options = dict(options or {})
    unknown = sorted(set(options) - set(names))
    if unknown:
        raise ValueError(
            f"{where} names {unknown}, which [data] initialiser does not list "
            f"({list(names)})"
        )
    return [
        with_initialiser_options(_load_named(n, fitter_dir), options.get(n), where, n)
        for n in names
    ]


def train_from_recipe(recipe, fitter_dir, args=None):
    """Train the recipe's MDM and write ``fitter_dir/<[mdm] weights>``.

    Recipe tables: ``[mdm]`` (``weights`` + :data:`menpo_densereg.mdm.fitter.MDM_DEFAULTS`
    keys), ``[data]`` (``train`` folders relative to the fitter folder, ``builtin_assets``,
    ``mirror``, ``initialiser`` (a fitter name or a list of them; their outputs become
    ``init`` starts, run from the landmark box jittered by ``init_box_jitter``),
    ``initialiser_options`` (a table of tables, initialiser name -> options for its
    ``with_options``, e.g. ``{ "densereg-face-pca" = { n_components = 7 } }``: the
    starts of a chain that gives its initialiser options, :func:`named_initialisers`),
    ``split = "person"`` (drop held-out images, :mod:`menpo_densereg.data.splits`),
    ``offset68`` / ``consensus68`` (large pools, see :func:`_large_sources`),
    ``group_fractions`` (share of items drawn from each group: ``manual``,
    ``offset68``, ``consensus68``),
    ``engine_samples`` (number of data-engine renders to add), ``engine_max_yaw``,
    ``engine_min_yaw``, ``engine_size``, ``engine_fraction`` (share of training items
    drawn from the renders), ``engine_initialiser`` (initialiser starts on the
    renders too, :func:`_engine_faces`)),
    ``pseudo68`` (folders of other markups whose images get cached 68-point
    pseudo-labels, :mod:`menpo_densereg.data.pseudolabels`), ``pre_size`` (side of the
    source pre-crops, default 192: raise it with ``crop_size``, :func:`faces_from_images`),
    ``[augment]`` (:data:`AUGMENT_DEFAULTS`), ``[loss]`` (``step_weights``, one per
    step, :func:`mdm_loss`), ``[train]`` (:class:`TrainConfig`).
    ``[mdm] init_weights`` may have another frame than the recipe's
    (:func:`check_init_config`).
    """
    from menpo_densereg.data.annotated import load_annotated, load_annotated_68
    from menpo_densereg.fitting.composition import mean_face_68
    from menpo_densereg.data.markups import get_markup
    from menpo_densereg.training import recipe_train_config

    fitter_dir = Path(fitter_dir)
    # the run's folder (fitter folder + recipe hash) and seed, before any data is built
    cfg = recipe_train_config(recipe, fitter_dir, args)
    # data paths are relative to the recipe's folder (which may differ from --out)
    base = Path(recipe["_path"]).parent if "_path" in recipe else fitter_dir
    name = recipe.get("fitter", {}).get("name", fitter_dir.name)
    mcfg = dict(recipe.get("mdm", {}))
    weights = fitter_dir / mcfg.pop("weights", "mdm.safetensors")
    init_weights = mcfg.pop("init_weights", None)
    if init_weights:
        # relative to the recipe's folder; read now (before the run overwrites it)
        init_weights = Path(recipe["_path"]).parent / init_weights
        if not init_weights.is_file():
            raise ValueError(f"[mdm] init_weights: {init_weights} not found")
        import shutil
        import tempfile

        copy = Path(tempfile.mkdtemp(prefix="mdm-init-")) / init_weights.name
        shutil.copy2(init_weights, copy)
        init_weights = copy
    # the network's configuration without building it; checked before minutes of data
    # building
    net_config = _config(**mcfg)
    step_weights = check_step_weights(
        recipe.get("loss", {}).get("step_weights"), net_config["steps"]
    )
    data = dict(recipe.get("data", {}))
    folders = [_resolve(f, base) for f in data.get("train", [])]
    markup = get_markup(mcfg.get("markup", "ibug68")).name
    held_out = list(data.get("held_out", []))
    if markup == "ibug68" and not held_out:
        images = load_annotated_68(
            folders,
            data.get("builtin_assets", []),
            mirror=bool(data.get("mirror", True)),
        )
    else:
        images = load_annotated(folders, markup, exclude=held_out, on_error="skip")
        if data.get("mirror", False):
            # ears (no left/right point permutation): a mirrored ear is an ear
            images = images + [_mirror_plain(im) for im in images]
    pseudo = [_resolve(f, base) for f in data.get("pseudo68", [])]
    n_pseudo = 0
    if pseudo:
        from menpo_densereg.data.annotated import pseudo_labelled_68

        pseudo_images = pseudo_labelled_68(pseudo, progress=True)
        n_pseudo = len(pseudo_images)
        if data.get("mirror", True):
            from menpo_densereg.data.annotated import mirror_image

            pseudo_images += [mirror_image(im) for im in pseudo_images]
        images = images + pseudo_images
    if data.get("split") == "person":
        from menpo_densereg.data.splits import training_side

        images = training_side(images)
    if not images:
        raise ValueError(f"{fitter_dir}: no {markup} training images")
    groups = {"manual": images}
    groups.update(_large_sources(data, base))
    initialiser = None
    if data.get("initialiser"):
        names = data["initialiser"]
        names = [names] if isinstance(names, str) else list(names)
        initialiser = named_initialisers(
            names, data.get("initialiser_options"), fitter_dir
        )
    t0 = time.time()
    faces, n_group = [], {}
    for group, group_images in groups.items():
        faces += faces_from_images(
            group_images,
            initialiser=initialiser,
            progress=True,
            box_jitter=float(data.get("init_box_jitter", 0.0)),
            seed=int(recipe.get("train", {}).get("seed", 0)),
            pre_size=int(data.get("pre_size", _PRE_SIZE)),
        )
        n_group[group] = len(group_images)
    print(f"MDM source faces per group: {n_group}")
    n_engine = int(data.get("engine_samples", 0))
    face_weights = _group_weights(n_group, data.get("group_fractions", {}))
    if n_engine:
        engine = _engine_faces(
            images,
            n_engine,
            data,
            seed=int(data.get("seed", 0)),
            initialiser=initialiser if data.get("engine_initialiser") else None,
        )
        # real and synthetic faces drawn with probabilities (1 - f, f) as groups
        f = float(data.get("engine_fraction", 0.5))
        if engine:
            face_weights = np.concatenate(
                [
                    face_weights / face_weights.sum() * (1 - f),
                    np.full(len(engine), f / len(engine)),
                ]
            )
        faces += engine
    augment = dict(recipe.get("augment", {}))
    if initialiser is None:
        augment["p_init"] = 0.0
    if markup == "ibug68":
        mean = mean_face_68()
    else:
        from menpo_densereg.template.ears import procrustes_mean

        mean = PointCloud(
            np.asarray(
                procrustes_mean([im.landmarks["PTS"].points for im in images]), float
            )
        )
    init_state = None
    if init_weights:
        from menpo_densereg.mdm.fitter import load_mdm

        init_net, init_mean, init_header = load_mdm(init_weights)
        moved = check_init_config(init_header["config"], net_config)
        init_state = init_net.state_dict()
        mean = init_mean
        print(
            f"fine-tuning from {init_weights}"
            + (f" in a new frame: {moved}" if moved else "")
        )
    net, history = train_mdm(
        faces,
        mean,
        mcfg,
        cfg,
        augment,
        face_weights=face_weights,
        init_state=init_state,
        step_weights=step_weights,
    )
    last = history["train"][-1] if history["train"] else {}
    extra = {
        "fitter": name,
        "train_folders": [str(f) for f in data.get("train", [])],
        "builtin_assets": list(data.get("builtin_assets", [])),
        "mirror": bool(data.get("mirror", markup == "ibug68")),
        "held_out": held_out,
        "initialiser": data.get("initialiser"),
        "initialiser_options": data.get("initialiser_options"),
        "pseudo68": [str(f) for f in data.get("pseudo68", [])],
        "n_pseudo68_images": n_pseudo,
        "split": data.get("split"),
        "offset68": [str(f) for f in data.get("offset68", [])],
        "consensus68": [str(f) for f in data.get("consensus68", [])],
        "consensus_max_nme": float(data.get("consensus_max_nme", 0.05)),
        "n_faces_per_group": n_group,
        "init_weights": str(init_weights) if init_weights else None,
        "pre_size": int(data.get("pre_size", _PRE_SIZE)),
        "group_fractions": dict(data.get("group_fractions", {})),
        "init_box_jitter": float(data.get("init_box_jitter", 0.0)),
        "engine_samples": n_engine,
        "engine_fraction": float(data.get("engine_fraction", 0.5)) if n_engine else 0.0,
        "n_source_faces": len(faces),
        "steps": history["steps"],
        "seconds": round(time.time() - t0, 1),
        "device": history["device"],
        "final_train_logs": {k: float(v) for k, v in last.items()},
        "augment": augment,
        "step_weights": step_weights,
    }
    save_mdm(net, mean, weights, extra=extra)
    print(
        f"saved {weights}: {history['steps']} steps in {extra['seconds']} s, "
        f"{len(faces)} source faces; last logs {extra['final_train_logs']}"
    )
    return {"weights": str(weights), "history": history}


def _resolve(folder, base):
    """A recipe's folder: absolute as given, else relative to the recipe's folder."""
    return Path(folder) if Path(folder).is_absolute() else (base / folder).resolve()


def _large_sources(data, base):
    """The recipe's large training pools as ``{group: images}`` (group ``"PTS"``).

    ``[data] offset68``: 68-point folders in a variant of the 300-W convention (e.g.
    ``ytf68``); training side of the person split only, every ``offset68_every``-th
    frame (``_t`` copies skipped), labels moved to the 300-W convention by the mean
    per-point offset to dlib's ERT (:func:`menpo_densereg.data.pseudolabels.
    convention_offset`, measured on up to ``offset68_samples`` of these training
    frames). ``[data] consensus68``: unlabelled pools with consensus pseudo-labels
    (:func:`menpo_densereg.data.pseudolabels.consensus_images`, threshold
    ``consensus_max_nme``; training side of the split; with
    ``consensus_label_missing = false`` only the images already in the cache; at most
    ``consensus_max_faces`` per pool, evenly spread). Neither is mirrored.
    """
    from menpo_densereg.fitting.labellers import pool_images

    out = {}
    for kind in ("offset68", "consensus68"):
        for folder in (_resolve(f, base) for f in data.get(kind, [])):
            images, summary = pool_images(kind, folder, data)
            if kind == "consensus68" and not images:
                raise ValueError(
                    f"[data] consensus68 {folder}: no cached consensus labels for "
                    f"these labellers ({summary['cache']}); run "
                    "benchmarks/consensus_pools.py or set consensus_label_missing = true"
                )
            out[f"{kind}:{folder.name}"] = images
    return out


def _group_weights(n_group, fractions):
    """Per-face draw probabilities: group ``g`` gets ``fractions[g]`` in total.

    Groups are matched by their name or its prefix before ``":"``; groups without a
    fraction share what is left in proportion to their sizes.
    """
    sizes = {g: n for g, n in n_group.items() if n}
    frac = {}
    for g in sizes:
        key = g if g in fractions else g.split(":")[0]
        if key in fractions:
            same = [
                h for h in sizes if (h if h in fractions else h.split(":")[0]) == key
            ]
            frac[g] = float(fractions[key]) * sizes[g] / sum(sizes[h] for h in same)
    rest = [g for g in sizes if g not in frac]
    left = max(0.0, 1.0 - sum(frac.values()))
    for g in rest:
        frac[g] = left * sizes[g] / sum(sizes[h] for h in rest)
    w = [np.full(n, frac.get(g, 0.0) / n if n else 0.0) for g, n in n_group.items()]
    w = np.concatenate(w) if w else np.ones(0)
    return w / w.sum() if w.sum() > 0 else np.ones(len(w))


def _mirror_plain(image):
    """Left-right mirror with the same point order (markups without a permutation)."""
    from menpo.image import Image

    pts = np.asarray(image.landmarks["PTS"].points, float).copy()
    pts[:, 1] = image.shape[1] - 1 - pts[:, 1]
    out = Image(image.pixels[:, :, ::-1].copy(), copy=False)
    out.landmarks["PTS"] = PointCloud(pts)
    return out


def _engine_faces(images, n, data, seed=0, initialiser=None):
    """``n`` data-engine renders (re-posed 3D faces) of the training images.

    ``[data]`` keys: ``engine_max_yaw`` (50), ``engine_min_yaw`` (0: renders with a
    smaller ``|yaw|`` are drawn again), ``engine_size`` (128 px). With ``initialiser``
    (``engine_initialiser = true``) the initialisers' outputs on each render, from its
    landmark box jittered by ``init_box_jitter``, become its ``init`` starts, as for
    the real faces: MDM then learns to correct the initialisers at large pose too.
    """
    from menpo_densereg.template.synthesis import (
        DataEngine,
        SynthConfig,
        annotated_face,
    )

    from tqdm.auto import tqdm

    src = []
    for im in images[: len(images) // 2 if data.get("mirror", True) else None]:
        try:
            src.append(annotated_face(im))
        except Exception as e:  # a face the template cannot fit: skip it
            print(f"data engine: skipped {getattr(im, 'path', '?')}: {e}")
    if not src:
        return []
    cfg = SynthConfig(
        max_yaw=float(data.get("engine_max_yaw", 50.0)),
        size=int(data.get("engine_size", 128)),
    )
    min_yaw = float(data.get("engine_min_yaw", 0.0))
    engine = DataEngine(src, cfg, seed=seed, real_fraction=0.0)
    samples, i = [], 0
    with tqdm(total=n, desc="data engine") as bar:
        while len(samples) < n and i < 20 * n:
            s = engine.sample(i)
            i += 1
            if abs(float(s["pose"][0])) < min_yaw:
                continue
            samples.append(s)
            bar.update()
    if initialiser is None:
        return faces_from_engine(samples)
    return faces_from_images(
        _engine_images(samples),
        initialiser=initialiser,
        progress=True,
        box_jitter=float(data.get("init_box_jitter", 0.0)),
        seed=seed,
        pre_size=int(data.get("pre_size", _PRE_SIZE)),
    )


def _engine_images(samples):
    """Menpo images (``PTS`` = the 68 rendered points) of data-engine samples."""
    from menpo.image import Image

    out = []
    for s in _with_ibug68(samples):
        im = Image(np.clip(s["image"], 0, 1).astype(np.float32), copy=False)
        im.landmarks["PTS"] = PointCloud(np.asarray(s["lm_ibug68"], float))
        out.append(im)
    return out
