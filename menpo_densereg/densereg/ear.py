"""DenseReg for ears (DenseReg §4.7): a dense (u, v) regressor on the reference-ear space.

Ears have no 3D model: the (u, v) frame is the reference ear of
:class:`menpo_densereg.template.ears.EarSpace` and an annotated ear's dense ground truth is the
thin-plate spline from its 55 landmarks to the reference
(:func:`menpo_densereg.template.ears.ear_dense_ground_truth`). This module holds

- the data side: :func:`load_ears` (the 55-point iBUG ears of a folder),
  :func:`ear_split` (the fixed held-out split used by every ear fitter and benchmark),
  :func:`ear_chirality` / :func:`canonical_ear_shapes` (left and right ears are mirror
  images; the reference ear is built from shapes mirrored to one chirality), and
  :class:`EarDenseDataset` (augmented dense samples of real ears: box jitter, rotation,
  scale, left-right mirroring, photometric changes);
- :class:`EarDenseRegInitialiser`, the DenseReg-ear landmark initialiser (markup
  ``ear55``), with an optional PCA clean-up (:class:`menpo_densereg.densereg.readout.ShapePCA`);
- the model file (:func:`save_ear_densereg` / :func:`load_ear_densereg`, kind
  ``"densereg_ear"``): network tensors, the reference ear (so nothing from the training
  data is needed at run time) and the PCA model;
- :func:`from_fitter_dir` and :func:`train_from_recipe` for ``fitters/densereg-ear``.

Mirroring: a mirrored ear keeps its landmark indices (landmark *i* is the same
anatomical point on a left and a right ear), so the TPS of a mirrored ear to the
reference contains a reflection and the (u, v) of every anatomical point is unchanged:
flips are consistent augmentations and the network learns both chiralities.
"""

import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from menpo.shape import PointCloud

from menpo_densereg.data.crop import crop_face
from menpo_densereg.densereg.initialiser import DenseRegInitialiser, read_model_file
from menpo_densereg.densereg.network import DenseRegConfig, DenseRegNet
from menpo_densereg.template.ears import EarSpace, ear_dense_ground_truth
from menpo_densereg.fitting.base import box_from_shape
from menpo_densereg.data.markups import check_shape
from menpo_densereg.densereg.readout import ShapePCA
from menpo_densereg.fitting.weights import WeightsError, load_weights, save_weights

__all__ = [
    "KIND",
    "EAR_HELD_OUT",
    "load_ears",
    "ear_split",
    "ear_chirality",
    "canonical_ear_shapes",
    "mirror_ear",
    "AUGMENT_DEFAULTS",
    "EarDenseDataset",
    "EarDenseRegInitialiser",
    "recipe_split",
    "train_ear_densereg",
    "save_ear_densereg",
    "load_ear_densereg",
    "from_fitter_dir",
    "train_from_recipe",
    "evaluate_initialiser",
]

KIND = "densereg_ear"

#: The fixed held-out ears of ``../shared/data/ears55``: the 21 readable images sorted by
#: file name (``ear_0, ear_1, ear_10, ear_13, ...``), every third one (index % 3 == 2)
#: held out; the other 14 are the training split of every ear fitter.
EAR_HELD_OUT = ("ear_10", "ear_18", "ear_25", "ear_30", "ear_36", "ear_40", "ear_9")

_PRE_SIZE = 192
_PRE_MARGIN = 0.75

AUGMENT_DEFAULTS = {
    "rotation_std": 12.0,
    "max_rotation": 30.0,
    "scale_range": 0.15,
    "box_shift": 0.10,
    "aspect_range": 0.10,
    "p_flip": 0.0,
    "p_grey": 0.15,
    "p_blur": 0.25,
    "noise_std": 0.03,
}


# --------------------------------------------------------------------------- data
def _stem(image):
    p = getattr(image, "path", None)
    return Path(p).stem if p is not None else ""


def load_ears(folder, progress=False):
    """The readable 55-point ears of ``folder`` (unreadable files skipped), by name.

    Returns
    -------
    images : `list` of `menpo.image.Image` with the landmarks in group ``"ear55"``
    """
    from menpo_densereg.data.readers import read_pts_folder

    folder = Path(folder)
    images = []
    for im in read_pts_folder(folder, on_error="skip", progress=progress):
        groups = [g for g in im.landmarks.keys() if im.landmarks[g].n_points == 55]
        if not groups:
            continue
        if groups[0] != "ear55":
            im.landmarks["ear55"] = im.landmarks[groups[0]]
        images.append(im)
    if not images:
        raise ValueError(f"{folder}: no readable 55-point ear annotations")
    return sorted(images, key=lambda im: Path(im.path).name)


