"""Does a refiner help its learned start at every head yaw? Renders of TRAINING people.

Usage::

    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/refiner_by_yaw.py [-n 240]
        [--refiner aam-face] [--seed 4242]

Re-renders (data engine, ``benchmarks/detectors.py``'s ``synthetic_items``) of training
people only (``faces68/afw`` and one frame of every 6th ``ytf68`` training person; no
benchmark set) at 0-90 degrees of yaw, fitted from the tight landmark box by each learned
initialiser alone and followed by ``--refiner``. Prints the mean NME (GT box mean edge,
%) per bin of the yaw *estimated from the start* (:func:`menpo_densereg.fitting.
composition.estimate_yaw`: what a chain's ``refine_max_yaw`` sees), so the bin where the
refiner starts to hurt chooses that threshold without looking at a benchmark set.
"""

import argparse
import sys
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
BINS = ((0, 20), (20, 30), (30, 40), (40, 50), (50, 60), (60, 75), (75, 95))


def training_sources(data):
    """AFW photographs and one frame of every 6th ytf68 training person."""
    from menpo_densereg.data.splits import person_of, split_files

    train, _ = split_files(data / "ytf68")
    seen, ytf = set(), []
    for p in sorted(train):
        if Path(p).with_suffix(".pts").is_file() and person_of(p) not in seen:
            seen.add(person_of(p))
            ytf.append(p)
    afw = sorted(
        p
        for p in (data / "faces68" / "afw").glob("*.jpg")
        if p.with_suffix(".pts").is_file()
    )
    return afw + ytf[::6]


def main(argv=None):
    import torch

    import menpo_densereg  # noqa: F401
    from menpo_densereg.data.boxes import box_from_landmarks
    from menpo_densereg.evaluation.metrics import nme
    from menpo_densereg.fitting.composition import InitialisedFitter, estimate_yaw
    from menpo_densereg.fitting.registry import load_fitter

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=240, help="renders")
    ap.add_argument("--refiner", default="aam-face")
    ap.add_argument("--seed", type=int, default=4242)
    ap.add_argument("--data", default=str(DATA))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    data = Path(args.data).resolve()
    if not data.is_dir():
        raise SystemExit(f"--data: {data} not found")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from detectors import synthetic_items

    items = synthetic_items(
        training_sources(data), args.n, seed=args.seed, yaw=(0.0, 90.0), tag="-train"
    )
    refiner = load_fitter(args.refiner)
    inits = {n: load_fitter(n) for n in ("densereg-face", "decafa-face")}
    rows = {n: [] for n in inits}
    for _, load, _ in items:
        im = load()
        gt = im.landmarks["PTS"]
        box = box_from_landmarks(gt)
        for n, ini in inits.items():
            start = ini.fit_from_bb(im, box).final_shape
            chain = InitialisedFitter(ini, refiner)
            final = chain.fit_from_bb(im, box).final_shape
            yaw = estimate_yaw(start)
            rows[n].append(
                (
                    abs(yaw) if yaw is not None else np.nan,
                    nme(start, gt, kind="box"),
                    nme(final, gt, kind="box"),
                )
            )
    print(f"{len(items)} renders of training people; refiner {args.refiner}")
    print("| start | estimated |yaw| | n | start NME % | + refiner NME % |")
    print("|---|---|---|---|---|")
    for n, r in rows.items():
        r = np.array(r, float)
        for lo, hi in BINS:
            m = (r[:, 0] >= lo) & (r[:, 0] < hi)
            if m.any():
                print(
                    f"| {n} | {lo}-{hi} | {int(m.sum())} | {100 * r[m, 1].mean():.2f} "
                    f"| {100 * r[m, 2].mean():.2f} |"
                )


if __name__ == "__main__":
    main()
