"""The ear experiment (DenseReg §4.7, Table 4) on the held-out ears of ../shared/data/ears55.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/ears.py [--data ../shared/data/ears55] \
        [--out /tmp/ears_benchmark] [--fitter NAME ...] [--threads 1]

Every fitter starts from the tight ground-truth box of each held-out ear (the fixed split
of ``menpo_densereg.densereg.ear.EAR_HELD_OUT``: the 21 readable ears sorted by name,
every third held out -> 7 ears) and is scored with
:func:`menpo_densereg.evaluation.benchmark.run_benchmark`: NME normalised by the average edge of the
GT box (the paper's ear protocol), AUC@0.08/0.10, FR@0.08/0.10 and fits per second
(whole chain, one thread, after a warm-up fit). A second table gives, for the chains,
the error of the initialiser's shape and of the refined shape. The table, per-image CSV,
summary JSON and the CED plot (``ced_gt_ear55.png``) are written to ``--out``.
"""

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROWS = [
    ("box+AAM", "box-aam-ear"),
    ("box+MDM", "box-mdm-ear"),
    ("DenseReg-ear", "densereg-ear"),
    ("DenseReg-ear+PCA", "densereg-ear-pca"),
    ("DenseReg+AAM", "densereg-aam-ear"),
    ("DenseReg+MDM", "densereg-mdm-ear"),
]


def main(argv=None):
    import menpo_densereg  # noqa: F401
    import torch

    from menpo_densereg.evaluation.benchmark import run_benchmark
    from menpo_densereg.densereg.ear import EAR_HELD_OUT, ear_split, load_ears
    from menpo_densereg.fitting.base import box_from_shape
    from menpo_densereg.fitting.registry import load_fitter

    here = Path(__file__).resolve().parents[1]
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(here.parent / "shared" / "data" / "ears55"))
    p.add_argument("--out", default=None, help="output folder (default: a temp folder)")
    p.add_argument(
        "--fitter",
        "-f",
        action="append",
        dest="fitters",
        help="LABEL=FITTER or FITTER (default: the six Table-4 rows)",
    )
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if not Path(args.data).is_dir():
        print(f"{args.data}: not found (the ear data lives in ../shared/data/ears55)")
        return 1
    rows = ROWS
    if args.fitters:
        rows = [tuple(f.split("=", 1)) if "=" in f else (f, f) for f in args.fitters]
    _, test = ear_split(load_ears(args.data), EAR_HELD_OUT)
    fitters = {label: load_fitter(name) for label, name in rows}
    for f in fitters.values():  # warm-up (first torch call, lazy imports)
        gt = test[0].landmarks["ear55"]
        f.fit_from_bb(test[0], box_from_shape(gt))
    res = run_benchmark(fitters, test, boxes=("gt",), progress=False)
    out = Path(args.out or tempfile.mkdtemp(prefix="ears_benchmark_"))
    paths = res.write(out, max_error=0.25)
    print(
        f"{len(test)} held-out ears ({', '.join(EAR_HELD_OUT)}); GT boxes; "
        f"NME / average edge of the GT box"
    )
    print(res.table())
    print("\nchains: initialiser -> refined (mean NME)")
    for label, _ in rows:
        recs = [r for r in res.records if r.method == label and not r.error]
        if recs and hasattr(fitters[label], "refiner"):
            e0 = np.array([r.initial_nme for r in recs])
            e1 = np.array([r.nme for r in recs])
            print(
                f"  {label:<18} {e0.mean():.4f} -> {e1.mean():.4f}  "
                f"(improved on {int((e1 < e0).sum())}/{len(recs)} ears)"
            )
    print("\nwritten:", ", ".join(str(v) for v in paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
