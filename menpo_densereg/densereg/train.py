"""Train a DenseReg fitter from its recipe (``menpo-densereg train fitters/<name>``).

Recipe tables (``fitters/<name>/recipe.toml``):

``[fitter]``
    ``kind = "densereg"``, ``name``, optional ``display_name``.
``[model]``
    :class:`~menpo_densereg.densereg.network.DenseRegConfig` fields (``n_bins``, ``head``,
    ``backbone``, ``input_size``, ``width``, ``depth_head``, ...), and ``weights`` (file
    name, default ``weights.safetensors``).
``[loss]``
    :class:`~menpo_densereg.densereg.losses.DenseRegLossConfig` fields.
``[data]``
    ``root`` (folder of annotated images, relative to the repository or absolute;
    default ``../shared/data``), ``train`` (sub-folders of ``root`` whose images train the
    net; ``"menpo:builtin"`` adds menpo's four 68-point assets), ``validation``
    (held-out sub-folders, never used for training), ``real_samples`` (augmented
    crops of the training images, rendered by the data engine with dense ground truth)
    and ``synth_samples`` (re-posed 3D renders of the *training* faces only),
    ``pca_samples`` (samples whose landmarks build the PCA shape models).
``[train]``
    :class:`~menpo_densereg.training.TrainConfig` fields.
``[readout]``
    ``markup``, ``pca``, ``n_components``, ``radius`` (used by the initialiser).

Outputs in the fitter folder: ``weights.safetensors`` (network + PCA shape models of
every markup the training data carry, via weights.py) and ``train_log.json``; the
resumable ``checkpoint.pt`` and the rendered-sample cache go to ``[train] out_dir``
(default ``runs/<fitter name>/``, git-ignored).
"""

import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from menpo_densereg.atomic import atomic_write_text
from menpo_densereg.densereg.losses import DenseRegLossConfig, densereg_loss
from menpo_densereg.densereg.network import DenseRegConfig, build_densereg, decode_uv
from menpo_densereg.data.markups import get_markup
from menpo_densereg.densereg.readout import ShapePCA, landmarks_from_uv

__all__ = [
    "train_from_recipe",
    "make_loss_fn",
    "make_val_fn",
    "prepare_validation",
    "collect_pca_models",
    "load_image_folders",
    "heldout_dense_samples",
    "build_train_dataset",
    "CompactDenseDataset",
    "render_compact",
]

_REPO = Path(__file__).resolve().parents[2]
_MARKUPS = ("ibug68", "wflw98", "lfpw29", "five")


def _resolve(path, base=_REPO):
    p = Path(str(path)).expanduser()
    return p if p.is_absolute() else (base / p).resolve()


