"""Train DeCaFA from a recipe (``menpo-densereg train fitters/decafa-face``).

A recipe (TOML) has

- ``[fitter]``: ``kind = "decafa"``, ``name``, optional ``markup`` (returned by default);
- ``[model]``: the :class:`~menpo_densereg.decafa.network.DecafaConfig` fields;
- ``[loss]``: ``schedule`` = ``"increasing"`` (paper) | ``"constant"`` | ``"decreasing"``;
- ``[data]``: ``root`` (folder of the annotated images; relative paths are tried against
  the working directory, the repository and ``$MENPO_DENSEREG_DATA``), ``repeats``
  (augmented copies per image), ``alternate`` (one source per batch, in turn),
  ``[data.augment]`` (:class:`~menpo_densereg.decafa.dataset.AugmentConfig` fields)
  and ``[[data.sources]]``: each with ``name`` and either ``folders`` (annotated image
  folders under ``root``; ``"offset68:FOLDER"``, ``"consensus68:FOLDER"`` and
  ``"pseudo68:FOLDER"`` read a large 68-point pool as the DenseReg recipes do, training
  side of the person split only) or ``synthetic`` (the data engine's shards;
  ``optional = true`` skips a missing one); ``exclude`` (file stems), ``exclude_slice = [a, b]`` (positions
  in the sorted file list) hold images out; ``turns`` = batches per round-robin turn;
- ``[[validation]]``: held-out sets with ``name``, ``folders`` and ``only`` (stems) or
  ``slice = [a, b]``; the validation reports the NME of every markup each set carries,
  each with its own normaliser;
- ``[train]``: :class:`~menpo_densereg.training.TrainConfig` fields.

The trained network is written to ``<fitter_dir>/weights.safetensors``
(:func:`~menpo_densereg.decafa.initialiser.save_decafa`) with the training summary in
its header, and the summary also to ``<fitter_dir>/training_log.json``. Checkpoints go to
``runs/<fitter folder>-<run key>/`` in the repository (resumable;
:func:`menpo_densereg.training.recipe_train_config`).
"""

import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from menpo_densereg.atomic import atomic_write_text
from menpo_densereg.decafa.initialiser import save_decafa
from menpo_densereg.decafa.losses import decafa_loss
from menpo_densereg.decafa.network import DecafaConfig, build_decafa
from menpo_densereg.decafa.dataset import (
    AlternatingSourceSampler,
    AugmentConfig,
    LandmarkDataset,
    MixedLandmarkDataset,
    _record_from_image,
    load_landmark_folder,
    open_synthetic,
    to_grey,
)
from menpo_densereg.data.markups import get_markup
from menpo_densereg.training import recipe_train_config, train_loop

__all__ = [
    "train_from_recipe",
    "resolve_data_root",
    "build_sources",
    "build_validation",
    "make_loss_fn",
    "evaluate_nme",
    "make_val_fn",
    "model_config_from_recipe",
]

_REPO = Path(__file__).resolve().parents[2]


def resolve_data_root(root, recipe_path=None):
    """Find the data folder named by a recipe (`FileNotFoundError` naming the tries)."""
    root = Path(os.path.expanduser(str(root)))
    if root.is_absolute():
        if root.is_dir():
            return root
        raise FileNotFoundError(f"data root {root} not found")
    tries = [Path.cwd() / root, _REPO / root]
    if recipe_path is not None:
        tries.append(Path(recipe_path).parent / root)
    env = os.environ.get("MENPO_DENSEREG_DATA")
    if env:
        tries.insert(0, Path(env))
    for t in tries:
        if t.is_dir():
            return t.resolve()
    raise FileNotFoundError(
        f"data root {str(root)!r} not found (tried {[str(t) for t in tries]}; "
        "set MENPO_DENSEREG_DATA)"
    )


def model_config_from_recipe(recipe):
    """The :class:`DecafaConfig` of a recipe's ``[model]`` table."""
    model = {
        k: v
        for k, v in recipe.get("model", {}).items()
        if k not in ("weights", "init_weights")
    }
    return DecafaConfig.from_dict(model)


def _init_weights(recipe, fitter_dir, config):
    """The network to fine-tune from: ``[model] init_weights`` (a DeCaFA model file,
    relative to the recipe's folder, read before the run writes), or `None`.

    Raises
    ------
    ValueError
        The file is missing or was trained with another configuration.
    """
    name = recipe.get("model", {}).get("init_weights")
    if not name:
        return None
    from menpo_densereg.decafa.initialiser import load_decafa

    base = Path(recipe.get("_path", Path(fitter_dir) / "recipe.toml")).parent
    path = Path(name) if Path(name).is_absolute() else base / name
    if not path.is_file():
        raise ValueError(f"[model] init_weights: {path} not found")
    net, _ = load_decafa(path)
    if net.config.to_dict() != config.to_dict():
        raise ValueError(
            f"[model] init_weights: {path} has another configuration "
            f"({net.config}) than the recipe's ({config})"
        )
    print(f"[decafa] fine-tuning from {path}")
    return net


