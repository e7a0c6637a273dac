"""Box initialiser, patch AAM and MDM for 55-point ears (the refiners of DenseReg §4.7).

The face refiners of :mod:`menpo_densereg.aam` and :mod:`menpo_densereg.mdm_train` are
68-point specific in their data preparation and loss; this module builds their ear
versions from the same parts:

- ``box_ear`` (:func:`build_box_ear`): the classic box initialisation — the mean
  training ear (each shape centred on its box and scaled by the box's average edge)
  aligned to the box with menpofit's ``align_shape_with_bounding_box``
  (:class:`menpo_densereg.composition.BoxInitialiser` with ``markup="ear55"``);
- ``aam_ear`` (:func:`build_ear_aam`, :class:`EarAAMFitter`): a menpofit
  ``PatchAAM`` trained on ears, saved and loaded with :func:`menpo_densereg.aam.save_aam`
  / :func:`~menpo_densereg.aam.load_aam`, fitted with the Lucas–Kanade
  :class:`~menpo_densereg.aam.AAMFitter` (markup ``ear55``);
- ``mdm_ear`` (:func:`train_ear_mdm`): :class:`menpo_densereg.mdm.MDMNet` with
  ``markup="ear55"``, trained with :class:`menpo_densereg.mdm_train.MDMTrainingSet` on
  box starts, perturbed ground truths and (optionally) an initialiser's outputs, with
  a loss normalised by the GT box's average edge (the ear protocol). At run time it is an
  ordinary :class:`~menpo_densereg.mdm.MDMFitter` (``menpo_densereg.mdm.from_fitter_dir``).

All three read the fixed split of :func:`menpo_densereg.ear_densereg.recipe_split`
(``[data] folder`` / ``held_out``) and train on the training ears only.
"""

import time
from pathlib import Path

import numpy as np
from menpo.shape import PointCloud

from .aam import AAMFitter, load_aam, save_aam
from .composition import BoxInitialiser
from .fitting import box_from_shape
from .markups import check_shape, get_markup
from .weights import WeightsError, load_weights, save_weights

__all__ = [
    "mean_ear_in_box",
    "build_box_ear",
    "build_ear_aam",
    "EarAAMFitter",
    "ear_mdm_loss",
    "train_ear_mdm",
    "from_fitter_dir",
    "train_from_recipe",
]

BOX_KIND = "box_ear"

EAR_AAM_DEFAULTS = {
    "features": "orient_hist",
    "patch_normalisation": "no_op",
    "diagonal": 100,
    "scales": [0.5, 1.0],
    "patch_shape": [[15, 15], [15, 15]],
    "max_shape_components": 10,
    "max_appearance_components": 50,
    "grey": True,
}


def _pts(shape):
    return np.asarray(getattr(shape, "points", shape), dtype=float)


def mean_ear_in_box(shapes):
    """Mean of shapes each centred on its box and divided by the box's average edge.

    Returns ``(55, 2)`` (y, x) scaled so the mean's box average edge is 100.
    """
    out = []
    for k, s in enumerate(shapes):
        p = check_shape(_pts(s), "ear55", f"shapes[{k}]").astype(float)
        lo, hi = p.min(0), p.max(0)
        out.append((p - (lo + hi) / 2) / (hi - lo).mean())
    if not out:
        raise ValueError("mean_ear_in_box: no shapes")
    m = np.mean(out, 0)
    return m * 100.0 / (m.max(0) - m.min(0)).mean()


def build_box_ear(shapes, name="box-ear"):
    """A :class:`BoxInitialiser` with the mean training ear (:func:`mean_ear_in_box`)."""
    return BoxInitialiser(PointCloud(mean_ear_in_box(shapes)), markup="ear55", name=name)


