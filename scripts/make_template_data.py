"""Regenerate ``menpo_densereg/data/face_template.npz`` from menpo3d's template assets.

Usage: ``python scripts/make_template_data.py [--grid 90]``

The light face template, its UV space (cylindrical unwrap) and the labellings (landmark
markups, face parts, marching contours) are built deterministically from menpo3d's
``template.ply`` and ``template.ljson`` (see :mod:`menpo_densereg.template.face`).
"""

import argparse
import os

import numpy as np

import menpo_densereg  # noqa: F401  (compat fixes first)
from menpo_densereg.atomic import atomic_path
from menpo_densereg.template.face import DATA_FILE, FaceTemplate, build_template_data


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", type=int, default=90, help="UV clustering grid")
    parser.add_argument("--out", default=str(DATA_FILE))
    args = parser.parse_args()
    data = build_template_data(grid=args.grid)
    with atomic_path(args.out) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **data)
        os.chmod(tmp, 0o644)  # package data: world-readable
    print(FaceTemplate.load(args.out))


if __name__ == "__main__":
    main()
