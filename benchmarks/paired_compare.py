"""Is a candidate better than the shipped model? Paired differences with intervals.

Usage::

    python benchmarks/paired_compare.py out/heldout/per_image.csv \
        --reference "MDM[mdm-face]" --candidate "MDM[_mdm8]" [--boxes detector]

Reads the ``per_image.csv`` of ``benchmarks/heldout_people.py`` (a candidate and the
shipped model side by side in one run, e.g. ``--mdm mdm-face --mdm fitters/_mdm8``).
For every set and every method whose name contains ``--reference``, it pairs each image
with the same image under the method named with ``--candidate`` in its place, and prints
the mean NME difference (candidate - reference, in points of %) and its 95 % bootstrap
interval over *people* (``menpo_densereg.evaluation.paired``): the
frames of one ytf68 person form one group (``menpo_densereg.data.splits.person_of``), any
other image is its own. A verdict column says ``better`` / ``worse`` when the interval
excludes 0 and ``tie`` otherwise. On 7 faces68 images differences of 0.05 points are
usually ties; read the table before the means.
"""

import argparse
import csv
import sys
from pathlib import Path

from menpo_densereg.evaluation.paired import compare_methods, paired_table


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
    paired = compare_methods(
        rows, args.reference, args.candidate, args.boxes, args.n_boot
    )
    if not paired:
        sys.exit(
            f"{args.csv}: no method pairs '{args.reference}' / '{args.candidate}' "
            f"with {args.boxes} boxes"
        )
    print(paired_table(paired, args.reference, args.candidate, args.boxes), end="")


if __name__ == "__main__":
    main()
