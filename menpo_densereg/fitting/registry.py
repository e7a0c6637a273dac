"""Find and load fitters by name: shipped ones in ``fitters/``, peers, or a path.

A fitter spec is one of

- a shipped fitter name (a folder ``fitters/<name>/`` with ``recipe.toml``),
- a path to such a folder,
- ``"dlib"``: the dlib ERT peer (needs the ``peers`` extra),
- ``"aam:FOLDER"``: a menpofit patch AAM trained on the annotated images of FOLDER
  (cached to disk in a safe format).

The recipe's ``[fitter] kind`` selects the module that builds it (:data:`KINDS`); the
module's ``from_fitter_dir(path)`` returns the fitter.
"""

import importlib
import os
from pathlib import Path

from menpo_densereg.fitting.recipes import load_recipe

__all__ = [
    "KINDS",
    "TRAINERS",
    "fitters_root",
    "cache_dir",
    "list_fitters",
    "fitter_dir",
    "load_fitter",
]

KINDS = {
    "densereg": "menpo_densereg.densereg.initialiser",
    "decafa": "menpo_densereg.decafa.initialiser",
    "mdm": "menpo_densereg.mdm.fitter",
    "chain": "menpo_densereg.fitting.composition",
    "aam": "menpo_densereg.aam.fitter",
    "dlib": "menpo_densereg.evaluation.peers",
    "densereg_ear": "menpo_densereg.densereg.ear",
}

TRAINERS = {
    "densereg": "menpo_densereg.densereg.train",
    "decafa": "menpo_densereg.decafa.train",
    "mdm": "menpo_densereg.mdm.train",
    "aam": "menpo_densereg.aam.fitter",
    "densereg_ear": "menpo_densereg.densereg.ear",
}


def fitters_root():
    """Folder of shipped fitters (``$MENPO_DENSEREG_FITTERS`` or the repo's ``fitters/``)."""
    env = os.environ.get("MENPO_DENSEREG_FITTERS")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "fitters"


def list_fitters():
    """Names of the shipped fitters (folders with a recipe)."""
    root = fitters_root()
    if not root.is_dir():
        return []
    return sorted(p.parent.name for p in root.glob("*/recipe.toml"))


def fitter_dir(spec):
    """The folder of a fitter given by name or path.

    Raises
    ------
    FileNotFoundError
        Unknown name (the message lists the shipped fitters).
    """
    p = Path(spec)
    if (p / "recipe.toml").is_file():
        return p
    q = fitters_root() / str(spec)
    if (q / "recipe.toml").is_file():
        return q
    raise FileNotFoundError(
        f"fitter {spec!r} not found: not a folder with recipe.toml, and not one of the "
        f"shipped fitters {list_fitters()} in {fitters_root()}"
    )


_CACHE = {}


def load_fitter(spec, cache=True):
    """Load a fitter from a spec (see the module docstring).

    Returns
    -------
    fitter : object with ``name``, ``markup``, ``fit_from_bb``, ``fit_from_shape``
    """
    key = str(spec)
    if cache and key in _CACHE:
        return _CACHE[key]
    if key == "dlib":
        from menpo_densereg.evaluation.peers import DlibPeer

        fitter = DlibPeer()
    elif key.startswith("aam:"):
        from menpo_densereg.aam.fitter import AAMFitter, cached_patch_aam

        folder = Path(key[4:])
        cache = cache_dir() / f"aam_{folder.resolve().name}.safetensors"
        fitter = AAMFitter(cached_patch_aam(folder, cache), name=f"aam[{folder.name}]")
    else:
        d = fitter_dir(spec)
        recipe = load_recipe(d)
        kind = recipe["fitter"]["kind"]
        if kind not in KINDS:
            raise ValueError(
                f"{d}/recipe.toml: unknown fitter kind {kind!r}; known: {sorted(KINDS)}"
            )
        module = importlib.import_module(KINDS[kind])
        fitter = module.from_fitter_dir(d)
    if cache:
        _CACHE[key] = fitter
    return fitter
