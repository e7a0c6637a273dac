"""Fit the detector-box -> landmark-box calibrations on training people only.

Usage::

    OMP_NUM_THREADS=1 python scripts/fit_box_calibration.py [--data ../shared/data]
        [--synthetic 60] [--every 2] [--out menpo_densereg/data/detector_calibration.json]

The fitting faces are one frame of every other ``ytf68`` *training* person (the split of
:mod:`menpo_densereg.data.splits`; the held-out people are never used) plus re-renders
of training people at |yaw| <= 90° by the data engine (so that profile detections get a
calibration too). Each detector (``hog``, ``mmod``, ``haar``) runs on every face; its
detection that best overlaps the tight landmark box (IoU >= 0.3) makes a pair, and
:func:`menpo_densereg.data.detectors.fit_calibration` fits the 4 numbers (centre
offset and size ratio, ``(y, x)``, in units of the detector box) per detection name
(``haar`` and ``haar-profile`` separately; the mirrored profile pass is mirrored back
into ``haar-profile``). Pairs are re-matched once with the first calibration (IoU >= 0.5)
and refitted. The result is written atomically as JSON with the number of pairs and
the mean IoU before and after, and printed.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def training_frames(folder):
    """One (middle) frame of every ytf68 training person, ``_t`` variants excluded."""
    from menpo_densereg.data.splits import person_of, split_files

    train, _ = split_files(folder, "ytf68")
    by_person = {}
    for p in train:
        if p.stem.endswith("_t") or not p.with_suffix(".pts").is_file():
            continue
        by_person.setdefault(person_of(p), []).append(p)
    return [v[len(v) // 2] for _, v in sorted(by_person.items())]


def _mirror(box):
    from menpo.shape import bounding_box

    lo, hi = box.points.min(0), box.points.max(0)
    return bounding_box((lo[0], -hi[1]), (hi[0], -lo[1]))


def pairs_by_name(items, found, calibrations=None, min_iou=0.3):
    """``{detection name: ([detector boxes], [landmark boxes])}`` of matched faces."""
    from menpo_densereg.data.boxes import box_iou

    out = {}
    for key, _, gt in items:
        for n in ("hog", "mmod", "haar"):
            dets = found[key][n][0]
            if not dets:
                continue
            boxes = [
                (
                    calibrations[d.detector](d.box)
                    if calibrations and d.detector in calibrations
                    else d.box
                )
                for d in dets
            ]
            iou = [box_iou(b, gt) for b in boxes]
            j = int(np.argmax(iou))
            if iou[j] < min_iou:
                continue
            d = dets[j]
            name, box, lm = d.detector, d.box, gt
            if name.endswith("-mirrored"):
                name, box, lm = name[: -len("-mirrored")], _mirror(box), _mirror(gt)
            pair = out.setdefault(name, ([], []))
            pair[0].append(box)
            pair[1].append(lm)
    return out


def main(argv=None):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import menpo_densereg  # noqa: F401
    from detectors import real_items, synthetic_items  # benchmarks/detectors.py

    from menpo_densereg.atomic import atomic_write_text
    from menpo_densereg.data.boxes import box_iou
    from menpo_densereg.data.detectors import (
        CALIBRATION_FILE,
        fit_calibration,
        scan_detections,
    )

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(ROOT / ".." / "shared" / "data"))
    p.add_argument("--synthetic", type=int, default=60)
    p.add_argument("--every", type=int, default=2, help="use every n-th person")
    p.add_argument("--out", default=str(CALIBRATION_FILE))
    p.add_argument("--cache", default="out/detectors/calibration_cache.jsonl")
    args = p.parse_args(argv)
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass
    frames = training_frames(Path(args.data) / "ytf68")[:: args.every]
    items = real_items(frames)
    if args.synthetic:
        items += synthetic_items(
            frames[:: max(1, len(frames) // 40)],
            args.synthetic,
            seed=7,
            yaw=(0.0, 90.0),
            tag="-train",
        )
    found = scan_detections(
        [(k, ld) for k, ld, _ in items], ("hog", "mmod", "haar"), cache=args.cache
    )
    first = {
        n: fit_calibration(*pr)
        for n, pr in pairs_by_name(items, found).items()
        if len(pr[0]) >= 5
    }
    pairs = pairs_by_name(items, found, first, min_iou=0.5)
    result = {}
    for n, (det, lm) in sorted(pairs.items()):
        if len(det) < 5:
            print(f"{n}: only {len(det)} pairs, not calibrated", file=sys.stderr)
            continue
        cal = fit_calibration(det, lm)
        before = float(np.mean([box_iou(d, g) for d, g in zip(det, lm)]))
        after = float(np.mean([box_iou(cal(d), g) for d, g in zip(det, lm)]))
        result[n] = {
            "offset": [round(v, 4) for v in cal.offset],
            "scale": [round(v, 4) for v in cal.scale],
            "pairs": len(det),
            "mean_iou_before": round(before, 3),
            "mean_iou_after": round(after, 3),
        }
        print(f"{n:>13}: {cal}  ({len(det)} pairs, IoU {before:.3f} -> {after:.3f})")
    doc = {
        "format": 1,
        "what": (
            "detector box -> tight box of the 68 landmarks: centre += offset * size, "
            "size *= scale; (y, x), in units of the detector box"
        ),
        "fitted_on": (
            f"{len(frames)} ytf68 training-person frames (one per person, every "
            f"{args.every}-th person by name, "
            f"menpo_densereg.data.splits) + {args.synthetic} data-engine re-renders of "
            "training people at |yaw| <= 90 deg; scripts/fit_box_calibration.py"
        ),
        "detectors": result,
    }
    atomic_write_text(args.out, json.dumps(doc, indent=2) + "\n")
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
