"""Mixed-markup landmark data for DeCaFA: real annotated images (and synthetic samples).

Items follow the landmark part of the project's *dense sample format*: a dict with
``"image"`` float32 ``(C, S, S)`` in [0, 1] and, for every markup
``m in ("ibug68", "wflw98", "lfpw29", "five")``, ``"lm_<m>"`` float32 ``(n_m, 2)``
``(y, x)`` in crop pixels, ``"has_<m>"`` float32 scalar (1 when the sample carries the
markup) and ``"vis_<m>"`` float32 ``(n_m,)`` (0 for points that are absent, or that the
augmentation pushed outside the crop). Dense keys (``uv``, ``mask``...) are absent.

Real images are read from folders of ``image + .pts`` files; each annotation gives its
own markup and every markup that can be derived from it exactly enough:

- 68 points -> ``ibug68`` (+ ``lfpw29`` and ``five`` via :func:`markups.convert`),
- 98 points -> ``wflw98`` (+ ``ibug68``, ``lfpw29``, ``five``),
- 29 points -> ``lfpw29``; 5 points -> ``five``.

Geometric augmentation (box jitter, rotation, scale, horizontal flip with the markup's
left/right permutation, :data:`FLIP_PERMUTATIONS`) and photometric augmentation
(brightness, contrast, gamma, noise) are drawn from a generator seeded by
``(seed, index)``, so an item is the same every time it is read.

:class:`AlternatingSourceSampler` yields whole batches from one source at a time, in
turn (the paper's alternating updates between databases), and
:class:`DenseSampleAdapter` brings the data engine's synthetic datasets (which carry every
markup) into the same format.
"""

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from menpo_densereg.data.markups import (  # noqa: F401  (flip_* re-exported here)
    FLIP_PERMUTATIONS,
    can_convert,
    conversion_matrix,
    flip_permutation,
    get_markup,
)

__all__ = [
    "TRAIN_MARKUPS",
    "FLIP_PERMUTATIONS",
    "flip_permutation",
    "derived_markups",
    "AugmentConfig",
    "LandmarkRecord",
    "load_landmark_folder",
    "LandmarkDataset",
    "MixedLandmarkDataset",
    "AlternatingSourceSampler",
    "DenseSampleAdapter",
    "open_synthetic",
    "to_grey",
    "markup_counts",
]

TRAIN_MARKUPS = ("ibug68", "wflw98", "lfpw29", "five")


def derived_markups(markup):
    """The training markups a shape of ``markup`` gives (itself first)."""
    name = get_markup(markup).name
    return [name] + [m for m in TRAIN_MARKUPS if m != name and can_convert(name, m)]


def to_grey(images):
    """``(B, 3, H, W)`` RGB -> ``(B, 1, H, W)`` luminance; grey passes through."""
    if images.shape[1] == 1:
        return images
    w = torch.tensor([0.2989, 0.5870, 0.1140], dtype=images.dtype, device=images.device)
    return (images * w[None, :, None, None]).sum(dim=1, keepdim=True)


@dataclass
class AugmentConfig:
    """Augmentation ranges (all uniform; ``enabled=False`` gives the plain crop).

    Parameters
    ----------
    jitter : `float`
        Box centre shift, as a fraction of the box side.
    scale : `float`
        Relative change of the box side (``1 +- scale``).
    rotation : `float`
        Degrees (``+- rotation``).
    flip : `float`
        Probability of a horizontal flip.
    brightness, contrast, gamma : `float`
        Additive brightness, multiplicative contrast ``1 +- contrast`` around the mean,
        gamma ``exp(+- gamma)``.
    noise : `float`
        Maximum standard deviation of additive Gaussian noise.
    """

    enabled: bool = True
    jitter: float = 0.08
    scale: float = 0.1
    rotation: float = 30.0
    flip: float = 0.5
    brightness: float = 0.15
    contrast: float = 0.3
    gamma: float = 0.3
    noise: float = 0.02

    def to_dict(self):
        return asdict(self)