def ear_split(images, held_out=EAR_HELD_OUT):
    """Split ears into ``(train, test)`` by file stem (``held_out`` stems are test)."""
    held = set(held_out)
    train = [im for im in images if _stem(im) not in held]
    test = [im for im in images if _stem(im) in held]
    return train, test


def _pts(shape):
    return np.asarray(getattr(shape, "points", shape), dtype=float)


def ear_chirality(shape, reference):
    """+1 if ``shape`` has the reference's handedness, -1 if it is mirrored.

    The sign of the determinant of the least-squares affine map from the centred
    reference to the centred shape.
    """
    a = _pts(reference) - _pts(reference).mean(0)
    b = _pts(shape) - _pts(shape).mean(0)
    A, *_ = np.linalg.lstsq(a, b, rcond=None)
    return 1 if np.linalg.det(A) >= 0 else -1


def canonical_ear_shapes(shapes):
    """Shapes mirrored (x -> -x) where needed so all share the first one's chirality."""
    shapes = [_pts(s) for s in shapes]
    ref = shapes[0]
    out = []
    for s in shapes:
        if ear_chirality(s, ref) < 0:
            s = s.copy()
            s[:, 1] = -s[:, 1]
        out.append(s)
    return out


def mirror_ear(image, group="ear55"):
    """Left-right mirrored copy of an annotated ear (landmark indices unchanged)."""
    from menpo.image import Image

    pts = _pts(image.landmarks[group]).copy()
    pts[:, 1] = image.shape[1] - 1 - pts[:, 1]
    out = Image(image.pixels[:, :, ::-1].copy(), copy=False)
    out.landmarks[group] = PointCloud(pts)
    out.path = getattr(image, "path", None)
    return out


def _rgb(px):
    px = np.asarray(px, dtype=np.float32)
    if px.shape[0] == 1:
        px = np.repeat(px, 3, axis=0)
    return np.ascontiguousarray(px[:3])