# --------------------------------------------------------------------------- AAM
def build_ear_aam(images, group="ear55", verbose=False, **options):
    """Train a menpofit ``PatchAAM`` on 55-point ears (options as ``EAR_AAM_DEFAULTS``).

    :func:`menpo_densereg.aam.build_patch_aam` with ``markup="ear55"`` and the ear
    defaults; saved and loaded with :func:`menpo_densereg.aam.save_aam` / ``load_aam``.
    """
    from .aam import build_patch_aam

    return build_patch_aam(
        images, group=group, verbose=verbose,
        **{**EAR_AAM_DEFAULTS, **options, "markup": "ear55"}
    )


class EarAAMFitter(AAMFitter):
    """:class:`menpo_densereg.aam.AAMFitter` for 55-point ears."""

    markup = get_markup("ear55")

    def __init__(self, aam, name="patch-aam-ear", **kwargs):
        n_scales = len(aam.scales)
        n_shape = [sm.model.n_active_components for sm in aam.shape_models]
        n_app = [am.n_active_components for am in aam.appearance_models]
        kwargs.setdefault("n_shape", [min(4, n_shape[0])] * (n_scales - 1) + [n_shape[-1]])
        kwargs.setdefault("n_appearance", n_app)
        super().__init__(aam, name=name, **kwargs)


# --------------------------------------------------------------------------- MDM
def ear_mdm_loss(model, batch, device):
    """Sum over steps of the mean point error / GT box average edge (ear protocol)."""
    shapes = model(batch["image"], batch["start"])
    gt = batch["gt"]
    norm = (gt.amax(1) - gt.amin(1)).mean(-1).clamp_min(1.0)
    losses = [((s - gt).norm(dim=-1).mean(dim=1) / norm).mean() for s in shapes]
    with __import__("torch").no_grad():
        start = ((batch["start"] - gt).norm(dim=-1).mean(dim=1) / norm).mean()
    return sum(losses), {"nme_start": float(start), "nme_final": float(losses[-1].detach())}


def train_ear_mdm(images, mean_shape, model_config=None, train_config=None, augment=None,
                  initialiser=None, group="ear55"):
    """Train an ear :class:`~menpo_densereg.mdm.MDMNet`; returns ``(net, history)``."""
    from .mdm import MDMNet
    from .mdm_train import MDMTrainingSet, faces_from_images
    from .training import TrainConfig, train_loop

    net = MDMNet(**{**(model_config or {}), "markup": "ear55"})
    cfg = train_config or TrainConfig(steps=50, batch_size=8, progress=False)
    faces = faces_from_images(images, initialiser=initialiser, group=group)
    aug = dict(augment or {})
    if initialiser is None:
        aug["p_init"] = 0.0
    data = MDMTrainingSet(
        faces, mean_shape, net.config["crop_size"], net.config["margin"], aug,
        length=max(1000, cfg.steps * cfg.batch_size), seed=cfg.seed,
    )
    history = train_loop(net, data, ear_mdm_loss, cfg)
    net.eval()
    return net, history


# --------------------------------------------------------------------------- recipes
def _name(recipe, path):
    return recipe.get("fitter", {}).get("name", Path(path).name)


def from_fitter_dir(path):
    """``box_ear`` -> :class:`BoxInitialiser`; ``aam_ear`` -> :class:`EarAAMFitter`."""
    from .training import load_recipe

    path = Path(path)
    recipe = load_recipe(path)
    kind = recipe["fitter"]["kind"]
    if kind == BOX_KIND:
        f = path / recipe.get("box", {}).get("weights", "mean_ear.safetensors")
        if not f.is_file():
            raise WeightsError(f"{f}: not found (build it: `menpo-densereg train {path}`)")
        tensors, _ = load_weights(f, kind=BOX_KIND, as_torch=False)
        if "mean_shape" not in tensors:
            raise WeightsError(f"{f}: no mean_shape tensor")
        return BoxInitialiser(PointCloud(tensors["mean_shape"].astype(float)),
                              markup="ear55", name=_name(recipe, path))
    if kind == "aam_ear":
        f = path / recipe.get("aam", {}).get("weights", "aam.safetensors")
        if not f.is_file():
            raise WeightsError(f"{f}: not found (build it: `menpo-densereg train {path}`)")
        return EarAAMFitter(load_aam(f), name=_name(recipe, path), **recipe.get("fit", {}))
    if kind == "mdm_ear":
        from .mdm import from_fitter_dir as mdm_from_dir

        return mdm_from_dir(path)
    raise ValueError(f"{path}/recipe.toml: kind {kind!r} is not an ear refiner kind")