@dataclass
class LandmarkRecord:
    """One annotated face, pre-cropped once for fast augmentation.

    ``pixels`` is a float32 ``(C, h, w)`` region around the face, ``shapes`` maps markup
    name -> ``(n, 2)`` (y, x) in that region, ``centre``/``side`` the face box (tight box
    of the annotated shape) in that region, ``source`` the file it came from.
    """

    pixels: np.ndarray
    shapes: dict
    centre: np.ndarray
    side: float
    source: str = ""

    def __str__(self):
        return (
            f"LandmarkRecord({self.source}: {self.pixels.shape[2]}x"
            f"{self.pixels.shape[1]} px, markups {sorted(self.shapes)})"
        )


def _record_from_image(image, shape, markup, size, context=1.6, derive=True, source=""):
    from menpo.shape import PointCloud

    from menpo_densereg.data.crop import crop_face
    from menpo_densereg.fitting.base import box_from_shape

    pts = np.asarray(shape.points if hasattr(shape, "points") else shape, float)
    box = box_from_shape(pts)
    # a region `context` times the training crop (margin 0.25) at ~1.25x the output
    # resolution keeps rotations/scales/jitter inside it
    region = int(round(size * 1.25 * context))
    margin = (context * 1.5 - 1.0) / 2.0
    crop, crop_to_image = crop_face(image, box, region, margin=margin)
    image_to_crop = crop_to_image.pseudoinverse()
    local = image_to_crop.apply(PointCloud(pts)).points
    names = derived_markups(markup) if derive else [get_markup(markup).name]
    shapes = {
        m: (conversion_matrix(markup, m) @ local).astype(np.float32) for m in names
    }
    llo, lhi = local.min(axis=0), local.max(axis=0)
    pixels = np.asarray(crop.pixels, dtype=np.float32)
    if pixels.shape[0] == 1:
        pixels = np.repeat(pixels, 3, axis=0)
    return LandmarkRecord(
        pixels=np.ascontiguousarray(pixels[:3]),
        shapes=shapes,
        centre=((llo + lhi) / 2.0).astype(np.float32),
        side=float((lhi - llo).max()),
        source=source,
    )


def load_landmark_folder(folder, size=128, derive=True, exclude=(), progress=False):
    """Read a folder tree of annotated images into :class:`LandmarkRecord` s.

    Parameters
    ----------
    folder : `str` or `Path`
    size : `int`
        Crop size the records will serve (sets the pre-crop resolution).
    derive : `bool`
        Add the markups derivable from each annotation.
    exclude : iterable of `str`
        File stems (or relative paths without suffix) to leave out.
    progress : `bool`

    Returns
    -------
    records : `list` of :class:`LandmarkRecord`, sorted by path. Files with an unknown
        point count are skipped.

    Raises
    ------
    ValueError
        Missing folder or no usable annotation.
    """
    from menpo_densereg.data.readers import read_pts_folder

    folder = Path(folder)
    images = read_pts_folder(folder, on_error="skip", progress=progress)
    exclude = set(exclude)
    records = []
    for image in images:
        path = Path(image.path)
        rel = str(path.relative_to(folder).with_suffix(""))
        if path.stem in exclude or rel in exclude:
            continue
        groups = [g for g in image.landmarks.keys() if g in TRAIN_MARKUPS]
        if not groups:
            continue
        m = groups[0]
        records.append(
            _record_from_image(
                image, image.landmarks[m], m, size, derive=derive, source=str(path)
            )
        )
    if not records:
        raise ValueError(f"{folder}: no annotated image with a {TRAIN_MARKUPS} markup")
    return records


