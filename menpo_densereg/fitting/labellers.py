"""Labellers of the consensus pseudo-labels, by name, with their versions.

:func:`menpo_densereg.data.pseudolabels.consensus_pseudo_labels` takes fitters and version
strings (the data layer loads no models); this module resolves names: ``"dlib*"`` → dlib's
ERT peer (handed dlib's raw detector boxes), any other name → a shipped fitter
(:func:`menpo_densereg.fitting.registry.load_fitter`). A version is the package version
plus a digest of the model files (a chain's recipe and every part's weights), so labels
made by other weights are never mixed up with these.
"""

from pathlib import Path

__all__ = [
    "DEFAULT_LABELLERS",
    "cached_consensus_versions",
    "consensus_labellers",
    "pool_images",
    "version_matches",
    "labeller_version",
    "load_labeller",
]

#: Default labellers: dlib's ERT (the label) and our DenseReg + AAM chain (the check).
DEFAULT_LABELLERS = ("dlib-ert", "densereg-aam-face")


def _file_digest(paths):
    import hashlib

    h = hashlib.sha1()
    for p in sorted(paths):
        h.update(Path(p).name.encode())
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:12]


def labeller_version(name):
    """A version string of a labeller: package versions + a digest of its model files.

    ``"dlib-ert"`` (or any ``dlib*`` name) → dlib's version and its model file;
    a shipped fitter name → the digest of its folder's ``recipe.toml`` and weights and
    of every shipped fitter its recipe names (the chain's parts).
    """
    import menpo_densereg

    if name.startswith("dlib"):
        import dlib

        from menpo_densereg.evaluation.peers import dlib_model_path

        return f"dlib {dlib.__version__}, {_file_digest([dlib_model_path()])}"
    from menpo_densereg.fitting.recipes import load_recipe
    from menpo_densereg.fitting.registry import fitter_dir, list_fitters

    known, files, todo, seen = set(list_fitters()), [], [name], set()
    while todo:
        n = todo.pop()
        if n in seen:
            continue
        seen.add(n)
        d = Path(fitter_dir(n))
        files += [d / "recipe.toml"] + sorted(d.glob("*.safetensors"))
        recipe = load_recipe(d)
        for table in recipe.values():
            for v in table.values() if isinstance(table, dict) else []:
                if isinstance(v, str) and v in known and v != n:
                    todo.append(v)
    return f"menpo-densereg {menpo_densereg.__version__}, {_file_digest(files)}"


def load_labeller(name):
    """The fitter of a labeller name (``dlib*``: the ERT peer taking raw HOG boxes)."""
    if name.startswith("dlib"):
        from menpo_densereg.evaluation.peers import DlibPeer

        # label_with_consensus hands dlib its own detector's raw box
        return DlibPeer(name=name, box_convention="dlib")
    from menpo_densereg.fitting.registry import load_fitter

    return load_fitter(name)


def consensus_labellers(names=DEFAULT_LABELLERS):
    """``(labellers, versions)`` for :func:`~menpo_densereg.data.pseudolabels.
    consensus_pseudo_labels`: lazy factories (models load only if something is
    labelled) and version strings, keyed by name, in order."""
    names = tuple(names)
    labellers = {n: (lambda n=n: load_labeller(n)) for n in names}
    return labellers, {n: labeller_version(n) for n in names}