def _select(records, exclude=(), exclude_slice=None, only=None, slice_=None):
    def stem(r):
        return Path(r.source).stem

    idx = list(range(len(records)))
    if slice_ is not None:
        idx = idx[slice_[0] : slice_[1]]
    if exclude_slice is not None:
        drop = set(range(len(records))[exclude_slice[0] : exclude_slice[1]])
        idx = [i for i in idx if i not in drop]
    if only is not None:
        only = set(only)
        idx = [i for i in idx if stem(records[i]) in only]
    exclude = set(exclude)
    return [records[i] for i in idx if stem(records[i]) not in exclude]


_LABELLED_POOLS = ("offset68:", "consensus68:", "pseudo68:")


def _pool_records(spec, root, folder, size):
    """Records of a large 68-point pool: ``offset68:`` / ``consensus68:`` /
    ``pseudo68:`` folders, read as the DenseReg recipes read them
    (:func:`menpo_densereg.densereg.train.load_image_folders`; the spec's keys
    ``offset68_every``, ``offset68_samples``, ``consensus_labels``,
    ``consensus_labellers``, ``consensus_label``, ``consensus_versions``,
    ``consensus_max_nme`` and ``max_faces`` apply)."""
    from menpo_densereg.densereg.train import load_image_folders

    images = load_image_folders(
        root, [folder], consensus_max_faces=spec.get("max_faces"), data=spec
    )
    records = []
    for image in images:
        group = image.landmarks.group_labels[0]
        records.append(
            _record_from_image(
                image,
                image.landmarks[group],
                group,
                size,
                source=str(getattr(image, "path", folder)),
            )
        )
    return records


def _records(spec, root, size, what):
    folders = spec.get("folders") or ([spec["folder"]] if "folder" in spec else [])
    if not folders:
        raise ValueError(f"{what}: needs 'folders' (or 'synthetic')")
    records = []
    for f in folders:
        if str(f).startswith(_LABELLED_POOLS):
            records += _pool_records(spec, root, str(f), size)
            continue
        records += load_landmark_folder(root / f, size=size)
    sl, xs = spec.get("slice"), spec.get("exclude_slice")
    records = _select(
        records,
        exclude=spec.get("exclude", ()),
        exclude_slice=xs,
        only=spec.get("only"),
        slice_=sl,
    )
    if not records:
        raise ValueError(f"{what}: no image left after the selection")
    return records


def build_sources(recipe, config, seed=0):
    """The training sources of a recipe: ``(MixedLandmarkDataset, turns)``."""
    data = recipe.get("data", {})
    recipe_path = recipe.get("_path")
    specs = data.get("sources", [])
    if not specs:
        raise ValueError(f"{recipe_path}: [[data.sources]] is empty")
    augment = AugmentConfig(**data.get("augment", {}))
    repeats = int(data.get("repeats", 20))
    sources, turns = [], []
    root = None
    for k, spec in enumerate(specs):
        name = spec.get("name", f"source{k}")
        if "synthetic" in spec:
            syn = Path(spec["synthetic"])
            if not syn.is_absolute() and not syn.exists() and (_REPO / syn).exists():
                syn = _REPO / syn
            try:
                src = open_synthetic(
                    syn,
                    size=config.input_size,
                    channels=config.in_channels,
                )
            except (ValueError, FileNotFoundError, OSError) as e:
                if spec.get("optional", False):
                    print(f"[decafa] skipping optional source {name}: {e}")
                    continue
                raise
        else:
            if root is None:
                root = resolve_data_root(
                    data.get("root", "../shared/data"), recipe_path
                )
            records = _records(spec, root, config.input_size, f"source {name}")
            src = LandmarkDataset(
                records,
                size=config.input_size,
                margin=config.margin,
                augment=augment,
                seed=seed + 1000 * k,
                channels=config.in_channels,
                repeats=int(spec.get("repeats", repeats)),
                name=name,
            )
        sources.append(src)
        turns.append(int(spec.get("turns", 1)))
    return MixedLandmarkDataset(sources), turns


def build_validation(recipe, config):
    """``{name: LandmarkDataset}`` of the recipe's held-out sets (plain crops)."""
    specs = recipe.get("validation", [])
    if not specs:
        return {}
    root = resolve_data_root(
        recipe.get("data", {}).get("root", "../shared/data"), recipe.get("_path")
    )
    out = {}
    for k, spec in enumerate(specs):
        name = spec.get("name", f"val{k}")
        records = _records(spec, root, config.input_size, f"validation {name}")
        out[name] = LandmarkDataset(
            records,
            size=config.input_size,
            margin=config.margin,
            augment=None,
            channels=config.in_channels,
            name=name,
        )
    return out


def _model_input(model, images):
    net = getattr(model, "module", model)
    return to_grey(images) if net.config.in_channels == 1 else images


def make_loss_fn(schedule="increasing"):
    """``loss_fn(model, batch, device)`` for :func:`~menpo_densereg.training.train_loop`."""

    def loss_fn(model, batch, device):
        outs = model(_model_input(model, batch["image"]))
        return decafa_loss(outs, batch, schedule=schedule)

    return loss_fn


