"""Torch datasets of dense samples (the dense sample format of the data engine).

* :class:`RealDenseDataset` — real annotated images (68 or 98 points); the face template
  is fitted once per image and every item renders a freshly augmented crop with its
  dense ground truth (deterministic in ``(seed, epoch, index)``).
* :class:`SyntheticDenseDataset` — re-posed 3D renders of fitted real faces, computed on
  the fly (deterministic in ``(seed, index)``).
* :class:`DenseShardDataset` — streams a sharded on-disk cache written by
  ``menpo-densereg synth`` (:func:`menpo_densereg.template.synthesis.write_shards`).

Every item is a `dict` of torch tensors with the keys of
:data:`menpo_densereg.template.synthesis.SAMPLE_KEYS` (``image`` (3,S,S), ``uv`` (2,S,S), ``mask``,
``depth``, ``parts`` (int64), and ``lm_/has_/vis_`` for ibug68, wflw98, lfpw29, five).
"""

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from menpo_densereg.template.synthesis import (
    SAMPLE_KEYS,
    DataEngine,
    SynthConfig,
    annotated_face,
    list_shards,
    read_shard,
    real_sample,
)

__all__ = [
    "RealDenseDataset",
    "SyntheticDenseDataset",
    "DenseShardDataset",
    "load_annotated_images",
    "to_tensors",
]


def to_tensors(sample):
    """numpy dense sample -> dict of torch tensors.

    Only the keys of :data:`~menpo_densereg.template.synthesis.SAMPLE_KEYS` are kept (e.g. the
    synthetic ``pose`` is dropped), so items of every dataset here collate together.
    """
    out = {}
    for k in SAMPLE_KEYS:
        v = sample[k]
        a = np.asarray(v)
        out[k] = (
            torch.from_numpy(a.copy())
            if a.ndim == 0
            else torch.from_numpy(np.ascontiguousarray(a))
        )
    return out


def load_annotated_images(images, verbose=False):
    """Images with landmarks from a folder (or list of folders / menpo images).

    Folders are read with :func:`menpo_densereg.data.readers.read_pts_folder` (unreadable
    items are skipped).
    """
    from menpo.image import Image

    from menpo_densereg.data.readers import read_pts_folder

    if isinstance(images, (str, Path)):
        images = [images]
    out = []
    for item in images:
        if isinstance(item, Image):
            out.append(item)
            continue
        p = Path(item)
        if not p.exists():
            raise FileNotFoundError(f"image folder not found: {p}")
        out.extend(read_pts_folder(p, on_error="skip", progress=verbose))
    return out


def _fit_all(images, skip_bad):
    from tqdm.auto import tqdm

    faces = []
    for im in tqdm(images, desc="fit template", disable=len(images) < 50):
        try:
            faces.append(annotated_face(im))
        except ValueError:
            if not skip_bad:
                raise
    if not faces:
        raise ValueError("no usable 68/98-point annotated images")
    return faces


class RealDenseDataset(Dataset):
    """Augmented crops of real annotated faces with dense ground truth computed on the fly.

    Parameters
    ----------
    images : folder, list of folders, or list of menpo `Image` with 68/98 landmarks
    size : `int`
        Crop side S.
    augment : `bool`
        Jittered crop + photometric augmentation (off: the plain landmark-box crop).
    seed : `int`
    length : `int`, optional
        Items per epoch (default: the number of images); item ``i`` uses image
        ``i % n_images``.
    derived_markups : `bool`
        Give the markups that were not annotated from the fitted template.
    skip_bad : `bool`
        Skip images whose landmarks are not 68/98 finite points instead of raising.
    faces : `list`, optional
        Faces already fitted by :func:`~menpo_densereg.template.synthesis.annotated_face`
        (e.g. another dataset's ``faces``); ``images`` is then ignored.
    """

    def __init__(
        self,
        images,
        size=128,
        augment=True,
        seed=0,
        length=None,
        derived_markups=True,
        skip_bad=True,
        config=None,
        faces=None,
    ):
        self.faces = (
            list(faces)
            if faces is not None
            else _fit_all(load_annotated_images(images), skip_bad)
        )
        self.config = config or SynthConfig(size=size)
        self.config.size = int(size)
        self.augment = augment
        self.seed = int(seed)
        self.length = int(length) if length else len(self.faces)
        self.derived_markups = derived_markups
        self.epoch = 0

    def set_epoch(self, epoch):
        """Change the augmentation draw (deterministically)."""
        self.epoch = int(epoch)

    def __len__(self):
        return self.length

    def __str__(self):
        return (
            f"RealDenseDataset: {len(self.faces)} faces, {self.length} items/epoch, "
            f"S={self.config.size}, augment={self.augment}, seed={self.seed}"
        )

    def sample(self, index):
        """The numpy dense sample of item ``index``."""
        if not 0 <= index < self.length:
            raise IndexError(index)
        rng = np.random.default_rng([self.seed, self.epoch, index])
        face = self.faces[index % len(self.faces)]
        return real_sample(face, self.config, rng, self.augment, self.derived_markups)

    def __getitem__(self, index):
        return to_tensors(self.sample(index))


