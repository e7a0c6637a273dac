"""Build menpofit patch AAMs from annotated images, store them safely, cache them.

:func:`build_patch_aam` trains a menpofit :class:`menpofit.aam.PatchAAM` from annotated
menpo images (defaults in :data:`AAM_DEFAULTS`). :func:`save_aam` / :func:`load_aam`
store it as plain arrays (shape and appearance PCA models per scale, the reference shape
and the configuration) in a safetensors file through :mod:`menpo_densereg.fitting.weights`
(no pickle) and rebuild the menpofit objects on load, so that a loaded model fits
exactly like the saved one. :func:`cached_patch_aam` builds once per training set and
configuration (:func:`training_hash`).
"""

import hashlib
import json
from pathlib import Path

import numpy as np
from menpo.image import Image
from menpo.shape import PointCloud

from menpo_densereg.data.markups import check_shape, get_markup
from menpo_densereg.fitting.weights import WeightsError, load_weights, save_weights
from menpo_densereg.aam.features import FEATURES, NORMALISATIONS, feature_functions
from menpo_densereg.data.annotated import load_folder, pick_group

__all__ = [
    "AAM_DEFAULTS",
    "KIND",
    "build_patch_aam",
    "cached_patch_aam",
    "load_aam",
    "lk_algorithms",
    "prepare_training_images",
    "reset_pdm",
    "save_aam",
    "training_hash",
]

KIND = "patch_aam"

#: Default configuration of :func:`build_patch_aam` and :class:`AAMFitter`.
AAM_DEFAULTS = {
    "features": "orient_hist",
    "patch_normalisation": "no_op",
    "diagonal": 110,
    "scales": [0.5, 1.0],
    "patch_shape": [[15, 15], [15, 15]],
    "max_shape_components": 15,
    "max_appearance_components": 100,
    "grey": True,
    "markup": "ibug68",
}


def lk_algorithms():
    from menpofit.aam.algorithm import lk

    return {
        name: getattr(lk, name)
        for name in dir(lk)
        if name.endswith("Compositional") and not name.startswith("_")
    }


def _config(**kwargs):
    cfg = dict(AAM_DEFAULTS)
    for k, v in kwargs.items():
        if k not in AAM_DEFAULTS:
            raise ValueError(f"unknown AAM option {k!r}; known: {sorted(AAM_DEFAULTS)}")
        if v is not None:
            cfg[k] = v
    if cfg["features"] not in FEATURES:
        raise ValueError(f"features: {cfg['features']!r} not one of {FEATURES}")
    if cfg["patch_normalisation"] not in NORMALISATIONS:
        raise ValueError(
            f"patch_normalisation: {cfg['patch_normalisation']!r} not one of "
            f"{NORMALISATIONS}"
        )
    scales = [float(s) for s in np.atleast_1d(cfg["scales"])]
    cfg["scales"] = scales
    ps = np.asarray(cfg["patch_shape"], dtype=int)
    if ps.ndim == 1:
        ps = np.tile(ps, (len(scales), 1))
    if ps.shape != (len(scales), 2):
        raise ValueError(
            f"patch_shape: expected one (h, w) per scale, got {ps.tolist()}"
        )
    cfg["patch_shape"] = ps.tolist()
    cfg["diagonal"] = None if cfg["diagonal"] is None else int(cfg["diagonal"])
    for k in ("max_shape_components", "max_appearance_components"):
        if cfg[k] is not None:
            cfg[k] = int(cfg[k])
    cfg["grey"] = bool(cfg["grey"])
    cfg["markup"] = get_markup(cfg["markup"]).name
    return cfg