def train_from_recipe(recipe, fitter_dir, args=None):
    """Build / train ``box_ear``, ``aam_ear`` or ``mdm_ear`` from a recipe.

    Tables: ``[data] folder, held_out`` (the split); ``box_ear``: ``[box] weights``;
    ``aam_ear``: ``[aam]`` (``weights`` + ``EAR_AAM_DEFAULTS`` keys), ``[fit]``;
    ``mdm_ear``: ``[mdm]`` (``weights`` + MDM options), ``[data] initialiser``
    (a fitter whose outputs become training starts), ``[data] box`` (the box fitter
    whose mean shape MDM's ``fit_from_bb`` uses), ``[augment]``, ``[train]``.
    """
    from .ear_densereg import _stem, recipe_split

    fitter_dir = Path(fitter_dir)
    kind = recipe["fitter"]["kind"]
    train, test = recipe_split(recipe, fitter_dir)
    shapes = [_pts(im.landmarks["ear55"]) for im in train]
    split = {"train": sorted(_stem(i) for i in train),
             "held_out": sorted(_stem(i) for i in test)}
    t0 = time.time()
    if kind == BOX_KIND:
        f = fitter_dir / recipe.get("box", {}).get("weights", "mean_ear.safetensors")
        save_weights(f, {"mean_shape": mean_ear_in_box(shapes)}, BOX_KIND,
                     config={"markup": "ear55"}, extra=split)
        print(f"saved {f} (mean of {len(shapes)} training ears)")
        return {"weights": str(f)}
    if kind == "aam_ear":
        opts = dict(recipe.get("aam", {}))
        f = fitter_dir / opts.pop("weights", "aam.safetensors")
        aam = build_ear_aam(train, **opts)
        save_aam(aam, f, extra={**split, "build_seconds": round(time.time() - t0, 1)})
        print(f"saved {f} ({len(train)} training ears, {time.time() - t0:.1f} s)")
        return {"weights": str(f)}
    if kind == "mdm_ear":
        from .composition import _load_named
        from .mdm import save_mdm
        from .registry import cache_dir
        from .training import TrainConfig

        mcfg = dict(recipe.get("mdm", {}))
        f = fitter_dir / mcfg.pop("weights", "mdm.safetensors")
        data = recipe.get("data", {})
        initialiser = None
        if data.get("initialiser"):
            initialiser = _load_named(data["initialiser"], fitter_dir)
        mean = mean_ear_in_box(shapes)
        tt = dict(recipe.get("train", {}))
        tt.setdefault("out_dir", str(cache_dir() / "train" / _name(recipe, fitter_dir)))
        over = {}
        if args is not None:
            over = {"steps": getattr(args, "steps", None),
                    "device": getattr(args, "device", None)}
            if getattr(args, "resume", None) is not None:
                over["resume"] = bool(args.resume)
        tc = TrainConfig.from_dict(tt, **over)
        net, history = train_ear_mdm(train, mean, mcfg, tc, recipe.get("augment"),
                                     initialiser=initialiser)
        last = history["train"][-1] if history["train"] else {}
        save_mdm(net, mean, f, extra={
            **split, "initialiser": data.get("initialiser"), "steps": history["steps"],
            "seconds": round(time.time() - t0, 1), "device": history["device"],
            "final_train_logs": {k: float(v) for k, v in last.items()},
        })
        print(f"saved {f}: {history['steps']} steps in {time.time() - t0:.1f} s; "
              f"last logs {last}")
        return {"weights": str(f), "history": history}
    raise ValueError(f"recipe kind {kind!r} is not an ear refiner kind")