class LandmarkDataset(torch.utils.data.Dataset):
    """Augmented crops of :class:`LandmarkRecord` s in the dense sample format.

    Parameters
    ----------
    records : `list` of :class:`LandmarkRecord`
    size : `int`
        Output crop side ``S``.
    margin : `float`
        Crop margin around the face box (as :func:`menpo_densereg.data.crop.crop_face`).
    augment : :class:`AugmentConfig` or `dict` or `None`
        `None` disables augmentation (validation).
    seed : `int`
    channels : `int`
        3 (RGB, the dense format) or 1 (grey).
    repeats : `int`
        The dataset has ``len(records) * repeats`` items; item ``i`` shows record
        ``i % len(records)`` with augmentation drawn from ``(seed, i)``.
    name : `str`
        Name of the source (for samplers and logs).
    """

    def __init__(
        self,
        records,
        size=128,
        margin=0.25,
        augment=None,
        seed=0,
        channels=3,
        repeats=1,
        name="",
    ):
        if not records:
            raise ValueError("records: empty")
        if channels not in (1, 3):
            raise ValueError(f"channels: expected 1 or 3, got {channels}")
        if isinstance(augment, dict):
            augment = AugmentConfig(**augment)
        self.records = list(records)
        self.size = int(size)
        self.margin = float(margin)
        self.augment = augment
        self.seed = int(seed)
        self.channels = channels
        self.repeats = max(1, int(repeats))
        self.name = name

    @classmethod
    def from_folders(cls, folders, size=128, exclude=(), derive=True, **kwargs):
        """Build from one or several folders (see :func:`load_landmark_folder`)."""
        if isinstance(folders, (str, Path)):
            folders = [folders]
        records = []
        for f in folders:
            records += load_landmark_folder(
                f, size=size, derive=derive, exclude=exclude
            )
        kwargs.setdefault("name", ",".join(Path(f).name for f in folders))
        return cls(records, size=size, **kwargs)

    def __len__(self):
        return len(self.records) * self.repeats

    def __str__(self):
        counts = {}
        for r in self.records:
            for m in r.shapes:
                counts[m] = counts.get(m, 0) + 1
        aug = "augmented" if self.augment and self.augment.enabled else "plain"
        return (
            f"LandmarkDataset '{self.name}': {len(self.records)} faces x{self.repeats}, "
            f"{self.size}px {aug} crops; markups {counts}"
        )

    def _transform(self, rec, rng):
        """Crop (y, x) -> record pixel (y, x) as a 2x2 matrix and an offset."""
        s = self.size
        side = rec.side * (1.0 + 2.0 * self.margin)
        centre = rec.centre.astype(float).copy()
        angle, flip = 0.0, False
        a = self.augment
        if a is not None and a.enabled:
            centre += rng.uniform(-a.jitter, a.jitter, 2) * rec.side
            side *= 1.0 + rng.uniform(-a.scale, a.scale)
            angle = np.deg2rad(rng.uniform(-a.rotation, a.rotation))
            flip = rng.random() < a.flip
        scale = side / s
        c, sn = np.cos(angle), np.sin(angle)
        rot = np.array([[c, -sn], [sn, c]])
        A = scale * rot
        if flip:
            A = A @ np.diag([1.0, -1.0])
        half = (s - 1) / 2.0
        offset = centre - A @ np.array([half, half])
        return A, offset, flip

    def _photometric(self, img, rng):
        a = self.augment
        if a is None or not a.enabled:
            return img
        mean = img.mean()
        img = (img - mean) * (1.0 + rng.uniform(-a.contrast, a.contrast)) + mean
        img = img + rng.uniform(-a.brightness, a.brightness)
        img = np.clip(img, 0.0, 1.0) ** np.exp(rng.uniform(-a.gamma, a.gamma))
        if a.noise:
            img = img + rng.normal(0.0, rng.uniform(0, a.noise), img.shape)
        return np.clip(img, 0.0, 1.0)

    def __getitem__(self, index):
        if not 0 <= index < len(self):
            raise IndexError(index)
        rec = self.records[index % len(self.records)]
        rng = np.random.default_rng([self.seed, index])
        A, offset, flip = self._transform(rec, rng)
        s = self.size
        grid = np.stack(np.meshgrid(np.arange(s), np.arange(s), indexing="ij"), 0)
        src = np.tensordot(A, grid.reshape(2, -1), axes=1) + offset[:, None]
        px = rec.pixels
        if self.channels == 1:
            px = (0.2989 * px[0] + 0.5870 * px[1] + 0.1140 * px[2])[None]
        img = np.stack(
            [ndimage.map_coordinates(ch, src, order=1, cval=0.0) for ch in px]
        ).reshape(len(px), s, s)
        img = self._photometric(img, rng).astype(np.float32)
        item = {"image": torch.from_numpy(np.ascontiguousarray(img))}
        A_inv = np.linalg.inv(A)
        for m in TRAIN_MARKUPS:
            n = get_markup(m).n_points
            if m in rec.shapes:
                pts = (rec.shapes[m] - offset) @ A_inv.T
                if flip:
                    pts = pts[flip_permutation(m)]
                inside = np.all((pts >= 0) & (pts <= s - 1), axis=1)
                item[f"lm_{m}"] = torch.from_numpy(pts.astype(np.float32))
                item[f"has_{m}"] = torch.tensor(1.0)
                item[f"vis_{m}"] = torch.from_numpy(inside.astype(np.float32))
            else:
                item[f"lm_{m}"] = torch.zeros(n, 2)
                item[f"has_{m}"] = torch.tensor(0.0)
                item[f"vis_{m}"] = torch.zeros(n)
        return item