def evaluate_nme(model, dataset, device="cpu", batch_size=32):
    """Per-sample NME of every markup a (plain) landmark dataset carries.

    Landmarks are compared in the crop frame; NME is invariant to the crop's similarity
    transform, so the values equal the image-frame NME with each markup's normaliser
    (68: outer eye corners, 98: (60, 72), 29: (8, 9), 5: eye centres).

    Returns
    -------
    errors : `dict` markup -> ``(n,)`` ndarray
    """
    net = getattr(model, "module", model)
    was_training = net.training
    net.eval()
    errors = {m: [] for m in net.config.markups}
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    with torch.no_grad():
        for batch in loader:
            x = _model_input(net, batch["image"].to(device))
            out = net(x, all_stages=False)[-1]
            for m, (coords, _) in out.items():
                if f"has_{m}" not in batch:
                    continue
                has = batch[f"has_{m}"].numpy() > 0
                pred = coords.float().cpu().numpy()
                gt = batch[f"lm_{m}"].numpy()
                mk = get_markup(m)
                for b in np.flatnonzero(has):
                    d = mk.normalising_distance(gt[b])
                    errors[m].append(
                        float(np.linalg.norm(pred[b] - gt[b], axis=1).mean() / d)
                    )
    if was_training:
        net.train()
    return {m: np.asarray(v) for m, v in errors.items() if v}


def make_val_fn(val_sets):
    """``val_fn(model, device)`` -> ``{"nme_<set>_<markup>": mean NME}``."""

    def val_fn(model, device):
        logs = {}
        for name, ds in val_sets.items():
            for m, e in evaluate_nme(model, ds, device).items():
                logs[f"nme_{name}_{m}"] = float(e.mean())
        return logs

    return val_fn


def train_from_recipe(recipe, fitter_dir, args=None):
    """Train the DeCaFA model of ``recipe`` and save it into ``fitter_dir``.

    Parameters
    ----------
    recipe : `dict`
        From :func:`menpo_densereg.fitting.recipes.load_recipe`.
    fitter_dir : `Path`
        Where ``weights.safetensors`` and ``training_log.json`` are written.
    args : `argparse.Namespace`, optional
        ``steps`` (override), ``device``, ``resume``; also honoured: ``progress``,
        ``out_dir`` (checkpoint folder), ``save`` (False: do not write weights).

    Returns
    -------
    summary : `dict` (history, validation NMEs, timings, sizes)
    """
    fitter_dir = Path(fitter_dir)
    config = model_config_from_recipe(recipe)
    # checkpoints: the given out_dir, else the run's own folder (fitter folder +
    # recipe hash); the run key makes a checkpoint of another run refused, not resumed
    tconf = recipe_train_config(
        recipe,
        fitter_dir,
        args,
        root=_REPO / "runs",
        out_dir=getattr(args, "out_dir", None),
    )
    if getattr(args, "progress", None) is not None:
        tconf.progress = args.progress
    net = _init_weights(recipe, fitter_dir, config) or build_decafa(config)
    net.train()
    dataset, turns = build_sources(recipe, config, seed=tconf.seed)
    data = recipe.get("data", {})
    sampler = None
    if data.get("alternate", True) and len(dataset.source_sizes) > 1:
        sampler = AlternatingSourceSampler(
            dataset.source_sizes, tconf.batch_size, seed=tconf.seed, turns=turns
        )
    val_sets = build_validation(recipe, config)
    val_fn = make_val_fn(val_sets) if val_sets else None
    schedule = recipe.get("loss", {}).get("schedule", "increasing")
    print(f"[decafa] {net}")
    print(f"[decafa] {dataset}")
    print(f"[decafa] {tconf}")
    t0 = time.perf_counter()
    history = train_loop(
        net, dataset, make_loss_fn(schedule), tconf, val_fn=val_fn, sampler=sampler
    )
    net = net.cpu().eval()
    summary = {
        "recipe": recipe.get("_path"),
        "steps": history["steps"],
        "seconds": round(time.perf_counter() - t0, 1),
        "device": history["device"],
        "batch_size": tconf.batch_size,
        "sources": {
            getattr(s, "name", str(k)): len(getattr(s, "records", s))
            for k, s in enumerate(dataset.sources)
        },
        "validation_sets": {k: len(v) for k, v in val_sets.items()},
        "final_val": history["val"][-1] if history["val"] else {},
        "final_train": history["train"][-1] if history["train"] else {},
        "schedule": schedule,
        "parameters": int(sum(p.numel() for p in net.parameters())),
    }
    if args is None or getattr(args, "save", True):
        save_decafa(
            fitter_dir / "weights.safetensors", net, extra={"training": summary}
        )
        atomic_write_text(
            fitter_dir / "training_log.json",
            json.dumps({**summary, "history": history}, indent=1, default=float),
        )
    summary["history"] = history
    return summary