class SyntheticDenseDataset(Dataset):
    """Re-posed renders of fitted real faces (300W-LP style), computed on the fly.

    Parameters
    ----------
    images : folder(s) or menpo images with 68/98 landmarks (the texture sources)
    size : `int`
    length : `int`
        Number of items.
    seed : `int`
    config : `SynthConfig`, optional
    real_fraction : `float`
        Fraction of items that are augmented real crops instead of renders.
    faces : `list`, optional
        Faces already fitted (see :class:`RealDenseDataset`); ``images`` is then ignored.
    """

    def __init__(
        self,
        images,
        size=128,
        length=1000,
        seed=0,
        config=None,
        real_fraction=0.0,
        skip_bad=True,
        faces=None,
    ):
        if faces is None:
            faces = _fit_all(load_annotated_images(images), skip_bad)
        self.faces = list(faces)
        config = config or SynthConfig(size=size)
        config.size = int(size)
        self.engine = DataEngine(faces, config, seed, real_fraction)
        self.length = int(length)

    def __len__(self):
        return self.length

    def __str__(self):
        return f"SyntheticDenseDataset: {self.length} items from {self.engine}"

    def sample(self, index):
        if not 0 <= index < self.length:
            raise IndexError(index)
        return self.engine.sample(index)

    def __getitem__(self, index):
        return to_tensors(self.sample(index))


class DenseShardDataset(Dataset):
    """Stream a sharded cache of dense samples (``shard_*.npz`` in ``cache_dir``).

    Shards are loaded lazily and the most recent ``cache_shards`` are kept in memory, so
    sequential (or shard-grouped) access reads every shard once.

    Parameters
    ----------
    cache_dir : `str` or `Path`
    cache_shards : `int`
        Shards kept in memory.
    """

    def __init__(self, cache_dir, cache_shards=2):
        self.cache_dir = Path(cache_dir)
        if not self.cache_dir.is_dir():
            raise FileNotFoundError(f"dense sample cache not found: {self.cache_dir}")
        self.paths = list_shards(self.cache_dir)
        self.counts = []
        for p in self.paths:
            try:
                with np.load(p, allow_pickle=False) as f:
                    self.counts.append(int(f["index"].shape[0]))
            except Exception as e:
                raise ValueError(f"{p}: not a readable dense-sample shard ({e})") from e
        self.offsets = np.cumsum([0] + self.counts)
        self.cache_shards = int(cache_shards)
        self._cache = {}

    def __len__(self):
        return int(self.offsets[-1])

    def __str__(self):
        return (
            f"DenseShardDataset: {len(self)} samples in {len(self.paths)} shards "
            f"({self.cache_dir})"
        )

    def _shard(self, k):
        if k not in self._cache:
            if len(self._cache) >= self.cache_shards:
                self._cache.pop(next(iter(self._cache)))
            self._cache[k] = read_shard(self.paths[k])
        return self._cache[k]

    def sample(self, index):
        if not 0 <= index < len(self):
            raise IndexError(index)
        k = int(np.searchsorted(self.offsets, index, side="right") - 1)
        shard = self._shard(k)
        j = index - self.offsets[k]
        return {key: shard[key][j] for key in SAMPLE_KEYS if key in shard}

    def __getitem__(self, index):
        return to_tensors(self.sample(index))