class EarDenseDataset(torch.utils.data.Dataset):
    """Augmented dense samples of real annotated ears (the dense sample format).

    Items: ``"image"`` (3, S, S) in [0, 1], ``"uv"`` (2, S, S) (u, v) in [0, 1] and 0
    on background, ``"mask"`` (S, S) 1 on the ear, ``"depth"`` zeros (S, S),
    ``"lm_ear55"`` (55, 2) (y, x) crop pixels, ``"has_ear55"`` 1.

    Each item draws an ear, mirrors it with probability ``p_flip``, rotates it about
    its centre, crops it like :class:`EarDenseRegInitialiser` does (the tight landmark
    box, jittered in position, scale and aspect, enlarged by ``margin``), computes the
    TPS ground truth on the crop and changes the colours.

    Parameters
    ----------
    images : `list` of annotated menpo images (group ``"ear55"``)
    space : :class:`EarSpace`
    size : `int`
        Crop side ``S``.
    margin : `float`
    augment : `dict`, optional
        Overrides of :data:`AUGMENT_DEFAULTS`; ``augment=False`` gives plain crops of
        the tight GT box (validation).
    length : `int`
        Nominal length (items are random; the index seeds them).
    seed : `int`
    """

    def __init__(
        self,
        images,
        space,
        size=96,
        margin=0.25,
        augment=None,
        length=10000,
        seed=0,
        group="ear55",
    ):
        if not images:
            raise ValueError("EarDenseDataset: no images")
        self.space = space
        self.size = int(size)
        self.margin = float(margin)
        self.plain = augment is False
        self.aug = dict(AUGMENT_DEFAULTS)
        for k, v in (augment or {}).items():
            if k not in AUGMENT_DEFAULTS:
                raise ValueError(f"augment: unknown option {k!r}")
            self.aug[k] = float(v)
        self.length = int(length)
        self.seed = int(seed)
        self.sources = []
        for k, im in enumerate(images):
            gt = check_shape(_pts(im.landmarks[group]), "ear55", f"images[{k}]")
            crop, c2i = crop_face(im, box_from_shape(gt), _PRE_SIZE, margin=_PRE_MARGIN)
            gt_pre = c2i.pseudoinverse().apply(gt)
            # dense GT once per source (TPS on the pre-crop); items warp it
            d = ear_dense_ground_truth((_PRE_SIZE, _PRE_SIZE), gt_pre, space)
            m = d.mask.astype(np.float32)
            maps = np.stack([d.u * m, d.v * m, m]).astype(np.float32)
            self.sources.append((_rgb(crop.pixels), gt_pre, maps, _stem(im)))

    def __len__(self):
        return self.length if not self.plain else len(self.sources)

    def __str__(self):
        return (
            f"EarDenseDataset({len(self.sources)} ears, {self.size}px crops, margin "
            f"{self.margin}, {'no augmentation' if self.plain else 'augmented'})"
        )

    def __getitem__(self, index):
        a = self.aug
        rng = np.random.default_rng([self.seed, int(index)])
        k = (
            int(index) % len(self.sources)
            if self.plain
            else int(rng.integers(len(self.sources)))
        )
        px, gt, maps, _ = self.sources[k]
        P = px.shape[-1]
        flip = (not self.plain) and rng.random() < a["p_flip"]
        if flip:
            gt = gt.copy()
            gt[:, 1] = P - 1 - gt[:, 1]
        c = (gt.min(0) + gt.max(0)) / 2
        ang = 0.0
        if not self.plain:
            ang = (
                float(
                    np.clip(
                        rng.normal(0, a["rotation_std"]),
                        -a["max_rotation"],
                        a["max_rotation"],
                    )
                )
                * math.pi
                / 180
            )
        R = np.array([[math.cos(ang), -math.sin(ang)], [math.sin(ang), math.cos(ang)]])
        gta = (gt - c) @ R.T + c
        lo, hi = gta.min(0), gta.max(0)
        side = float((hi - lo).max())
        centre = (lo + hi) / 2
        if not self.plain:
            ext = hi - lo
            centre = centre + rng.uniform(-a["box_shift"], a["box_shift"], 2) * ext
            ext = ext * math.exp(rng.uniform(-a["scale_range"], a["scale_range"]))
            ext = ext * np.exp(rng.uniform(-a["aspect_range"], a["aspect_range"], 2))
            side = float(ext.max())
        S = self.size
        step = side * (1 + 2 * self.margin) / S
        offset = centre - step * (S - 1) / 2
        ii = np.arange(S, dtype=np.float64)
        grid = np.stack(np.meshgrid(ii, ii, indexing="ij"), -1) * step + offset
        src = (grid - c) @ R + c  # inverse rotation (R orthonormal)
        if flip:
            src[..., 1] = P - 1 - src[..., 1]
        g = np.stack([src[..., 1], src[..., 0]], -1) / (P - 1) * 2 - 1
        both = torch.from_numpy(np.concatenate([px, maps]))[None]
        out = F.grid_sample(
            both,
            torch.from_numpy(g[None].astype(np.float32)),
            mode="bilinear",
            padding_mode="zeros",
            align_corners=True,
        )[0]
        img = out[:3]
        # (u m, v m, m) warped bilinearly: divide by m so the border does not blend
        # with the background's zeros
        m = out[5]
        mask = (m >= 0.5).float()
        uv = (out[3:5] / m.clamp_min(1e-6)).clamp(0, 1) * mask
        lm = (gta - offset) / step
        if not self.plain:
            img = self._photometric(img, rng)
        return {
            "image": img.contiguous(),
            "uv": uv.contiguous(),
            "mask": mask,
            "depth": torch.zeros((S, S), dtype=torch.float32),
            "lm_ear55": torch.from_numpy(lm.astype(np.float32)),
            "has_ear55": torch.tensor(1.0),
        }

    def _photometric(self, x, rng):
        a = self.aug
        x = x.clamp(0, 1) ** math.exp(rng.uniform(-0.4, 0.4))
        gain = torch.from_numpy(np.exp(rng.uniform(-0.15, 0.15, 3)).astype(np.float32))
        x = x * gain[:, None, None]
        x = (
            (x - 0.5) * math.exp(rng.uniform(-0.4, 0.3))
            + 0.5
            + rng.uniform(-0.12, 0.12)
        )
        if rng.random() < a["p_grey"]:
            x = x.mean(0, keepdim=True).expand(3, -1, -1)
        if rng.random() < a["p_blur"]:
            k = torch.tensor([1.0, 2.0, 1.0])
            k = (k[:, None] * k[None, :]) / 16
            x = F.conv2d(x[:, None], k[None, None], padding=1)[:, 0]
        noise = rng.normal(0, a["noise_std"] * rng.random(), tuple(x.shape))
        x = x + torch.from_numpy(noise.astype(np.float32))
        return x.clamp(0, 1)