def _landmark_item(item, size, channels):
    """Keep the landmark keys of a dense-format item, resized to ``size``."""
    img = item["image"]
    img = img if torch.is_tensor(img) else torch.as_tensor(np.asarray(img))
    img = img.float()
    if img.ndim == 2:
        img = img[None]
    factor = 1.0
    if img.shape[-1] != size or img.shape[-2] != size:
        factor = (size - 1) / (img.shape[-1] - 1)
        img = torch.nn.functional.interpolate(
            img[None], size=(size, size), mode="bilinear", align_corners=True
        )[0]
    if channels == 1:
        img = to_grey(img[None])[0]
    elif img.shape[0] == 1:
        img = img.repeat(3, 1, 1)
    out = {"image": img.contiguous()}
    for m in TRAIN_MARKUPS:
        n = get_markup(m).n_points
        lm = item.get(f"lm_{m}")
        if lm is None:
            out[f"lm_{m}"] = torch.zeros(n, 2)
            out[f"has_{m}"] = torch.tensor(0.0)
            out[f"vis_{m}"] = torch.zeros(n)
            continue
        out[f"lm_{m}"] = torch.as_tensor(np.asarray(lm), dtype=torch.float32) * factor
        out[f"has_{m}"] = torch.as_tensor(float(item.get(f"has_{m}", 1.0)))
        vis = item.get(f"vis_{m}")
        out[f"vis_{m}"] = (
            torch.ones(n) if vis is None else torch.as_tensor(np.asarray(vis)).float()
        )
    return out


class DenseSampleAdapter(torch.utils.data.Dataset):
    """Serve a dense-format dataset (e.g. the data engine's synthetic shards) to DeCaFA.

    Keeps ``image`` and the landmark keys, resizes to ``size`` (landmarks scaled with
    it) and converts to ``channels``.
    """

    def __init__(self, dataset, size=128, channels=3, name="synthetic"):
        self.dataset = dataset
        self.size = int(size)
        self.channels = channels
        self.name = name

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        return _landmark_item(self.dataset[index], self.size, self.channels)

    def __str__(self):
        return f"DenseSampleAdapter '{self.name}': {len(self)} samples at {self.size}px"


