"""Where the package caches what it builds (AAMs, pseudo-labels, training runs).

This module sits below everything that caches: it imports nothing from the package, so
that any module can ask for :func:`cache_dir` without an import cycle.
"""

import os
from pathlib import Path

__all__ = ["cache_dir"]


def cache_dir():
    """Where built models are cached (``$MENPO_DENSEREG_CACHE`` or ``~/.cache``).

    Returns
    -------
    path : `Path`
        The cache folder (not created here).
    """
    env = os.environ.get("MENPO_DENSEREG_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "menpo-densereg"