# --------------------------------------------------------------------------- model file
def save_ear_densereg(path, net, space, pca=None, extra=None):
    """Save an ear DenseReg model (network, reference ear, PCA) with weights.py."""
    tensors = {f"net.{k}": v for k, v in net.state_dict().items()}
    tensors["space.reference"] = np.asarray(space.reference, dtype=np.float64)
    if pca is not None:
        tensors.update(pca.to_arrays("pca.ear55"))
    config = {
        "net": net.config.to_dict(),
        "space_n_shapes": int(space.n_shapes),
        "pca": pca is not None,
        "markup": "ear55",
    }
    save_weights(path, tensors, KIND, config=config, extra=extra)


def load_ear_densereg(path):
    """Load ``(net, space, pca or None, header)`` written by :func:`save_ear_densereg`.

    Raises
    ------
    WeightsError
        Missing, corrupt, foreign or inconsistent files (the message names the file).
    """
    path = Path(path)
    tensors, header, net = read_model_file(path, KIND, "ear DenseReg")
    cfg = header.get("config", {})
    try:
        space = EarSpace(
            tensors["space.reference"].double().numpy(), cfg.get("space_n_shapes", 0)
        )
        pca = (
            ShapePCA.from_arrays(tensors, prefix="pca.ear55")
            if cfg.get("pca")
            else None
        )
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        first = str(e).splitlines()[0] if str(e) else repr(e)
        raise WeightsError(
            f"{path}: incompatible ear DenseReg file ({first})"
        ) from None
    net.eval()
    return net, space, pca, header


# --------------------------------------------------------------------------- initialiser
class EarDenseRegInitialiser(DenseRegInitialiser):
    """DenseReg-ear: 55 ear landmarks read from a dense reference-ear (u, v) field.

    The face initialiser with the ear's (u, v) space in place of the face template:
    the network, the crop, the decoding and the landmark read-out (with the optional
    PCA clean-up) are :class:`~menpo_densereg.densereg.initialiser.DenseRegInitialiser`'s;
    only the space the landmarks live in (an :class:`EarSpace`, DenseReg §4.3) differs.

    Parameters
    ----------
    net : :class:`DenseRegNet`
    space : :class:`EarSpace`
        The reference ear whose (u, v) the network regresses (landmark UVs).
    pca : :class:`ShapePCA`, optional
    use_pca : `bool`
        Clean the landmarks up with ``pca`` (confidence-weighted reconstruction).
    n_components : `int`, optional
    radius : `float`
        UV radius of the landmark read-out.
    name : `str`, optional
    threads : `int` or `None`
        torch threads while the network runs (1 is fastest on a busy 2-core CPU).
    """

    def __init__(
        self,
        net,
        space,
        pca=None,
        use_pca=False,
        n_components=None,
        radius=0.03,
        name=None,
        threads=1,
    ):
        if use_pca and pca is None:
            raise ValueError("use_pca: this model has no PCA shape model")
        self.space = space
        super().__init__(
            net,
            {"ear55": pca} if pca is not None else None,
            markup="ear55",
            pca=use_pca,
            n_components=n_components,
            radius=radius,
            name=name or ("DenseReg-ear+PCA" if use_pca else "DenseReg-ear"),
            template=space,
            threads=threads,
        )

    @property
    def pca_model(self):
        """The ear PCA shape model, or `None`."""
        return self.pca_models.get("ear55")

    @classmethod
    def from_weights(cls, path, **kwargs):
        """Load from a model file written by :func:`save_ear_densereg`."""
        net, space, pca, _ = load_ear_densereg(path)
        return cls(net, space, pca, **kwargs)

    def with_options(self, **kwargs):
        """A copy sharing the network, with other read-out options."""
        opts = dict(
            use_pca=self.pca,
            n_components=self.n_components,
            radius=self.radius,
            threads=self.threads,
        )
        opts.update(kwargs)
        return type(self)(self.net, self.space, self.pca_model, **opts)

    def dense(self, image, bounding_box):
        """Crop-frame outputs: ``crop``, ``crop_to_image``, ``u``, ``v``, ``face_prob``,
        ``mask`` (face_prob >= 0.5), ``landmarks`` (crop frame) and ``confidence``."""
        crop, c2i = self._crop(image, bounding_box)
        d = self.predict_crop(crop)
        pts, conf, _ = self.read_landmarks(d)
        return {
            "crop": crop,
            "crop_to_image": c2i,
            "u": d["u"],
            "v": d["v"],
            "face_prob": d["face_prob"],
            "mask": d["face_prob"] >= 0.5,
            "landmarks": PointCloud(pts),
            "confidence": conf,
        }

    def __str__(self):
        pca = ", PCA clean-up" if self.pca else ""
        return (
            f"EarDenseRegInitialiser '{self.name}': {self.net}; {self.space}; "
            f"UV radius {self.radius}{pca}"
        )


