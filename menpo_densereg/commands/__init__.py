"""Command modules of the ``menpo-densereg`` CLI (see :mod:`menpo_densereg.cli`)."""