def prepare_training_images(
    images, group=None, grey=True, diagonal=110, margin=0.5, markup="68"
):
    """Crop, (grey) and rescale annotated images for AAM training.

    Every image is cropped to its landmarks plus ``margin`` of their extent, converted to
    greyscale if asked, and rescaled so that the landmarks' diagonal is about
    ``1.5 * diagonal`` pixels (menpofit rescales again to the reference shape).
    The landmarks end up in the group ``"__aam_gt"``.
    """
    out = []
    for k, im in enumerate(images):
        g = pick_group(im, group, what=f"training image {k} ({_image_name(im)})")
        shape = PointCloud(np.asarray(im.landmarks[g].points, dtype=float))
        check_shape(shape, get_markup(markup), f"training image {k} landmarks")
        im = im.copy()
        im.landmarks["__aam_gt"] = shape
        im = im.crop_to_landmarks_proportion(margin, group="__aam_gt")
        if grey and im.n_channels == 3:
            im = im.as_greyscale()
        if diagonal:
            d = np.linalg.norm(im.landmarks["__aam_gt"].range())
            im = im.rescale(1.5 * diagonal / d)
        for name in list(im.landmarks.keys()):
            if name != "__aam_gt":
                del im.landmarks[name]
        out.append(im)
    return out


def _image_name(image):
    path = getattr(image, "path", None)
    return str(path) if path is not None else "in-memory image"


def build_patch_aam(images, group=None, verbose=False, **options):
    """Train a menpofit :class:`~menpofit.aam.PatchAAM` on annotated images.

    Parameters
    ----------
    images : `list` of `menpo.image.Image`
        Images with a 68-point landmark group.
    group : `str`, optional
        The landmark group (default: the only one, or ``"PTS"``).
    **options
        Any of :data:`AAM_DEFAULTS`: ``features`` (one of :data:`FEATURES`),
        ``patch_normalisation``, ``diagonal``, ``scales``, ``patch_shape``,
        ``max_shape_components``, ``max_appearance_components``, ``grey``,
        ``markup`` (default ``"ibug68"``; e.g. ``"ear55"`` for ears).

    Returns
    -------
    aam : `menpofit.aam.PatchAAM`
        With an extra attribute ``aam_config`` (the resolved options).
    """
    from menpofit.aam import PatchAAM

    images = list(images)
    if len(images) < 2:
        raise ValueError(f"images: need at least 2 annotated images, got {len(images)}")
    cfg = _config(**options)
    feats = feature_functions()
    train = prepare_training_images(
        images,
        group=group,
        grey=cfg["grey"],
        diagonal=cfg["diagonal"],
        markup=cfg["markup"],
    )
    aam = PatchAAM(
        train,
        group="__aam_gt",
        holistic_features=feats[cfg["features"]],
        diagonal=cfg["diagonal"],
        scales=tuple(cfg["scales"]),
        patch_shape=[tuple(p) for p in cfg["patch_shape"]],
        patch_normalisation=feats[cfg["patch_normalisation"]],
        max_shape_components=cfg["max_shape_components"],
        max_appearance_components=cfg["max_appearance_components"],
        verbose=verbose,
    )
    for am in aam.appearance_models:
        _quantise_appearance(am)
    aam.aam_config = cfg
    aam.n_training_images = len(images)
    return aam


# --------------------------------------------------------------------------- save/load


def _quantise_appearance(pca):
    """Round an appearance model's components and mean to float16 in place.

    The file stores them as float16 (half the size of float32, a third of the
    float64 size; appearance bases dominate the file); rounding the in-memory model at
    build time makes a loaded model bit-identical to the one that was saved.
    """
    pca._components = pca._components.astype(np.float16).astype(np.float64)
    pca._mean = pca._mean.astype(np.float16).astype(np.float64)


def _pca_arrays(prefix, pca, half=False):
    big = np.float16 if half else np.float64
    if half and not (
        np.array_equal(pca._components.astype(np.float16), pca._components)
        and np.array_equal(pca._mean.astype(np.float16), pca._mean)
    ):
        raise ValueError(f"{prefix}: appearance model is not float16-rounded")
    return {
        f"{prefix}.components": np.asarray(pca._components, dtype=big),
        f"{prefix}.eigenvalues": np.asarray(pca._eigenvalues, dtype=np.float64),
        f"{prefix}.trimmed_eigenvalues": np.asarray(
            pca._trimmed_eigenvalues, dtype=np.float64
        ),
        f"{prefix}.mean": np.asarray(pca._mean, dtype=big),
    }


