"""Every fix that the old menpo stack needs on today's scientific Python.

menpo 0.11, menpofit 0.7, menpo3d 0.8 and menpodetect 0.6 were written for numpy 1.x,
scipy < 1.14 and Pillow < 12. This module is the single place where the project patches
them; :func:`apply` runs once when :mod:`menpo_densereg` is imported and is idempotent.
Each fix is a small named function so that tests can check it.

Importing the package stays cheap: :func:`apply` restores the numpy aliases at once
(numpy is imported anyway) and installs an import hook (:class:`_PostImportHook`, a
``sys.meta_path`` finder) that applies every other fix right after the module it
concerns is first imported (``scipy.integrate``, ``PIL.Image``, ``menpofit.error``,
``menpofit.dlib.*``, ``menpo3d.rasterize.cpu``), or at once when that module is already
loaded. So ``import menpo_densereg`` imports neither scipy nor menpofit nor torch, and
the fixes are still in place before menpo/menpofit code runs.

Fixes
-----
numpy >= 2
    ``np.Inf``, ``np.NaN``, ``np.alltrue``, ``np.sometrue``, ``np.product``,
    ``np.issubclass_``, ``np.in1d`` (removed in 2.4) and ``np.lib.pad`` are restored as
    aliases of their modern spelling.
scipy >= 1.14
    ``scipy.integrate.simps`` (imported by menpofit's error statistics at import time)
    becomes an alias of :func:`scipy.integrate.simpson`.
Pillow >= 12
    Format plugins are registered lazily, which makes ``menpo.io.export_image`` fail to
    find e.g. the PNG writer after a JPEG was read; :func:`PIL.Image.init` fixes that.
menpo3d built with Cython 3
    ``menpo3d.rasterize.tripixel.pixels_to_check`` raises ``NameError: long``; it is
    replaced by a vectorised numpy equivalent when the compiled one is broken.
menpofit
    ``compute_cumulative_error`` is given numpy bins whatever it is passed;
    ``mean_pupil_68_error`` / ``mean_pupil_49_error`` call menpo's labellers with a
    keyword (``include_mapping``) that menpo 0.11 no longer has: they are replaced by
    equivalents that average the eye points directly. With dlib installed, the
    conversion of dlib detections to point clouds (``np.vstack`` of a generator, which
    numpy 2 refuses) is replaced, so ``menpofit.dlib.DlibWrapper`` fits again.
"""

import functools
import importlib.abc
import sys
import threading

import numpy as np

__all__ = ["apply", "pixels_to_check_numpy", "POST_IMPORT_FIXES", "require_menpo3d"]

_APPLIED = False


_MENPO3D_INSTALL = (
    'pip install wheel "setuptools>=64" "numpy>=2,<2.6" "cython==0.29.37" && '
    'pip install --no-build-isolation "menpo-densereg[3d]"'
)


def require_menpo3d(what):
    """Import menpo3d for ``what``, or raise an `ImportError` naming the ``3d`` extra.

    menpo3d is optional: only the template build and the 3D helpers need it, fitting
    never does.

    Parameters
    ----------
    what : `str`
        The function that needs it (for the message).

    Returns
    -------
    menpo3d : module
    """
    try:
        import menpo3d
    except ImportError as e:
        raise ImportError(
            f"{what} needs menpo3d, which is in the optional '3d' extra of "
            f"menpo-densereg (menpo3d builds a Cython extension; install its build "
            f"requirements first): {_MENPO3D_INSTALL}"
        ) from e
    return menpo3d


def _in1d(ar1, ar2, assume_unique=False, invert=False, **kwargs):
    """``np.in1d`` as it was: a flattened boolean array."""
    return np.isin(
        np.ravel(ar1), ar2, assume_unique=assume_unique, invert=invert, **kwargs
    )


