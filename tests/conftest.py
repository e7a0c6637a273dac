"""Shared fixtures. Tests that read ../shared/data skip cleanly when it is absent."""

import os
from pathlib import Path

import pytest

import menpo_densereg  # noqa: F401  (applies the compat fixes first)

os.environ.setdefault("MPLBACKEND", "Agg")

_DATA = Path(
    os.environ.get(
        "MENPO_DENSEREG_DATA",
        Path(__file__).resolve().parents[1] / ".." / "shared" / "data",
    )
).resolve()


@pytest.fixture(scope="session")
def shared_data():
    """Path to ../shared/data (real annotated images); skips when absent."""
    if not _DATA.is_dir():
        pytest.skip(f"shared data not available at {_DATA}")
    return _DATA