# --------------------------------------------------------------------------- recipes
def _resolve_data(recipe, fitter_dir, key="folder"):
    data = recipe.get("data", {})
    base = Path(recipe["_path"]).parent if "_path" in recipe else Path(fitter_dir)
    folder = Path(data.get(key, "../../../shared/data/ears55"))
    return folder if folder.is_absolute() else (base / folder).resolve()


def recipe_split(recipe, fitter_dir):
    """``(train, test)`` ear images of a recipe's ``[data] folder`` / ``held_out``."""
    images = load_ears(_resolve_data(recipe, fitter_dir))
    held = recipe.get("data", {}).get("held_out", list(EAR_HELD_OUT))
    return ear_split(images, held)


def from_fitter_dir(path, **overrides):
    """Registry entry point: an :class:`EarDenseRegInitialiser` from a fitter folder.

    ``[model] weights`` (relative to the folder, default ``weights.safetensors``; may
    point to another folder's file) and ``[readout] pca / n_components / radius``.
    """
    from menpo_densereg.fitting.recipes import load_recipe

    path = Path(path)
    recipe = load_recipe(path)
    kind = recipe["fitter"]["kind"]
    if kind != KIND:
        raise ValueError(f"{path}/recipe.toml: kind {kind!r} is not {KIND!r}")
    weights = path / recipe.get("model", {}).get("weights", "weights.safetensors")
    if not weights.is_file():
        raise WeightsError(
            f"{weights}: model file not found (train it with `menpo-densereg train {path}`)"
        )
    ro = dict(recipe.get("readout", {}))
    kwargs = {"use_pca": bool(ro.get("pca", False))}
    for k in ("n_components", "radius", "threads"):
        if k in ro:
            kwargs[k] = ro[k]
    kwargs["name"] = recipe["fitter"].get("display_name") or recipe["fitter"].get(
        "name"
    )
    kwargs.update(overrides)
    return EarDenseRegInitialiser.from_weights(weights, **kwargs)


def evaluate_initialiser(fitter, images, group="ear55"):
    """Box-normalised NMEs of ``fitter.fit_from_bb`` from the tight GT boxes."""
    from menpo_densereg.evaluation.metrics import nme

    errs = []
    for im in images:
        gt = PointCloud(_pts(im.landmarks[group]))
        res = fitter.fit_from_bb(im, box_from_shape(gt))
        errs.append(nme(res.final_shape, gt, "ear55"))
    return np.array(errs)


def _load_backbone(net, path):
    """Initialise ``net.backbone`` from another DenseReg model file (e.g. the face net)."""
    tensors, _ = load_weights(path)
    state = {
        k[len("net.backbone.") :]: v
        for k, v in tensors.items()
        if k.startswith("net.backbone.")
    }
    try:
        net.backbone.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise ValueError(
            f"init_backbone {path}: backbone does not match ({first}); use the same "
            "backbone and width"
        ) from None