def _fix_numpy():
    aliases = {
        "Inf": np.inf,
        "NaN": np.nan,
        "alltrue": np.all,
        "sometrue": np.any,
        "product": np.prod,
        "issubclass_": issubclass,
        "in1d": _in1d,
    }
    for name, value in aliases.items():
        if name not in np.__dict__:
            setattr(np, name, value)
    if not hasattr(np.lib, "pad"):
        np.lib.pad = np.pad


def _fix_scipy():
    import scipy.integrate as integrate

    if not hasattr(integrate, "simps"):

        def simps(y, x=None, dx=1.0, axis=-1, even=None):
            return integrate.simpson(y, x=x, dx=dx, axis=axis)

        integrate.simps = simps


def _fix_pillow():
    try:
        import PIL.Image as PILImage
    except ImportError:  # pragma: no cover - Pillow is a menpo dependency
        return
    PILImage.init()


def pixels_to_check_numpy(start, end, n_pixels):
    """Vectorised replacement of menpo3d's ``tripixel.pixels_to_check``.

    Parameters
    ----------
    start, end : ``(n_tris, 2)`` `ndarray` of int
        Inclusive start and exclusive end of each triangle's bounding box.
    n_pixels : `int`
        Total number of candidate pixels (sum of box areas).

    Returns
    -------
    pixel_locations : ``(n_pixels, 2)`` `ndarray` of int
    tri_indices : ``(n_pixels,)`` `ndarray` of int
    """
    start = np.asarray(start, dtype=np.int64)
    end = np.asarray(end, dtype=np.int64)
    extent = np.maximum(end - start, 0)
    areas = extent[:, 0] * extent[:, 1]
    total = int(areas.sum())
    tri_indices = np.repeat(np.arange(len(start)), areas)
    offsets = np.arange(total) - np.repeat(np.cumsum(areas) - areas, areas)
    h = extent[tri_indices, 1]
    h = np.where(h == 0, 1, h)
    locations = np.empty((total, 2), dtype=np.int64)
    locations[:, 0] = start[tri_indices, 0] + offsets // h
    locations[:, 1] = start[tri_indices, 1] + offsets % h
    if n_pixels != total:  # keep menpo3d's contract: n_pixels rows
        locations = locations[:n_pixels]
        tri_indices = tri_indices[:n_pixels]
    return locations, tri_indices


def _fix_menpo3d_rasteriser():
    try:
        import menpo3d.rasterize.cpu as cpu
    except Exception:  # menpo3d missing or broken: nothing to patch
        return
    try:
        cpu.pixels_to_check(np.array([[0, 0]]), np.array([[1, 1]]), 1)
    except (NameError, TypeError, ValueError):
        cpu.pixels_to_check = pixels_to_check_numpy


def _fix_menpofit():
    try:
        import menpofit.error.stats as stats
        import menpofit.error as err
    except Exception:  # pragma: no cover
        return
    original = stats.compute_cumulative_error
    if getattr(original, "_densereg_fixed", False):
        return

    @functools.wraps(original)
    def compute_cumulative_error(errors, bins):
        return original(np.asarray(errors, dtype=float), np.asarray(bins, dtype=float))

    compute_cumulative_error._densereg_fixed = True
    stats.compute_cumulative_error = compute_cumulative_error
    if hasattr(err, "compute_cumulative_error"):
        err.compute_cumulative_error = compute_cumulative_error


def _pupil_error(n_points, left, right):
    def error(shape, gt_shape):
        for what, s in (("Final", shape), ("Ground truth", gt_shape)):
            if s.n_points != n_points:
                raise ValueError(f"{what} shape must have {n_points} points")
        p, g = shape.points, gt_shape.points
        norm = np.linalg.norm(g[left].mean(axis=0) - g[right].mean(axis=0))
        return float(np.linalg.norm(p - g, axis=1).mean() / norm)

    error.__name__ = f"mean_pupil_{n_points}_error"
    error.__doc__ = (
        f"Mean Euclidean error of {n_points} points normalised by the distance "
        "between the mean eye points (pupils)."
    )
    return error