def load_image_folders(root, folders, consensus_max_faces=None, data=None):
    """Annotated 68- or 98-point images from folders of ``root``.

    ``"menpo:builtin"`` stands for menpo's takeo, einstein, breakingbad and lenna;
    ``"pseudo68:FOLDER"`` for the images of FOLDER (another markup, e.g. Helen's 29 points)
    with 68-point pseudo-labels that agree with their manual points
    (:mod:`menpo_densereg.data.pseudolabels`); ``"consensus68:FOLDER"`` for an unlabelled
    pool's faces where dlib and ``densereg-aam-face`` agree within 5 % NME (training side
    of :mod:`menpo_densereg.data.splits`;
    :func:`menpo_densereg.data.pseudolabels.consensus_images`; at most
    ``consensus_max_faces`` per pool, evenly spread: every image is held in memory;
    ``data["consensus_labels"] = "cached"`` reuses the labels of earlier labeller
    versions, :func:`menpo_densereg.fitting.labellers.consensus_sources`);
    ``"offset68:FOLDER"`` for a 68-point variant of the 300-W convention (``ytf68``)
    moved to 300-W's (:func:`menpo_densereg.data.pseudolabels.offset_convention_images`;
    ``data["offset68_every"]``, ``data["offset68_samples"]``).
    Every image keeps one landmark group, ``"ibug68"`` or ``"wflw98"``; grey images
    become RGB.
    """
    from menpo_densereg.data.readers import read_pts_folder

    data = dict(data or {})
    images = []
    for f in folders:
        if f == "menpo:builtin":
            from menpo_densereg.data.readers import builtin_faces

            images.extend(builtin_faces())
            continue
        prefix = next(
            (p for p in ("pseudo68:", "consensus68:", "offset68:") if f.startswith(p)),
            "",
        )
        folder = _resolve(f[len(prefix) :], Path(root))
        if not folder.is_dir():
            raise ValueError(f"[data]: image folder {folder} not found")
        if prefix in ("consensus68:", "offset68:"):
            from menpo_densereg.fitting.labellers import pool_images

            options = dict(data, consensus_max_faces=consensus_max_faces)
            found, _ = pool_images(prefix[:-1], folder, options)
        elif prefix == "pseudo68:":
            from menpo_densereg.data.pseudolabels import cached_pseudo_labels

            found = cached_pseudo_labels(folder, progress=False)
            for im in found:
                shape = im.landmarks["ibug68"]
                im.landmarks.clear()
                im.landmarks["pts68"] = shape
        else:
            found = read_pts_folder(folder)
        for im in found:
            group = im.landmarks.group_labels[0]
            shape = im.landmarks[group]
            if shape.n_points not in (68, 98):
                continue
            name = "ibug68" if shape.n_points == 68 else "wflw98"
            im.landmarks.clear()
            im.landmarks[name] = shape
            if im.n_channels == 1:
                from menpo.image import Image

                grey = im
                im = Image(np.repeat(grey.pixels, 3, axis=0), copy=False)
                im.landmarks[name] = shape
                im.path = getattr(grey, "path", None)
            images.append(im)
    return images


def heldout_dense_samples(recipe, size=None, folders=None):
    """Engine ground truth of the held-out images (plain landmark-box crops).

    Parameters
    ----------
    recipe : `dict`
        A DenseReg recipe (``[data] root`` and ``validation``).
    size : `int`, optional
        Crop side (default the recipe's ``[model] input_size``).
    folders : `list` of `str`, optional
        Override ``[data] validation``.

    Returns
    -------
    `list` of numpy dense samples (``image``, ``uv``, ``mask``, ``parts``, ``lm_ibug68``...)
    """
    from menpo_densereg.densereg.dataset import RealDenseDataset

    data = recipe.get("data", {})
    size = int(size or recipe.get("model", {}).get("input_size", 112))
    root = _resolve(data.get("root", "../shared/data"))
    images = load_image_folders(root, folders or data.get("validation", []))
    if not images:
        raise ValueError("[data] validation: no held-out images")
    ds = RealDenseDataset(images, size, augment=False, seed=0)
    return [ds.sample(i) for i in range(len(ds))]


def make_loss_fn(loss_config):
    """``loss_fn(model, batch, device)`` for :func:`menpo_densereg.training.train_loop`."""

    def loss_fn(model, batch, device):
        outputs = model(batch["image"])
        loss, parts = densereg_loss(outputs, batch, loss_config)
        parts.pop("loss", None)
        parts.pop("face_px", None)
        return loss, parts

    return loss_fn


def prepare_validation(images, size, margin=0.25):
    """Crops of held-out images from their tight GT boxes, with GT in the crop frame.

    Returns
    -------
    `list` of ``(array (3, S, S), gt (68, 2) crop frame, normaliser)``
    """
    from menpo.shape import PointCloud

    from menpo_densereg.data.crop import crop_face, image_to_array
    from menpo_densereg.fitting.base import box_from_shape

    m = get_markup("68")
    items = []
    for im in images:
        gt = im.landmarks["ibug68"]
        crop, c2i = crop_face(im, box_from_shape(gt), size, margin=margin)
        gt_crop = c2i.pseudoinverse().apply(PointCloud(gt.points)).points
        items.append((image_to_array(crop), gt_crop, m.normalising_distance(gt_crop)))
    return items


