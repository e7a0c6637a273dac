"""Find and load fitters by name: shipped ones, peers, or a path.

A fitter spec is one of

- a fitter name: a folder ``<name>/`` with ``recipe.toml`` in one of the search folders
  (:func:`fitters_roots`, in order):

  1. the folders listed in ``$MENPO_DENSEREG_FITTERS`` (separated by ``os.pathsep``,
     ``:`` on Linux/macOS): your own fitters, or ones that override shipped names;
  2. the repository's top-level ``fitters/`` when running from a checkout (the source
     of truth; an editable install uses it);
  3. ``menpo_densereg/fitters/`` inside the installed package (the wheel and sdist
     carry a copy of ``fitters/``);

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
    "fitters_roots",
    "ENV_VAR",
    "list_fitters",
    "fitter_dir",
    "load_fitter",
]

KINDS = {
    "densereg": "menpo_densereg.densereg.initialiser",
    "decafa": "menpo_densereg.decafa.initialiser",
    "mdm": "menpo_densereg.mdm.fitter",
    "chain": "menpo_densereg.fitting.composition",
    "average": "menpo_densereg.fitting.ensemble",
    "aam": "menpo_densereg.aam.fitter",
    "dlib": "menpo_densereg.evaluation.peers",
    "densereg_ear": "menpo_densereg.densereg.ear",
}

TRAINERS = {
    "densereg": "menpo_densereg.densereg.train",
    "decafa": "menpo_densereg.decafa.train",
    "mdm": "menpo_densereg.mdm.train",
    "aam": "menpo_densereg.aam.train",
    "densereg_ear": "menpo_densereg.densereg.ear",
}


#: environment variable with extra fitter search folders (``os.pathsep``-separated)
ENV_VAR = "MENPO_DENSEREG_FITTERS"

_PACKAGE = Path(__file__).resolve().parents[1]


def _checkout_fitters():
    """The repository's ``fitters/`` when the package runs from a source checkout."""
    root = _PACKAGE.parent
    if (root / "setup.cfg").is_file() and (root / "fitters").is_dir():
        return root / "fitters"
    return None


def fitters_roots():
    """The folders searched for fitters by name, in order (see the module docstring).

    Returns
    -------
    roots : `list` of `Path`
        ``$MENPO_DENSEREG_FITTERS`` entries (whether or not they exist, so that a
        mistyped folder shows in error messages), then the checkout's ``fitters/`` and
        the installed package's ``fitters/`` where they exist.
    """
    roots = [Path(p) for p in os.environ.get(ENV_VAR, "").split(os.pathsep) if p]
    for p in (_checkout_fitters(), _PACKAGE / "fitters"):
        if p is not None and p.is_dir() and p not in roots:
            roots.append(p)
    return roots


def fitters_root():
    """The first fitter search folder (see :func:`fitters_roots`), or the package's
    ``fitters/`` when none exists."""
    roots = [r for r in fitters_roots() if r.is_dir()]
    return roots[0] if roots else _PACKAGE / "fitters"


def list_fitters(private=False):
    """Names of the fitters found in the search folders (folders with a recipe).

    Parameters
    ----------
    private : `bool`, optional
        Also list folders whose name starts with ``_``: private fitters, e.g. candidates
        under evaluation beside the shipped ones (git ignores them). They load by name
        or path either way; they are only left out of listings, so that benchmarks and
        tests that walk every fitter see the shipped set.

    Returns
    -------
    names : `list` of `str`, sorted
    """
    names = set()
    for root in fitters_roots():
        if root.is_dir():
            names.update(p.parent.name for p in root.glob("*/recipe.toml"))
    return sorted(n for n in names if private or not n.startswith("_"))


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
    for root in fitters_roots():
        q = root / str(spec)
        if (q / "recipe.toml").is_file():
            return q
    raise FileNotFoundError(
        f"fitter {spec!r} not found: not a folder with recipe.toml, and not one of the "
        f"shipped fitters {list_fitters()} in {[str(r) for r in fitters_roots()]} "
        f"(add folders with ${ENV_VAR})"
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
        from menpo_densereg.aam.build import cached_patch_aam
        from menpo_densereg.aam.fitter import AAMFitter
        from menpo_densereg.cache import cache_dir

        folder = Path(key[4:])
        model_file = cache_dir() / f"aam_{folder.resolve().name}.safetensors"
        aam = cached_patch_aam(folder, model_file)
        fitter = AAMFitter(aam, name=f"aam[{folder.name}]")
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