def train_ear_densereg(
    train_images,
    net_config=None,
    train_config=None,
    augment=None,
    loss_config=None,
    pca=True,
    seed=0,
    init_backbone=None,
):
    """Train an ear DenseReg network on annotated ears.

    ``init_backbone``: a DenseReg model file whose backbone initialises the network
    (same backbone and width), e.g. the face network (transfer learning).

    Returns
    -------
    net, space, pca_model, history
    """
    from menpo_densereg.densereg.losses import DenseRegLossConfig
    from menpo_densereg.densereg.train import make_loss_fn
    from menpo_densereg.training import TrainConfig, seed_everything, train_loop

    shapes = [_pts(im.landmarks["ear55"]) for im in train_images]
    space = EarSpace.from_shapes(canonical_ear_shapes(shapes))
    cfg = (
        net_config
        if isinstance(net_config, DenseRegConfig)
        else DenseRegConfig(
            **{
                "depth_head": False,
                "input_size": 96,
                "width": 16,
                "n_bins": 8,
                **(net_config or {}),
            }
        )
    )
    tc = train_config or TrainConfig(steps=50, batch_size=8, progress=False)
    seed_everything(tc.seed)  # before the network is built: same seed, same run
    net = DenseRegNet(cfg)
    if init_backbone is not None:
        _load_backbone(net, init_backbone)
    data = EarDenseDataset(
        train_images,
        space,
        cfg.input_size,
        cfg.margin,
        augment,
        length=max(1000, tc.steps * tc.batch_size),
        seed=seed,
    )
    lc = loss_config or DenseRegLossConfig(depth_weight=0.0)
    history = train_loop(net, data, make_loss_fn(lc), tc)
    net.eval()
    pca_model = None
    if pca:
        p_flip = dict(AUGMENT_DEFAULTS, **(augment or {}))["p_flip"]
        if p_flip > 0:  # both chiralities: the model must represent left and right ears
            shapes = shapes + [s * np.array([1.0, -1.0]) for s in shapes]
        pca_model = ShapePCA.from_shapes(shapes, variance=0.98)
    return net, space, pca_model, history


def train_from_recipe(recipe, fitter_dir, args=None):
    """Train ``fitters/densereg-ear`` from its recipe.

    Tables: ``[data] folder`` (relative to the recipe), ``held_out`` (stems);
    ``[model]`` (``weights``, optional ``init_backbone`` (a DenseReg model file whose
    backbone starts the training) + :class:`DenseRegConfig` keys); ``[augment]``
    (:data:`AUGMENT_DEFAULTS`); ``[loss]`` (:class:`DenseRegLossConfig`); ``[train]``
    (:class:`TrainConfig`). The PCA shape model of the training ears is always stored
    (``[readout] pca`` only decides whether a fitter folder uses it).
    """
    from menpo_densereg.densereg.losses import DenseRegLossConfig
    from menpo_densereg.training import recipe_train_config

    kind = recipe["fitter"]["kind"]
    if kind != KIND:
        raise ValueError(f"recipe kind {kind!r} is not {KIND!r}")
    fitter_dir = Path(fitter_dir)
    # the run's own folder (fitter folder + recipe hash); seeded before anything is built
    tc = recipe_train_config(recipe, fitter_dir, args)
    name = recipe["fitter"].get("name", fitter_dir.name)
    train, test = recipe_split(recipe, fitter_dir)
    model = dict(recipe.get("model", {}))
    weights = fitter_dir / model.pop("weights", "weights.safetensors")
    init_backbone = model.pop("init_backbone", None)
    if init_backbone is not None:
        base = Path(recipe["_path"]).parent if "_path" in recipe else fitter_dir
        init_backbone = (base / init_backbone).resolve()
    net_cfg = DenseRegConfig.from_dict(
        {"depth_head": False, "input_size": 96, "width": 16, "n_bins": 8, **model}
    )
    lc = DenseRegLossConfig(**{"depth_weight": 0.0, **recipe.get("loss", {})})
    t0 = time.time()
    net, space, pca, history = train_ear_densereg(
        train,
        net_cfg,
        tc,
        recipe.get("augment"),
        lc,
        pca=True,
        seed=tc.seed,
        init_backbone=init_backbone,
    )
    seconds = round(time.time() - t0, 1)
    init = EarDenseRegInitialiser(net, space, pca)
    e_test = evaluate_initialiser(init, test)
    e_train = evaluate_initialiser(init, train)
    last = history["train"][-1] if history["train"] else {}
    extra = {
        "fitter": name,
        "train": sorted(_stem(im) for im in train),
        "held_out": sorted(_stem(im) for im in test),
        "steps": history["steps"],
        "seconds": seconds,
        "device": history["device"],
        "final_train_logs": {k: float(v) for k, v in last.items()},
        "nme_box_train": float(e_train.mean()),
        "nme_box_held_out": float(e_test.mean()),
    }
    save_ear_densereg(weights, net, space, pca, extra=extra)
    print(
        f"saved {weights}: {history['steps']} steps in {seconds} s; NME (GT-box average "
        f"edge) train {e_train.mean():.4f}, held-out {e_test.mean():.4f}"
    )
    return {"weights": str(weights), "history": history, "nme_held_out": e_test}