def make_val_fn(items, landmark_uv, pca=None, residual=True, batch=8):
    """``val_fn(model, device)``: mean landmark NME (inter-ocular) on held-out crops."""

    def val_fn(model, device):
        errs, errs_pca, face = [], [], []
        for i in range(0, len(items), batch):
            chunk = items[i : i + batch]
            x = torch.from_numpy(np.stack([c[0] for c in chunk])).to(device)
            dec = decode_uv(model(x), residual=residual)
            dec = {k: v.float().cpu().numpy() for k, v in dec.items()}
            for j, (_, gt, norm) in enumerate(chunk):
                pts, conf, _ = landmarks_from_uv(
                    dec["u"][j], dec["v"][j], landmark_uv, dec["face_prob"][j]
                )
                errs.append(np.linalg.norm(pts - gt, axis=1).mean() / norm)
                if pca is not None:
                    rec = pca.reconstruct(pts, conf)
                    errs_pca.append(np.linalg.norm(rec - gt, axis=1).mean() / norm)
                face.append(float((dec["face_prob"][j] > 0.5).mean()))
        logs = {"nme": float(np.mean(errs)), "face_frac": float(np.mean(face))}
        if errs_pca:
            logs["nme_pca"] = float(np.mean(errs_pca))
        return logs

    return val_fn


def collect_pca_models(
    dataset, n_samples=400, seed=0, max_components=20, variance=0.98
):
    """PCA shape models of every markup found in ``n_samples`` dataset items."""
    rng = np.random.default_rng(seed)
    n = len(dataset)
    idx = rng.choice(n, size=min(n_samples, n), replace=False)
    shapes = {m: [] for m in _MARKUPS}
    for i in idx:
        item = dataset[int(i)]
        for m in _MARKUPS:
            if float(item.get(f"has_{m}", 0)) > 0.5:
                pts = np.asarray(item[f"lm_{m}"], dtype=np.float64)
                if np.all(np.isfinite(pts)) and np.ptp(pts, axis=0).min() > 1:
                    shapes[m].append(pts)
    models = {}
    for m, s in shapes.items():
        if len(s) >= 10:
            models[m] = ShapePCA.from_shapes(
                s, max_components=max_components, variance=variance
            )
    return models


class CompactDenseDataset(torch.utils.data.Dataset):
    """Pre-rendered dense samples held compactly in memory (uint8 / float16).

    Rendering a sample costs 10-40 ms of CPU; training for many epochs on a fixed,
    pre-rendered set is much cheaper on a CPU than rendering on the fly. Items are
    returned in the dense sample format (float32 image/uv/mask/depth, int64 parts and
    every markup's ``lm_/has_/vis_``).

    Parameters
    ----------
    arrays : `dict` of stacked arrays (see :func:`render_compact`)
    """

    def __init__(self, arrays):
        self.arrays = arrays
        self.n = int(arrays["image"].shape[0])

    def __len__(self):
        return self.n

    def __str__(self):
        s = self.arrays["image"].shape[-1]
        return f"CompactDenseDataset: {self.n} samples of {s}x{s}"

    def __getitem__(self, i):
        a = self.arrays
        item = {
            "image": torch.from_numpy(a["image"][i].astype(np.float32) / 255.0),
            "uv": torch.from_numpy(a["uv"][i].astype(np.float32)),
            "mask": torch.from_numpy(a["mask"][i].astype(np.float32)),
            "depth": torch.from_numpy(a["depth"][i].astype(np.float32)),
            "parts": torch.from_numpy(a["parts"][i].astype(np.int64)),
        }
        for m in _MARKUPS:
            item[f"lm_{m}"] = torch.from_numpy(a[f"lm_{m}"][i])
            item[f"has_{m}"] = torch.tensor(float(a[f"has_{m}"][i]))
            item[f"vis_{m}"] = torch.from_numpy(a[f"vis_{m}"][i])
        return item


