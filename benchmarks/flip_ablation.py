"""Test-time flip averaging on and off, per fitter, on held-out people (GT boxes).

Usage::

    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/flip_ablation.py [--per-person 5]
        [--large-pose 40] [--mdm-steps 3 4 5 6]

Sets: ``heldout_people.py``'s (faces68 lfpw + helen, ``--per-person`` frames of every
held-out ytf68 person, ``--large-pose`` data-engine re-renders of held-out people at
45-90° of yaw). The box is the tight landmark box for everyone, so that only the flip
differs. Rows: DenseReg's raw and PCA read-outs, DeCaFA, and MDM (``mdm-face``) after
the flip-averaged DenseReg+PCA start, each with ``flip`` off and on, plus MDM with
``--mdm-steps`` GRU steps at fit time (flip on). NME by the outer eye corners (large
pose: by the GT box's mean edge). Prints mean NME % per set and the median ms per fit.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import heldout_people as hp  # noqa: E402

import menpo_densereg  # noqa: E402, F401  (compat fixes before the models load)


def build_rows(mdm_steps):
    """``{row name: (fitter, start fitter or None)}``; a start fitter's output is the
    row's ``fit_from_shape`` start (the MDM rows), else the row fits from the box."""
    from menpo_densereg.decafa.initialiser import DecafaInitialiser
    from menpo_densereg.densereg.initialiser import DenseRegInitialiser
    from menpo_densereg.mdm.fitter import MDMFitter
    from menpo_densereg.fitting.registry import load_fitter

    fitters = hp.REPO / "fitters"
    rows = {}
    for flip in (False, True):
        tag = "flip" if flip else "no flip"
        rows[f"DenseReg raw, {tag}"] = (
            DenseRegInitialiser.from_fitter_dir(fitters / "densereg-face", flip=flip),
            None,
        )
        rows[f"DenseReg+PCA, {tag}"] = (
            DenseRegInitialiser.from_fitter_dir(
                fitters / "densereg-face-pca", flip=flip
            ),
            None,
        )
        rows[f"DeCaFA, {tag}"] = (
            DecafaInitialiser.from_fitter_dir(fitters / "decafa-face", flip=flip),
            None,
        )
    start = rows["DenseReg+PCA, flip"][0]
    mdm = load_fitter("mdm-face")
    trained = mdm.net.config["steps"]
    for flip in (False, True):
        tag = "flip" if flip else "no flip"
        rows[f"MDM ({trained} steps) after DenseReg+PCA flip, {tag}"] = (
            MDMFitter(mdm.net, mdm.mean_shape, flip=flip),
            start,
        )
    for steps in mdm_steps:
        if steps != trained:
            rows[f"MDM ({steps} steps) after DenseReg+PCA flip, flip"] = (
                MDMFitter(mdm.net, mdm.mean_shape, steps=steps, flip=True),
                start,
            )
    return rows


def main(argv=None):
    from tqdm.auto import tqdm

    from menpo_densereg.data.boxes import box_from_landmarks
    from menpo_densereg.evaluation.metrics import nme

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=hp.DATA)
    ap.add_argument("--per-person", type=int, default=5)
    ap.add_argument("--large-pose", type=int, default=40)
    ap.add_argument("--mdm-steps", type=int, nargs="*", default=[3, 5, 6])
    args = ap.parse_args(argv)
    if not args.data.is_dir():
        sys.exit(f"--data {args.data}: not a folder (../shared/data is needed)")
    sets = hp.held_out_sets(
        args.data.resolve(), per_person=args.per_person, large_pose=args.large_pose
    )
    rows = build_rows(args.mdm_steps)
    errors = {(r, s): [] for r in rows for s in sets}
    times = {r: [] for r in rows}
    for set_name, items in sets.items():
        kind = "box" if set_name == hp.LARGE_POSE else None
        for im in tqdm(hp._load(items), desc=set_name):
            gt = im.landmarks["PTS"]
            box = box_from_landmarks(gt)
            starts = {}
            for name, (fitter, start) in rows.items():
                t0 = time.perf_counter()
                if start is None:
                    res = fitter.fit_from_bb(im, box)
                else:
                    if id(start) not in starts:
                        starts[id(start)] = start.fit_from_bb(im, box).final_shape
                    t0 = time.perf_counter()
                    res = fitter.fit_from_shape(im, starts[id(start)])
                times[name].append(1000 * (time.perf_counter() - t0))
                errors[(name, set_name)].append(
                    100 * nme(res.final_shape, gt, kind=kind)
                )
    short = {s: "large pose" if s == hp.LARGE_POSE else s.split(" ")[0] for s in sets}
    head = "| row | " + " | ".join(f"{short[s]} ({len(sets[s])})" for s in sets)
    print("\nGT boxes, mean NME % (large pose by the GT box's mean edge)\n")
    print(head + " | ms/fit (median) |")
    print("|---" * (len(sets) + 2) + "|")
    for name in rows:
        cells = " | ".join(f"{np.mean(errors[(name, s)]):.2f}" for s in sets)
        print(f"| {name} | {cells} | {np.median(times[name]):.1f} |")


if __name__ == "__main__":
    main()
