"""Safe model files: safetensors tensors + a JSON header, loaded without running code.

Every model the project ships or trains (DenseReg, DeCaFA, MDM, AAM arrays) is saved with
:func:`save_weights` and read back with :func:`load_weights`. The file carries a
``kind`` (which model it is), a ``format_version`` and the model's configuration, so a
corrupt file, a file of another model, or a file from an incompatible version fails with
one clear :class:`WeightsError` that names it. Tensors holding NaN or infinite values
are refused at load (a diverged training must not put every landmark on one pixel).
"""

import json
from pathlib import Path

import numpy as np

from menpo_densereg.atomic import atomic_path

__all__ = ["WeightsError", "save_weights", "load_weights", "FORMAT_VERSION"]

FORMAT_VERSION = 1
_HEADER_KEY = "menpo_densereg"


class WeightsError(ValueError):
    """A model file that cannot be used: missing, corrupt, foreign or too new/old."""


def save_weights(path, tensors, kind, config=None, extra=None):
    """Write ``tensors`` (name -> torch tensor or ndarray) and metadata atomically.

    Parameters
    ----------
    path : `str` or `Path`
    tensors : `dict`
        Name -> `torch.Tensor` or `numpy.ndarray`.
    kind : `str`
        The model kind (``"densereg"``, ``"decafa"``, ``"mdm"``, ``"patch_aam"``...).
    config : `dict`, optional
        JSON-serialisable configuration needed to rebuild the model.
    extra : `dict`, optional
        JSON-serialisable information (training summary, markups, ...).
    """
    from safetensors.numpy import save_file

    arrays = {}
    for name, t in tensors.items():
        if hasattr(t, "detach"):
            t = t.detach().cpu()
            if t.dtype.is_floating_point and t.dtype != t.float().dtype:
                t = t.float()
            t = t.numpy()
        arrays[name] = np.ascontiguousarray(t)
    header = {
        "kind": kind,
        "format_version": FORMAT_VERSION,
        "config": config or {},
        "extra": extra or {},
    }
    meta = {_HEADER_KEY: json.dumps(header)}
    with atomic_path(path) as tmp:
        save_file(arrays, str(tmp), metadata=meta)


def load_weights(path, kind=None, as_torch=True):
    """Read a model file written by :func:`save_weights`.

    Parameters
    ----------
    path : `str` or `Path`
    kind : `str`, optional
        The expected model kind; a file of another kind raises `WeightsError`.
    as_torch : `bool`
        Return torch tensors (default) or numpy arrays.

    Returns
    -------
    tensors : `dict`
    header : `dict` with ``kind``, ``format_version``, ``config``, ``extra``.

    Raises
    ------
    WeightsError
    """
    from safetensors import safe_open, SafetensorError

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: model file not found")
    framework = "pt" if as_torch else "numpy"
    try:
        with safe_open(str(path), framework=framework) as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise WeightsError(
            f"{path}: not a readable menpo-densereg model file ({e})"
        ) from None
    if _HEADER_KEY not in meta:
        raise WeightsError(f"{path}: not a menpo-densereg model file (no header)")
    try:
        header = json.loads(meta[_HEADER_KEY])
    except json.JSONDecodeError:
        raise WeightsError(f"{path}: corrupt model header") from None
    version = header.get("format_version")
    if version != FORMAT_VERSION:
        raise WeightsError(
            f"{path}: model format version {version}, this menpo-densereg reads "
            f"version {FORMAT_VERSION}"
        )
    if kind is not None and header.get("kind") != kind:
        raise WeightsError(
            f"{path}: holds a {header.get('kind')!r} model, expected {kind!r}"
        )
    bad = _non_finite(tensors)
    if bad:
        name, count, total = bad[0]
        raise WeightsError(
            f"{path}: {len(bad)} tensor(s) hold NaN or infinite values (e.g. {name!r}: "
            f"{count} of {total}); the model file is unusable (a diverged training?)"
        )
    return tensors, header


def _non_finite(tensors):
    """``[(name, n_bad, n_total)]`` of the floating tensors with NaN/inf values."""
    bad = []
    for name, t in tensors.items():
        if hasattr(t, "detach"):
            if not t.dtype.is_floating_point:
                continue
            n_bad = int((~t.isfinite()).sum())
            total = t.numel()
        else:
            arr = np.asarray(t)
            if not np.issubdtype(arr.dtype, np.floating):
                continue
            n_bad = int((~np.isfinite(arr)).sum())
            total = arr.size
        if n_bad:
            bad.append((name, n_bad, total))
    return bad