def _pca_meta(pca):
    return {
        "n_samples": int(pca.n_samples),
        "centred": bool(pca.centred),
        "n_active_components": int(pca.n_active_components),
        "template_shape": (
            list(pca.template_instance.pixels.shape)
            if isinstance(pca.template_instance, Image)
            else list(pca.template_instance.points.shape)
        ),
        "template_kind": (
            "image" if isinstance(pca.template_instance, Image) else "points"
        ),
    }


def _rebuild_pca(arrays, prefix, meta):
    from menpo.model import PCAModel

    if meta["template_kind"] == "image":
        template = Image(np.zeros(meta["template_shape"]), copy=False)
    else:
        template = PointCloud(np.zeros(meta["template_shape"]), copy=False)
    mean = template.from_vector(arrays[f"{prefix}.mean"].astype(np.float64))
    pca = PCAModel.init_from_components(
        arrays[f"{prefix}.components"].astype(np.float64),
        arrays[f"{prefix}.eigenvalues"],
        mean,
        meta["n_samples"],
        meta["centred"],
    )
    pca._trimmed_eigenvalues = arrays[f"{prefix}.trimmed_eigenvalues"]
    pca._n_active_components = int(meta["n_active_components"])
    return pca


def _rebuild_ortho_pdm(pca, similarity_components):
    """An :class:`~menpofit.modelinstance.OrthoPDM` from its orthonormalised bases."""
    from menpofit.modelinstance import OrthoPDM, _SimilarityModel

    pdm = OrthoPDM.__new__(OrthoPDM)
    pdm.model = pca
    mean = pca.mean()
    pdm.similarity_model = _SimilarityModel(np.array(similarity_components), mean)
    reset_pdm(pdm)
    return pdm


def reset_pdm(pdm):
    """Put an OrthoPDM back in the state it has right after training.

    menpofit's LK fitters precompute from the shape model's *current* state, and every
    fit leaves the model at its last result; resetting before building a fitter makes
    fits independent of what was fitted before (and equal for saved and loaded models).
    """
    from menpofit.transform import DifferentiableAlignmentSimilarity

    mean = pdm.model.mean()
    pdm._target = mean
    pdm.global_transform = DifferentiableAlignmentSimilarity(mean, mean)
    pdm._weights = np.zeros(pdm.model.n_active_components)
    pdm.similarity_weights = pdm.similarity_model.project(mean)
    pdm._sync_target_from_state()


def save_aam(aam, path, extra=None):
    """Save a :func:`build_patch_aam` model as arrays (no pickle), atomically."""
    from menpofit.modelinstance import OrthoPDM

    cfg = getattr(aam, "aam_config", None)
    if cfg is None:
        raise ValueError("aam: not built by build_patch_aam (no aam_config)")
    tensors = {
        "reference_shape": np.asarray(aam.reference_shape.points, dtype=np.float64)
    }
    shape_meta, app_meta = [], []
    for j, (sm, am) in enumerate(zip(aam.shape_models, aam.appearance_models)):
        if not isinstance(sm, OrthoPDM):
            raise ValueError(
                f"aam: shape model {j} is {type(sm).__name__}, not OrthoPDM"
            )
        tensors.update(_pca_arrays(f"shape{j}", sm.model))
        tensors[f"similarity{j}.components"] = np.asarray(
            sm.similarity_model._components, dtype=np.float64
        )
        tensors.update(_pca_arrays(f"appearance{j}", am, half=True))
        shape_meta.append(_pca_meta(sm.model))
        app_meta.append(_pca_meta(am))
    config = dict(cfg, shape_models=shape_meta, appearance_models=app_meta)
    info = {"n_training_images": int(getattr(aam, "n_training_images", 0))}
    info.update(extra or {})
    save_weights(path, tensors, kind=KIND, config=config, extra=info)