def cached_consensus_versions(
    folder, names=DEFAULT_LABELLERS, cache_dir=None, pins=None
):
    """The labeller versions of the largest consensus-label cache of ``folder``.

    Consensus labels are keyed by the exact versions of their labellers, so retraining a
    labeller (a new weights digest) starts a new, empty cache. A training recipe with
    ``[data] consensus_labels = "cached"`` reuses the labels already made by earlier
    versions of the same labellers (a self-training round: label → retrain → relabel
    when asked) instead of relabelling thousands of faces; the versions returned here
    are written to the run's log as the labels' provenance.

    Parameters
    ----------
    folder : `str` or `Path`
        The unlabelled pool.
    names : `tuple` of `str`
        Labeller names, in order (the first one's shape is the label).
    cache_dir : `Path`, optional
        Default :func:`menpo_densereg.cache.cache_dir`.
    pins : `dict` ``{name: version}``, optional
        Only caches whose labellers have these versions count (:func:`version_matches`:
        the whole version string or its digest, e.g. ``"a3e2bcbe7baf"``): a recipe's
        ``[data] consensus_versions`` pins the round its model was trained on.

    Returns
    -------
    versions : `dict` ``{name: version}`` or `None` when no cache of these labellers
        (with the pinned versions) holds a record for this pool.
    """
    import json

    from menpo_densereg.cache import cache_dir as default_cache

    root = (Path(cache_dir) if cache_dir else default_cache()) / "consensus68"
    best, best_n = None, 0
    for prov in sorted(root.glob(f"{Path(folder).name}-*/provenance.json")):
        try:
            info = json.loads(prov.read_text())
        except (OSError, ValueError):
            continue
        if list(info.get("labellers", [])) != list(names):
            continue
        if pins and not all(
            version_matches(info.get("versions", {}).get(k), v) for k, v in pins.items()
        ):
            continue
        n = sum(1 for _ in prov.parent.glob("*.json")) - 1
        if n > best_n:
            best, best_n = dict(info["versions"]), n
    return best


def version_matches(version, pin):
    """Whether a labeller ``version`` string (``"menpo-densereg 0.1.0, a3e2bcbe7baf"``)
    is the pinned one: equal to ``pin`` or ending in it (its weights digest)."""
    if not isinstance(version, str) or not isinstance(pin, str) or not pin.strip():
        return False
    pin = pin.strip()
    return version == pin or version.endswith(", " + pin)


def _check_pins(pins, names):
    if pins is None:
        return None
    if not isinstance(pins, dict) or not pins:
        raise ValueError(
            f"[data] consensus_versions = {pins!r}: expected a table "
            '{ labeller = "version or weights digest" }'
        )
    unknown = sorted(set(pins) - set(names))
    if unknown:
        raise ValueError(
            f"[data] consensus_versions names {unknown}, which are not among "
            f"consensus_labellers {list(names)}"
        )
    bad = sorted(k for k, v in pins.items() if not isinstance(v, str) or not v.strip())
    if bad:
        raise ValueError(
            f"[data] consensus_versions: {bad}: expected a version string or digest"
        )
    return dict(pins)


def consensus_sources(folder, names=DEFAULT_LABELLERS, which="current", pins=None):
    """``(labellers, versions, label_missing)`` for a training recipe's pool.

    ``which = "current"``: the shipped labellers as they are now (missing labels are
    made); ``"cached"``: the versions of the largest existing cache
    (:func:`cached_consensus_versions`), nothing is labelled (the current labellers are
    used when no cache exists).

    ``pins`` (a recipe's ``[data] consensus_versions``, ``{name: version or digest}``)
    makes the choice exact: ``"cached"`` takes the largest cache *with those versions*,
    ``"current"`` requires the current labellers to have them; otherwise a
    `ValueError` names the versions found, rather than training on another round's
    labels without a word.
    """
    if which not in ("current", "cached"):
        raise ValueError(
            f"[data] consensus_labels = {which!r}: expected 'current' or 'cached'"
        )
    pins = _check_pins(pins, names)
    labellers, versions = consensus_labellers(names)
    if which == "cached":
        cached = cached_consensus_versions(folder, names, pins=pins)
        if cached is not None:
            return labellers, cached, False
    if pins and not all(version_matches(versions.get(k), v) for k, v in pins.items()):
        raise ValueError(
            f"[data] consensus_versions = {pins}: no consensus-label cache of "
            f"{Path(folder).name} has these labeller versions"
            + (" (consensus_labels = 'cached')" if which == "cached" else "")
            + f", and the current labellers are {versions}; relabel the pool with "
            "those weights (benchmarks/consensus_pools.py) or change the pin"
        )
    return labellers, versions, True