def open_synthetic(path, size=128, channels=3, **kwargs):
    """Open the data engine's synthetic shards at ``path`` as a DeCaFA source.

    Raises
    ------
    FileNotFoundError
        When ``path`` is not a folder.
    ValueError
        When the data engine (``menpo_densereg.densereg.dataset``) is not available.
    """
    if not Path(path).is_dir():
        raise FileNotFoundError(f"synthetic source {path}: folder not found")
    try:
        from menpo_densereg.densereg.dataset import DenseShardDataset
    except ImportError as e:
        raise ValueError(
            f"{path}: synthetic data needs menpo_densereg.densereg.dataset ({e})"
        ) from None
    return DenseSampleAdapter(
        DenseShardDataset(path, **kwargs), size=size, channels=channels, name=str(path)
    )


class MixedLandmarkDataset(torch.utils.data.ConcatDataset):
    """Several sources (real folders, synthetic shards) concatenated, sizes remembered."""

    def __init__(self, sources):
        sources = [s for s in sources if len(s)]
        if not sources:
            raise ValueError("sources: no non-empty source")
        super().__init__(sources)
        self.sources = sources
        self.source_sizes = [len(s) for s in sources]

    def __str__(self):
        return "MixedLandmarkDataset:\n" + "\n".join(f"  {s}" for s in self.sources)


class AlternatingSourceSampler(torch.utils.data.Sampler):
    """Indices of a :class:`MixedLandmarkDataset` grouped so each batch has one source.

    Batches visit the sources in turn (round robin), as the paper alternates updates
    between databases. Within a source, indices are drawn without replacement and
    reshuffled when exhausted. Deterministic given ``seed`` and the epoch.

    Parameters
    ----------
    source_sizes : `list` of `int`
    batch_size : `int`
        Must equal the DataLoader's batch size.
    n_batches : `int`, optional
        Batches per epoch (default: enough to see the largest source once per turn).
    seed : `int`
    turns : `list` of `int`, optional
        Consecutive batches of source ``k`` in each round (default 1 each).
    """

    def __init__(self, source_sizes, batch_size, n_batches=None, seed=0, turns=None):
        self.sizes = [int(n) for n in source_sizes]
        if not self.sizes or min(self.sizes) < 1:
            raise ValueError(f"source_sizes: need non-empty sources, got {self.sizes}")
        self.batch_size = int(batch_size)
        self.offsets = np.cumsum([0] + self.sizes[:-1])
        self.n_batches = int(
            n_batches
            or len(self.sizes) * int(np.ceil(max(self.sizes) / self.batch_size))
        )
        self.seed = seed
        self.epoch = 0
        turns = [1] * len(self.sizes) if turns is None else [int(t) for t in turns]
        if len(turns) != len(self.sizes) or min(turns) < 0 or not sum(turns):
            raise ValueError(
                f"turns: expected {len(self.sizes)} counts >= 0, got {turns}"
            )
        self.cycle = [k for k, t in enumerate(turns) for _ in range(t)]

    def set_epoch(self, epoch):
        self.epoch = int(epoch)

    def __len__(self):
        return self.n_batches * self.batch_size

    def batches(self):
        """The list of batches (lists of indices) of the current epoch."""
        rng = np.random.default_rng([self.seed, self.epoch])
        pools = [[] for _ in self.sizes]
        out = []
        for b in range(self.n_batches):
            k = self.cycle[b % len(self.cycle)]
            batch = []
            while len(batch) < self.batch_size:
                if not pools[k]:
                    pools[k] = list(rng.permutation(self.sizes[k]))
                batch.append(int(self.offsets[k] + pools[k].pop()))
            out.append(batch)
        return out

    def __iter__(self):
        for batch in self.batches():
            yield from batch
        self.epoch += 1


def markup_counts(dataset):
    """``{markup: number of items that have it}`` of a landmark dataset (slow: reads all)."""
    counts = {m: 0 for m in TRAIN_MARKUPS}
    for i in range(len(dataset)):
        item = dataset[i]
        for m in TRAIN_MARKUPS:
            counts[m] += int(float(item[f"has_{m}"]) > 0)
    return counts