def render_compact(datasets, counts, path=None, desc="render"):
    """Render ``counts[i]`` items of ``datasets[i]`` into compact arrays (cached to ``path``).

    Parameters
    ----------
    datasets : `list` of datasets with a numpy ``sample(index)`` method
    counts : `list` of `int`
    path : `Path`, optional
        An ``.npz`` cache: loaded when present, written (atomically) otherwise.
    """
    from tqdm.auto import tqdm

    from menpo_densereg.atomic import atomic_path

    if path is not None and Path(path).is_file():
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    rows = []
    total = sum(counts)
    with tqdm(total=total, desc=desc, dynamic_ncols=True) as bar:
        for ds, n in zip(datasets, counts):
            for i in range(n):
                s = ds.sample(i % len(ds))
                row = {
                    "image": np.clip(
                        np.rint(np.asarray(s["image"]) * 255), 0, 255
                    ).astype(np.uint8),
                    "uv": np.asarray(s["uv"], np.float16),
                    "mask": np.asarray(s["mask"]).astype(np.uint8),
                    "depth": np.asarray(s["depth"], np.float16),
                    "parts": np.asarray(s["parts"]).astype(np.uint8),
                }
                for m in _MARKUPS:
                    row[f"lm_{m}"] = np.asarray(s[f"lm_{m}"], np.float32)
                    row[f"has_{m}"] = np.float32(s[f"has_{m}"])
                    row[f"vis_{m}"] = np.asarray(s[f"vis_{m}"], np.float32)
                rows.append(row)
                bar.update(1)
    arrays = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
    if path is not None:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
    return arrays


def build_train_dataset(recipe, config, seed, cache_dir=None):
    """The training set: augmented real crops + synthetic re-posed renders (engine).

    Both are rendered from the ``[data] train`` images only and cached compactly in
    ``cache_dir`` (keyed by the data settings), so repeated runs (and the K study) train
    on identical samples.

    Returns
    -------
    dataset : :class:`CompactDenseDataset`
    train_images : `list` of menpo images
    """
    import hashlib

    from menpo_densereg.densereg import dataset as dd

    data = recipe.get("data", {})
    root = _resolve(data.get("root", "../shared/data"))
    folders = list(data.get("train", []))
    train_images = load_image_folders(
        root, folders, consensus_max_faces=data.get("consensus_max_faces"), data=data
    )
    if data.get("split") == "person":
        # drop held-out people / images (menpo_densereg.data.splits)
        from menpo_densereg.data.splits import training_side

        train_images = training_side(train_images)
    if not train_images:
        raise ValueError("[data] train: no training images")
    n_real = int(data.get("real_samples", 1000))
    n_synth = int(data.get("synth_samples", 1000))
    pools = [
        data.get(k)
        for k in ("consensus_max_faces", "consensus_labels", "offset68_every")
    ]
    # whose labels (keys absent from older recipes leave their cache keys unchanged)
    labels = {
        k: data[k]
        for k in ("consensus_labellers", "consensus_label", "consensus_versions")
        if k in data
    }
    key = json.dumps(
        [folders, n_real, n_synth, config.input_size, seed, len(train_images)]
        + ([pools] if any(v is not None for v in pools) else [])
        + ([labels] if labels else [])
    )
    digest = hashlib.sha1(key.encode()).hexdigest()[:10]
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"densereg_data_{digest}.npz"
        path.parent.mkdir(parents=True, exist_ok=True)
    sources, counts = [], []
    if not (path is not None and path.is_file()):
        # the template is fitted to each face once, shared by both datasets
        real = dd.RealDenseDataset(
            train_images, config.input_size, augment=True, seed=seed, length=n_real
        )
        print(f"template fitted to {len(real.faces)} training faces")
        if n_real:
            sources.append(real)
            counts.append(n_real)
        if n_synth:
            sources.append(
                dd.SyntheticDenseDataset(
                    None,
                    config.input_size,
                    length=n_synth,
                    seed=seed + 1,
                    faces=real.faces,
                )
            )
            counts.append(n_synth)
    arrays = render_compact(sources, counts, path, desc="render training samples")
    return CompactDenseDataset(arrays), train_images


