"""Consensus pseudo-labels of the unlabelled pools: how many faces each pool yields.

Usage::

    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/consensus_pools.py \
        [--pool unlabelled_lfw --pool unlabelled_utk] [--max-nme 0.05] [--limit N] \
        [--labeller dlib-ert --labeller densereg-decafa-mdm-face]

Labels the *training* side of each pool (``menpo_densereg.data.splits``: LFW images of
held-out people are skipped) with dlib's ERT and the ``densereg-aam-face`` chain (or the
``--labeller`` names, in order: the first one's shape is the label) from one dlib HOG
detection, caches every record (resumable), and prints per pool: images,
no detection, kept at the threshold, kept fraction, median disagreement, labelling time,
plus the kept fraction at a few other thresholds.
"""

import argparse
from pathlib import Path

import menpo.io  # noqa: F401  (before the lazy model loads: Pillow plugins)
import numpy as np

import menpo_densereg  # noqa: F401

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def main(argv=None):
    import torch

    from menpo_densereg.data.pseudolabels import consensus_pseudo_labels
    from menpo_densereg.fitting.labellers import DEFAULT_LABELLERS, consensus_labellers
    from menpo_densereg.data.splits import split_files

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pool", action="append", default=None)
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--max-nme", type=float, default=0.05)
    ap.add_argument(
        "--limit",
        type=int,
        default=None,
        help="label at most N training images per pool, evenly spread over the pool "
        "(file names are sorted by age in UTK and by name in LFW)",
    )
    ap.add_argument(
        "--labeller",
        action="append",
        default=None,
        help="labeller names in order (default: dlib-ert, densereg-aam-face); the "
        "first one's shape is the label, the others check it",
    )
    ap.add_argument(
        "--cached-only",
        action="store_true",
        help="summarise what is cached, label nothing (an interrupted pool)",
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    labellers, versions = consensus_labellers(
        tuple(args.labeller) if args.labeller else DEFAULT_LABELLERS
    )
    rows = []
    for pool in args.pool or ["unlabelled_lfw", "unlabelled_utk"]:
        folder = Path(args.data).resolve() / pool
        train, held = split_files(folder)
        files = list(train)
        if args.limit and args.limit < len(files):
            pick = np.linspace(0, len(files) - 1, args.limit).round().astype(int)
            files = [files[i] for i in pick]
        kw = dict(files=files, label_missing=not args.cached_only)
        kw.update(labellers=labellers, versions=versions)
        # every labelled face once (no threshold), then the counts at --max-nme
        faces, s = consensus_pseudo_labels(folder, max_nme=1e9, **kw)
        errs = np.array([e for _, _, e in faces])
        n_kept = int(np.sum(errs <= args.max_nme))
        s.update(
            max_nme=float(args.max_nme),
            n_kept=n_kept,
            kept_fraction=n_kept / s["n_labelled"] if s["n_labelled"] else 0.0,
        )
        at = {t: float(np.mean(errs <= t)) for t in (0.03, 0.04, 0.05, 0.06, 0.08)}
        rows.append((s, len(held), at, len(train)))
    print(
        "\n| pool | labelled of training images (held-out) | no face | kept | kept % "
        "| median NME % | labelling s | kept % at 3 / 4 / 5 / 6 / 8 % |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for s, n_held, at, n_train in rows:
        print(
            f"| {s['pool']} | {s['n_images']} of {n_train} ({n_held}) "
            f"| {s['n_no_face']} "
            f"| {s['n_kept']} | {100 * s['kept_fraction']:.1f} "
            f"| {100 * s['median_nme']:.2f} | {s['label_seconds']} | "
            + " / ".join(f"{100 * v:.0f}" for v in at.values())
            + " |"
        )
    print(f"threshold {rows[0][0]['max_nme']}, labellers {rows[0][0]['labellers']}")
    for s, *_ in rows:
        print(f"{s['pool']}: {s['versions']}  cache {s['cache']}")


if __name__ == "__main__":
    main()
