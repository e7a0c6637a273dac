"""Face fitters from dlib HOG's raw boxes, as a menpodetect user hands them over.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/raw_boxes.py [--per-person 5] \
        [--out out/raw_boxes] [FITTER ...]

The fitters are trained on the tight landmark box; ``detect()``, ``fit`` and
``benchmark`` map every detector's box to it (``detectors.calibrate_box``). A user who
runs dlib's HOG detector themselves (menpodetect's ``load_dlib_frontal_face_detector``)
and calls ``fit_from_bb(image, box)`` skips that step. This measures what it costs: on
the held-out sets of ``heldout_people.py`` (faces68 ``lfpw`` + ``helen``, ``--per-person``
frames of every held-out ``ytf68`` person), images where HOG finds the face (IoU >= 0.3
with the landmark box after calibration), each FITTER (default: the shipped face
initialisers and chains) from the calibrated box (each of dlib's HOG filters with its own
calibration, as ``detect()`` gives it) and from the raw box; dlib's ERT from its own raw
box for reference. NME by the outer eye corners, mean %.
"""

import argparse
import sys
from pathlib import Path

import numpy as np

import menpo_densereg  # noqa: F401  (compat fixes before the models load)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_FITTERS = (
    "densereg-face-pca",
    "decafa-face",
    "densereg-decafa-face",
    "densereg-mdm-face",
    "decafa-mdm-face",
    "densereg-decafa-mdm-face",
)


def main(argv=None):
    from tqdm.auto import tqdm

    from menpo_densereg.atomic import atomic_write_text
    from menpo_densereg.data.boxes import detector_box
    from menpo_densereg.data.detectors import uncalibrate_box
    from menpo_densereg.evaluation.metrics import nme
    from menpo_densereg.evaluation.peers import DlibPeer
    from menpo_densereg.fitting.registry import load_fitter

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from heldout_people import DATA, _load, held_out_sets

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("fitters", nargs="*")
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--per-person", type=int, default=5)
    ap.add_argument("--out", default=str(REPO / "out" / "raw_boxes"))
    args = ap.parse_args(argv)
    names = args.fitters or list(DEFAULT_FITTERS)
    fitters = {n: load_fitter(n) for n in names}
    peer = DlibPeer(box_convention="dlib")
    sets = held_out_sets(Path(args.data), args.per_person, large_pose=0)

    lines = [
        "| set | fitter | n | calibrated HOG box | raw HOG box | raw − calibrated |",
        "|---|---|---|---|---|---|",
    ]
    for set_name, paths in sets.items():
        errs = {n: ([], []) for n in names}
        dlib_raw, missed = [], 0
        for im in tqdm(_load(paths), desc=set_name):
            gt = im.landmarks["PTS"]
            # the calibrated HOG detection overlapping the face best, as detect() gives
            # it, and the box the detector itself found (its calibration undone)
            cal, source = detector_box(im, gt, detector="hog")
            if source == "gt":
                missed += 1
                continue
            best = uncalibrate_box(cal, source)
            for n, f in fitters.items():
                errs[n][0].append(nme(f.fit_from_bb(im, cal).final_shape, gt))
                errs[n][1].append(nme(f.fit_from_bb(im, best).final_shape, gt))
            dlib_raw.append(nme(peer.fit_from_bb(im, best).final_shape, gt))
        n_found = len(dlib_raw)
        label = f"{set_name} (HOG found {n_found} of {n_found + missed})"
        for n in names:
            a, b = 100 * np.mean(errs[n][0]), 100 * np.mean(errs[n][1])
            lines.append(
                f"| {label} | {n} | {n_found} | {a:.2f} | {b:.2f} | {b - a:+.2f} |"
            )
        d = 100 * np.mean(dlib_raw)
        lines.append(f"| {label} | dlib (its own box) | {n_found} | – | {d:.2f} | – |")
    text = "\n".join(lines)
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "table.md", text + "\n")
    print(f"wrote {out}/table.md")


if __name__ == "__main__":
    main()