def train_from_recipe(recipe, fitter_dir, args):
    """Train the DenseReg fitter described by ``recipe`` into ``fitter_dir``.

    Parameters
    ----------
    recipe : `dict`
        Parsed ``recipe.toml``.
    fitter_dir : `Path`
    args : `argparse.Namespace`
        ``steps`` (int or None), ``device`` (str or None), ``resume`` (bool).

    Returns
    -------
    summary : `dict`
    """
    from menpo_densereg.densereg.initialiser import save_densereg
    from menpo_densereg.template.face import FaceTemplate
    from menpo_densereg.training import recipe_train_config, train_loop

    fitter_dir = Path(fitter_dir)
    model_cfg = dict(recipe.get("model", {}))
    weights_name = model_cfg.pop("weights", "weights.safetensors")
    # fine-tuning: a DenseReg model file (same configuration) to start from, relative
    # to the recipe's folder; copied first (the run may overwrite it)
    init_weights = model_cfg.pop("init_weights", None)
    if init_weights:
        import shutil
        import tempfile

        src = Path(recipe.get("_path", fitter_dir / "recipe.toml")).parent
        src = _resolve(init_weights, src)
        if not src.is_file():
            raise ValueError(f"[model] init_weights: {src} not found")
        init_weights = Path(tempfile.mkdtemp(prefix="densereg-init-")) / src.name
        shutil.copy2(src, init_weights)
    config = DenseRegConfig.from_dict(model_cfg)
    loss_cfg = DenseRegLossConfig(**recipe.get("loss", {}))
    train_tbl = dict(recipe.get("train", {}))
    # the rendered-sample cache stays in [train] out_dir (or runs/<name>); checkpoints
    # go to [train] out_dir or else this run's own folder (fitter folder + recipe hash);
    # everything is seeded before the network and the data are built
    data_cache = (
        _resolve(train_tbl["out_dir"])
        if train_tbl.get("out_dir")
        else _REPO / "runs" / fitter_dir.name
    )
    tc = recipe_train_config(
        recipe,
        fitter_dir,
        args,
        root=_REPO / "runs",
        out_dir=data_cache if train_tbl.get("out_dir") else None,
    )
    seed = int(tc.seed)
    net = build_densereg(config)
    if init_weights:
        from menpo_densereg.densereg.initialiser import load_densereg

        init_net = load_densereg(init_weights)[0]
        try:
            net.load_state_dict(init_net.state_dict(), strict=True)
        except RuntimeError as e:
            raise ValueError(
                f"[model] init_weights {init_weights}: another configuration ({e})"
            ) from None
        print(f"fine-tuning from {init_weights}")
    print(f"{net}\n{tc}")
    t0 = time.perf_counter()
    dataset, train_images = build_train_dataset(
        recipe, config, seed, cache_dir=data_cache
    )
    # only the paths are kept: thousands of decoded photographs would stay in memory
    # for the whole run (the samples are rendered)
    train_images = [str(getattr(im, "path", "?")) for im in train_images]
    data = recipe.get("data", {})
    root = _resolve(data.get("root", "../shared/data"))
    val_images = load_image_folders(root, data.get("validation", []))
    pca_models = collect_pca_models(
        dataset, int(data.get("pca_samples", 400)), seed=seed
    )
    t_data = time.perf_counter() - t0
    print(
        f"data: {len(train_images)} training images, {len(dataset)} samples per epoch, "
        f"{len(val_images)} held-out images; PCA for {sorted(pca_models)} "
        f"({t_data:.0f} s)"
    )
    tpl = FaceTemplate.load()
    val_fn = None
    if val_images:
        val_fn = make_val_fn(
            prepare_validation(val_images, config.input_size, config.margin),
            tpl.landmark_uv("68"),
            pca_models.get("ibug68"),
            residual=config.has_residual,
        )
    history = train_loop(net, dataset, make_loss_fn(loss_cfg), tc, val_fn=val_fn)
    net = net.cpu().eval()
    if int(os.environ.get("RANK", "0")) != 0:  # torchrun: rank 0 writes the files
        return {"steps": history["steps"], "rank": int(os.environ["RANK"])}
    summary = {
        "steps": history["steps"],
        "train_seconds": round(history["seconds"], 1),
        "device": history["device"],
        "train_images": train_images,
        "validation_images": [str(getattr(im, "path", "?")) for im in val_images],
        "samples_per_epoch": len(dataset),
        "final_train": history["train"][-1] if history["train"] else {},
        "final_val": history["val"][-1] if history["val"] else {},
        "loss": loss_cfg.to_dict(),
        "train": {k: v for k, v in vars(tc).items() if k != "extra"},
    }
    save_densereg(fitter_dir / weights_name, net, pca_models, extra=summary)
    atomic_write_text(
        fitter_dir / "train_log.json",
        json.dumps({"summary": summary, "history": history}, indent=1, default=str),
    )
    print(f"saved {fitter_dir / weights_name}; validation {summary['final_val']}")
    return summary
