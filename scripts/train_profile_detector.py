"""Train the ``profile`` face detector and fit its box calibration, on training people.

Usage::

    OMP_NUM_THREADS=1 python scripts/train_profile_detector.py [--data ../shared/data]
        [--renders 1500] [--val 120] [--C 5] [--seed 11]

dlib's HOG + MMOD detectors miss faces turned beyond ~60 degrees (README, *Face
detection*). This trains a dlib HOG + linear SVM detector (``dlib.
train_simple_object_detector``: a 64 x 64 window, a few seconds of training) on
data-engine re-renders at 40-90 degrees of yaw of *training* people only (one frame of
every ``ytf68`` training person, ``faces68/afw``, ``wflw98``'s training side;
:mod:`menpo_densereg.data.splits`), every face turned to the same side (the detector
also runs on the mirrored image). Its box is a square on the landmark box's centre with
the landmark box's height as side.

The source photographs are split by person into fitting (80 %) and validation people;
renders of the validation people give the reported recall and the ``profile``
calibration (its detections -> landmark boxes,
:func:`menpo_densereg.data.detectors.fit_calibration`), written into
``detector_calibration.json`` (that key only). The model is written atomically to
``menpo_densereg/data/profile_detector.svm`` (dlib's own binary format).
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def sources(data):
    """Training-side 68/98-point photographs: ``[(path, person)]``."""
    from menpo_densereg.data.splits import person_of, split_files

    train, _ = split_files(data / "ytf68")
    seen, out = set(), []
    for p in sorted(train):
        if Path(p).stem.endswith("_t") or not Path(p).with_suffix(".pts").is_file():
            continue
        if person_of(p) not in seen:
            seen.add(person_of(p))
            out.append((Path(p), person_of(p)))
    for sub in ("faces68/afw", "wflw98"):
        train, _ = split_files(data / sub)
        out += [
            (Path(p), Path(p).stem)
            for p in sorted(train)
            if Path(p).with_suffix(".pts").is_file()
        ]
    return out


def square_box(landmark_box):
    """``(centre, side)`` of the training square: the landmark box's height as side."""
    lo, hi = landmark_box.bounds()
    return (lo + hi) / 2, float((hi - lo)[0])


def main(argv=None):
    import dlib

    import menpo_densereg  # noqa: F401
    from menpo_densereg.atomic import atomic_path, atomic_write_text
    from menpo_densereg.data.detectors import (
        CALIBRATION_FILE,
        PROFILE_MODEL,
        DlibProfileDetector,
        box_iou,
        fit_calibration,
        image_to_uint8,
    )

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT / ".." / "shared" / "data"))
    ap.add_argument("--renders", type=int, default=1500)
    ap.add_argument("--val", type=int, default=120)
    ap.add_argument("--C", type=float, default=5.0)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--out", default=str(PROFILE_MODEL))
    ap.add_argument("--calibration", default=str(CALIBRATION_FILE))
    args = ap.parse_args(argv)
    data = Path(args.data).resolve()
    if not data.is_dir():
        raise SystemExit(f"--data: {data} not found")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from detectors import synthetic_items
    from fit_box_calibration import _mirror  # a box mirrored about x = 0 (scripts/)

    src = sources(data)
    people = sorted({p for _, p in src})
    rng = np.random.default_rng(args.seed)
    val_people = set(rng.permutation(people)[: len(people) // 5].tolist())
    fit_src = [p for p, who in src if who not in val_people]
    val_src = [p for p, who in src if who in val_people]
    print(f"{len(fit_src)} fitting / {len(val_src)} validation source photographs")
    t0 = time.time()
    fit_items = synthetic_items(
        fit_src, args.renders, seed=args.seed, yaw=(40.0, 90.0), tag="-ptrain"
    )
    val_items = synthetic_items(
        val_src, args.val, seed=args.seed + 1, yaw=(45.0, 90.0), tag="-pval"
    )
    print(
        f"rendered {len(fit_items)} + {len(val_items)} faces in {time.time() - t0:.0f} s"
    )
    images, boxes = [], []
    for key, load, box in fit_items:
        a = image_to_uint8(load())
        c, side = square_box(box)
        if float(key.rsplit("_yaw", 1)[1]) < 0:  # every face turned the same way
            a = np.ascontiguousarray(a[:, ::-1])
            c = np.array([c[0], a.shape[1] - 1 - c[1]])
        t, l = c - side / 2
        images.append(a)
        boxes.append([dlib.rectangle(int(l), int(t), int(l + side), int(t + side))])
    opt = dlib.simple_object_detector_training_options()
    opt.add_left_right_image_flips = False
    opt.detection_window_size = 64 * 64
    opt.C = args.C
    opt.num_threads = 1
    t0 = time.time()
    trained = dlib.train_simple_object_detector(images, boxes, opt)
    print(f"trained in {time.time() - t0:.0f} s (C = {args.C})")
    out = Path(args.out)
    with atomic_path(out) as tmp:
        trained.save(str(tmp))
    detector = DlibProfileDetector(model=out)
    pairs = []
    for _, load, box in val_items:
        found = detector(load())
        best = max(found, key=lambda d: box_iou(d.box, box), default=None)
        if best is not None and box_iou(best.box, box) >= 0.3:
            pairs.append((best, box))
    mirror = [(d.box, b) for d, b in pairs if d.detector.endswith("-mirrored")]
    direct = [(d.box, b) for d, b in pairs if not d.detector.endswith("-mirrored")]
    # mirrored detections are mirrored back: their x offset changes sign
    cal = fit_calibration(
        [d for d, _ in direct] + [_mirror(d) for d, _ in mirror],
        [b for _, b in direct] + [_mirror(b) for _, b in mirror],
    )
    ious_before = [box_iou(d.box, b) for d, b in pairs]
    ious_after = [
        box_iou((cal.mirrored() if d.detector.endswith("-mirrored") else cal)(d.box), b)
        for d, b in pairs
    ]
    n_hit = int(np.sum(np.array(ious_after) >= 0.5))
    print(
        f"validation renders of held-out training people (45-90 deg): calibrated "
        f"recall {n_hit}/{len(val_items)} = {n_hit / len(val_items):.3f}; "
        f"calibration {cal}"
    )
    path = Path(args.calibration)
    content = json.loads(path.read_text())
    content["detectors"]["profile"] = {
        "offset": [round(v, 4) for v in cal.offset],
        "scale": [round(v, 4) for v in cal.scale],
        "pairs": len(pairs),
        "mean_iou_before": round(float(np.mean(ious_before)), 3),
        "mean_iou_after": round(float(np.mean(ious_after)), 3),
        "fitted_on": (
            f"{len(val_items)} data-engine re-renders at 45-90 deg of yaw of validation "
            "training people; scripts/train_profile_detector.py"
        ),
    }
    atomic_write_text(path, json.dumps(content, indent=2) + "\n")
    print(f"wrote {out} and the 'profile' calibration in {path}")


if __name__ == "__main__":
    main()
