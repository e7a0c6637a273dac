"""Is a candidate better than the shipped model? Paired differences with intervals.

Usage::

    python benchmarks/paired_compare.py out/heldout/per_image.csv \
        --reference "MDM[mdm-face]" --candidate "MDM[_mdm8]" [--boxes detector]

Reads the ``per_image.csv`` of ``benchmarks/heldout_people.py`` (a candidate and the
shipped model side by side in one run, e.g. ``--mdm mdm-face --mdm fitters/_mdm8``).
For every set and every method whose name contains ``--reference``, it pairs each image
with the same image under the method named with ``--candidate`` in its place, and prints
the mean NME difference (candidate - reference, in points of %) and its 95 % bootstrap
interval over *people* (``menpo_densereg.evaluation.metrics.paired_difference``): the
frames of one ytf68 person form one group (``menpo_densereg.data.splits.person_of``), any
other image is its own. A verdict column says ``better`` / ``worse`` when the interval
excludes 0 and ``tie`` otherwise. On 7 faces68 images differences of 0.05 points are
usually ties; read the table before the means.
"""

import argparse
import csv
import math
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from menpo_densereg.data.splits import person_of
from menpo_densereg.evaluation.metrics import paired_difference


def _group(image):
    if "ytf68" in str(image):
        try:
            return person_of(image)
        except ValueError:
            pass
    return str(image)


def compare(rows, reference, candidate, boxes="detector", n_boot=4000):
    """``[(set, method, n images, n groups, mean, lo, hi)]`` in points of NME %."""
    by = defaultdict(dict)  # (set, method) -> image -> nme
    for r in rows:
        if r["boxes"] != boxes:
            continue
        by[(r["set"], r["method"])][r["image"]] = float(r["nme"])
    out = []
    for (s, method), ref in by.items():
        if reference not in method:
            continue
        cand = by.get((s, method.replace(reference, candidate)))
        if not cand:
            continue
        images = [
            i
            for i in ref
            if i in cand and math.isfinite(ref[i]) and math.isfinite(cand[i])
        ]
        if not images:
            continue
        a = np.array([ref[i] for i in images]) * 100
        b = np.array([cand[i] for i in images]) * 100
        groups = [_group(i) for i in images]
        mean, lo, hi = paired_difference(a, b, groups, n_boot=n_boot)
        out.append((s, method, len(images), len(set(groups)), mean, lo, hi))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("csv", type=Path, help="per_image.csv of heldout_people.py")
    ap.add_argument("--reference", required=True, help='e.g. "MDM[mdm-face]"')
    ap.add_argument("--candidate", required=True, help='e.g. "MDM[_mdm8]"')
    ap.add_argument("--boxes", default="detector", choices=["gt", "detector"])
    ap.add_argument("--n-boot", type=int, default=4000)
    args = ap.parse_args(argv)
    if not args.csv.is_file():
        sys.exit(f"{args.csv}: no such file (run benchmarks/heldout_people.py first)")
    with open(args.csv, newline="") as f:
        rows = list(csv.DictReader(f))
    missing = {"set", "image", "boxes", "method", "nme"} - set(rows[0] if rows else {})
    if missing:
        sys.exit(f"{args.csv}: not a heldout_people.py table (no {sorted(missing)})")
    table = compare(rows, args.reference, args.candidate, args.boxes, args.n_boot)
    if not table:
        sys.exit(
            f"{args.csv}: no method pairs '{args.reference}' / '{args.candidate}' "
            f"with {args.boxes} boxes"
        )
    print(
        f"{args.candidate} - {args.reference}, {args.boxes} boxes, NME points of %, "
        "95 % bootstrap interval over people"
    )
    print(
        "| set | method (reference) | images | groups | diff | 95 % interval | verdict |"
    )
    print("|---|---|---|---|---|---|---|")
    for s, method, n, g, mean, lo, hi in table:
        verdict = "better" if hi < 0 else "worse" if lo > 0 else "tie"
        print(
            f"| {s} | {method} | {n} | {g} | {mean:+.3f} | "
            f"[{lo:+.3f}, {hi:+.3f}] | {verdict} |"
        )


if __name__ == "__main__":
    main()