def load_aam(path):
    """Rebuild the menpofit :class:`~menpofit.aam.PatchAAM` saved by :func:`save_aam`.

    Raises
    ------
    WeightsError
        Missing, corrupt or foreign file (names it).
    """
    from menpofit.aam import PatchAAM
    from menpofit.modelinstance import OrthoPDM
    from menpofit import checks

    tensors, header = load_weights(path, kind=KIND, as_torch=False)
    cfg = header["config"]
    try:
        n_scales = len(cfg["scales"])
        feats = feature_functions()
        aam = PatchAAM.__new__(PatchAAM)
        aam.holistic_features = [feats[cfg["features"]]] * n_scales
        aam.transform = None
        aam.diagonal = cfg["diagonal"]
        aam.scales = list(cfg["scales"])
        aam.max_shape_components = [cfg["max_shape_components"]] * n_scales
        aam.max_appearance_components = [cfg["max_appearance_components"]] * n_scales
        aam.reference_shape = PointCloud(tensors["reference_shape"])
        aam._shape_model_cls = [OrthoPDM] * n_scales
        aam.patch_shape = checks.check_patch_shape(
            [tuple(p) for p in cfg["patch_shape"]], n_scales
        )
        aam.patch_normalisation = [feats[cfg["patch_normalisation"]]] * n_scales
        aam.shape_models = [
            _rebuild_ortho_pdm(
                _rebuild_pca(tensors, f"shape{j}", cfg["shape_models"][j]),
                tensors[f"similarity{j}.components"],
            )
            for j in range(n_scales)
        ]
        aam.appearance_models = [
            _rebuild_pca(tensors, f"appearance{j}", cfg["appearance_models"][j])
            for j in range(n_scales)
        ]
    except (KeyError, IndexError, TypeError, ValueError) as e:
        raise WeightsError(f"{path}: incomplete patch AAM file ({e!r})") from None
    aam.aam_config = {k: cfg.get(k, AAM_DEFAULTS[k]) for k in AAM_DEFAULTS}
    aam.n_training_images = header["extra"].get("n_training_images", 0)
    return aam


# --------------------------------------------------------------------------- caching


def training_hash(images, config, group=None):
    """A hex digest of the training data (pixels + landmarks) and the configuration."""
    h = hashlib.sha256()
    h.update(json.dumps(config, sort_keys=True).encode())
    for k, im in enumerate(images):
        g = pick_group(im, group, what=f"training image {k}")
        h.update(
            np.ascontiguousarray(im.landmarks[g].points, dtype=np.float64).tobytes()
        )
        h.update(str(im.pixels.shape).encode())
        h.update(
            np.ascontiguousarray(im.pixels[:, ::4, ::4], dtype=np.float32).tobytes()
        )
    return h.hexdigest()


def cached_patch_aam(
    train_folder_or_images, cache_path, group=None, verbose=False, **options
):
    """Load the AAM cached at ``cache_path`` if it was built from the same data+config.

    Otherwise build it with :func:`build_patch_aam` and save it there (atomically).

    Parameters
    ----------
    train_folder_or_images : folder of images with ``.pts`` files, or `list` of images
    cache_path : `str` or `Path`
    """
    if isinstance(train_folder_or_images, (str, Path)):
        images = load_folder(train_folder_or_images)
    else:
        images = list(train_folder_or_images)
    cfg = _config(**options)
    digest = training_hash(images, cfg, group=group)
    cache_path = Path(cache_path)
    if cache_path.is_file():
        try:
            _, header = load_weights(cache_path, kind=KIND, as_torch=False)
            if header["extra"].get("training_hash") == digest:
                return load_aam(cache_path)
        except WeightsError:
            pass
    aam = build_patch_aam(images, group=group, verbose=verbose, **cfg)
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    save_aam(aam, cache_path, extra={"training_hash": digest})
    return aam


# --------------------------------------------------------------------------- fitter