def pool_images(kind, folder, options=None):
    """The 68-point images of one large training pool, as every recipe reads them.

    Parameters
    ----------
    kind : ``"offset68"`` or ``"consensus68"``
        ``"offset68"``: a folder in a variant of the 300-W convention (``ytf68``),
        training side of the person split, every ``offset68_every``-th frame, labels moved
        to 300-W's (:func:`menpo_densereg.data.pseudolabels.offset_convention_images`,
        offset measured on ``offset68_samples`` frames). ``"consensus68"``: an unlabelled
        pool's consensus pseudo-labels, training side of the split, kept within
        ``consensus_max_nme``, at most ``consensus_max_faces``, labels of
        ``consensus_labels = "current" | "cached"`` labellers
        (:func:`consensus_sources`; ``consensus_label_missing = false`` labels nothing),
        named by ``consensus_labellers`` (default :data:`DEFAULT_LABELLERS`; the first
        one's shape is the label, or with ``consensus_label = "mean"`` the mean of
        their shapes), optionally pinned to versions by ``consensus_versions``
        (``{name = "version or weights digest"}``; :func:`consensus_sources`).
    folder : `Path`
    options : `dict`, optional
        A recipe table holding the keys above.

    Returns
    -------
    images : `list` of menpo images (labels in group ``"PTS"``, grey ones made RGB)
    summary : `dict` (``consensus68``: :func:`~menpo_densereg.data.pseudolabels.
        consensus_images`' summary; ``offset68``: ``offset``)
    """
    import numpy as np
    from menpo.image import Image

    from menpo_densereg.data.pseudolabels import (
        consensus_images,
        offset_convention_images,
    )
    from menpo_densereg.data.splits import split_files

    options = dict(options or {})
    folder = Path(folder)
    if kind == "offset68":
        images, offset = offset_convention_images(
            folder,
            every=options.get("offset68_every", 1),
            n_samples=options.get("offset68_samples", 300),
        )
        summary = {"offset": offset}
        print(
            f"{folder.name}: {len(images)} training frames moved to the 300-W "
            f"convention (mean |offset| "
            f"{100 * np.linalg.norm(offset, axis=1).mean():.1f} % IOD)"
        )
    elif kind == "consensus68":
        names = options.get("consensus_labellers", DEFAULT_LABELLERS)
        if isinstance(names, str) or len(names) < 2:
            raise ValueError(
                f"[data] consensus_labellers = {names!r}: expected a list of two or "
                "more labeller names (the first one's shape is the label)"
            )
        labellers, versions, can_label = consensus_sources(
            folder,
            tuple(names),
            which=options.get("consensus_labels", "current"),
            pins=options.get("consensus_versions"),
        )
        images, summary = consensus_images(
            folder,
            labellers,
            versions,
            max_nme=float(options.get("consensus_max_nme", 0.05)),
            files=split_files(folder)[0],
            label_missing=can_label
            and bool(options.get("consensus_label_missing", True)),
            max_faces=options.get("consensus_max_faces"),
            label=options.get("consensus_label", "first"),
            progress=False,
        )
        print(
            f"{folder.name}: {summary['n_returned']} of {summary['n_kept']} kept faces "
            f"({summary['n_labelled']} labelled, agreeing within "
            f"{100 * summary['max_nme']:g} % NME; labels by {versions}, "
            f"label {summary['label']})"
        )
    else:
        raise ValueError(f"pool kind {kind!r}: expected 'offset68' or 'consensus68'")
    out = []
    for im in images:
        if im.n_channels == 1:
            rgb = Image(np.repeat(im.pixels, 3, axis=0), copy=False)
            rgb.landmarks["PTS"], rgb.path = im.landmarks["PTS"], im.path
            im = rgb
        out.append(im)
    return out, summary