def _fix_menpofit_pupil_errors():
    try:
        import menpofit.error as err
        import menpofit.error.human as human
        import menpofit.error.human.face as face
    except Exception:  # pragma: no cover
        return
    fixed = {
        "mean_pupil_68_error": _pupil_error(68, slice(36, 42), slice(42, 48)),
        "mean_pupil_49_error": _pupil_error(49, slice(19, 25), slice(25, 31)),
    }
    for module in (err, human, face):
        for name, fn in fixed.items():
            if hasattr(module, name):
                setattr(module, name, fn)


def _dlib_full_object_detection_to_pointcloud(full_object_detection):
    """menpofit's dlib conversion without ``np.vstack`` of a generator."""
    from menpo.shape import PointCloud

    parts = [(p.y, p.x) for p in full_object_detection.parts()]
    return PointCloud(np.asarray(parts, dtype=float).reshape(-1, 2), copy=False)


def _fix_menpofit_dlib():
    # patch the modules as they are loaded (algorithm imports the name from conversion)
    for name in ("menpofit.dlib.conversion", "menpofit.dlib.algorithm"):
        module = sys.modules.get(name)
        if module is not None and hasattr(
            module, "dlib_full_object_detection_to_pointcloud"
        ):
            module.dlib_full_object_detection_to_pointcloud = (
                _dlib_full_object_detection_to_pointcloud
            )


#: module name -> fixes run right after that module is first imported
POST_IMPORT_FIXES = {
    "scipy.integrate": (_fix_scipy,),
    "PIL.Image": (_fix_pillow,),
    "menpofit.error": (_fix_menpofit, _fix_menpofit_pupil_errors),
    "menpofit.dlib.conversion": (_fix_menpofit_dlib,),
    "menpofit.dlib.algorithm": (_fix_menpofit_dlib,),
    "menpo3d.rasterize.cpu": (_fix_menpo3d_rasteriser,),
}


class _PostImportHook(importlib.abc.MetaPathFinder):
    """A ``sys.meta_path`` finder that runs fixes after a module's first import.

    It finds nothing itself: for a watched name it asks the finders behind it for the
    spec and wraps the loader's ``exec_module`` so that the fixes run once the module
    has executed (and before the importing statement gets it).
    """

    def __init__(self, fixes):
        self.fixes = dict(fixes)
        self._busy = threading.local()

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in self.fixes or getattr(self._busy, "name", None) == fullname:
            return None
        self._busy.name = fullname
        try:
            spec = None
            for finder in sys.meta_path:
                if finder is self or not hasattr(finder, "find_spec"):
                    continue
                spec = finder.find_spec(fullname, path, target)
                if spec is not None:
                    break
        finally:
            self._busy.name = None
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        exec_module = getattr(loader, "exec_module", None)
        if exec_module is None:  # pragma: no cover - legacy loaders
            return spec
        fixes = self.fixes[fullname]

        def exec_and_fix(module):
            try:
                exec_module(module)
            finally:  # a loader may be shared: unwrap it after this one module
                loader.__dict__.pop("exec_module", None)
            if getattr(module, "__name__", None) == fullname:
                _run_fixes(fixes)

        try:
            loader.exec_module = exec_and_fix
        except (AttributeError, TypeError):  # pragma: no cover - read-only loader
            return spec
        return spec


def _run_fixes(fixes):
    for fix in fixes:
        fix()


_HOOK = None


def apply():
    """Apply every fix (idempotent): numpy now, the others at their module's import."""
    global _APPLIED, _HOOK
    if _APPLIED:
        return
    _fix_numpy()
    _HOOK = _PostImportHook(POST_IMPORT_FIXES)
    sys.meta_path.insert(0, _HOOK)
    for name, fixes in POST_IMPORT_FIXES.items():
        if name in sys.modules:
            _run_fixes(fixes)
    _APPLIED = True
