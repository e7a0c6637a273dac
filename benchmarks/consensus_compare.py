"""Two consensus-label caches of the same pools side by side: how the checks agree.

Usage::

    python benchmarks/consensus_compare.py [--pool unlabelled_lfw --pool unlabelled_utk] \\
        [--old dlib-ert --old densereg-aam-face] \\
        [--new dlib-ert --new densereg-decafa-mdm-face] [--max-nme 0.05]

Reads the largest cache of each labeller pair (nothing is labelled: run
``benchmarks/consensus_pools.py`` first) and prints, per pool, the median disagreement
with the label (the first labeller) of each check, split by whether the *old* pair kept
the face. The faces the old pair rejected were in no training set of the shipped models
(every recipe trained on kept faces only), so the new check's agreement there is not
memory of its training labels. Also the faces both pairs keep, and the distance between
the two checks' shapes.
"""

import argparse
import json
from pathlib import Path

import numpy as np

import menpo_densereg  # noqa: F401

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def _records(pool, names):
    from menpo_densereg.data.pseudolabels import consensus_cache
    from menpo_densereg.fitting.labellers import cached_consensus_versions

    versions = cached_consensus_versions(pool, names)
    if versions is None:
        raise SystemExit(f"{pool.name}: no consensus cache of {names}")
    folder = consensus_cache(pool, {n: versions[n] for n in names})
    out = {}
    for f in folder.glob("*.json"):
        if f.name == "provenance.json":
            continue
        rec = json.loads(f.read_text())
        if rec.get("status") == "ok":
            out[f.stem] = rec
    return out, versions


def _iod_nme(a, b):
    from menpo.shape import PointCloud

    from menpo_densereg.evaluation.metrics import nme

    return float(
        nme(PointCloud(np.asarray(a, float)), PointCloud(np.asarray(b, float)))
    )


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pool", action="append", default=None)
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--old", action="append", default=None)
    ap.add_argument("--new", action="append", default=None)
    ap.add_argument("--max-nme", type=float, default=0.05)
    args = ap.parse_args(argv)
    old = tuple(args.old or ("dlib-ert", "densereg-aam-face"))
    new = tuple(args.new or ("dlib-ert", "densereg-decafa-mdm-face"))
    t = args.max_nme
    print(f"old check {old[1:]}, new check {new[1:]}, threshold {100 * t:g} %\n")
    print(
        "| pool | faces in both | old kept: median old / new disagreement % "
        "| old rejected (n): median old / new % | new keeps of old rejected "
        "| kept by both | new check vs old check, median % |"
    )
    print("|---|---|---|---|---|---|---|")
    for pool in args.pool or ["unlabelled_lfw", "unlabelled_utk"]:
        folder = Path(args.data).resolve() / pool
        a, _ = _records(folder, old)
        b, _ = _records(folder, new)
        common = sorted(set(a) & set(b))
        e_old = np.array([a[k]["nme"] for k in common])
        e_new = np.array([b[k]["nme"] for k in common])
        checks = np.array(
            [_iod_nme(b[k]["shapes"][new[1]], a[k]["shapes"][old[1]]) for k in common]
        )
        kept = e_old <= t
        rej = ~kept
        print(
            f"| {pool} | {len(common)} | {100 * np.median(e_old[kept]):.2f} / "
            f"{100 * np.median(e_new[kept]):.2f} | ({rej.sum()}) "
            f"{100 * np.median(e_old[rej]):.2f} / {100 * np.median(e_new[rej]):.2f} "
            f"| {int((e_new[rej] <= t).sum())} ({100 * np.mean(e_new[rej] <= t):.0f} %) "
            f"| {int((kept & (e_new <= t)).sum())} | {100 * np.median(checks):.2f} |"
        )


if __name__ == "__main__":
    main()
