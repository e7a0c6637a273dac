"""Do the refiners improve on their initialiser? Per-stage NME and time of chains.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/refiner_stages.py ../shared/data/faces68 \
        [--fitter box-aam-face --fitter box-mdm ...] [--boxes gt --boxes detector]

For every chain (a fitter with ``initialiser`` and ``refiner``; a plain refiner is
chained after the box initialiser) it fits every image from its box and prints, per
box kind, the mean / median NME (the markup's normaliser: outer eye corners for 68
points, GT box average edge for ears) of the initialiser's shape and of
the refined shape, AUC@0.08/0.10 and FR@0.10 of both, and the median time of each stage.
"""

import argparse

import numpy as np


def main(argv=None):
    import menpo_densereg  # noqa: F401
    from menpo.shape import PointCloud

    from menpo_densereg.data.annotated import load_annotated
    from menpo_densereg.data.boxes import box_from_landmarks, detector_box
    from menpo_densereg.fitting.composition import BoxInitialiser, InitialisedFitter
    from menpo_densereg.data.markups import get_markup
    from menpo_densereg.evaluation.metrics import auc, failure_rate, nme
    from menpo_densereg.fitting.registry import load_fitter

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folders", nargs="+")
    p.add_argument("--fitter", "-f", action="append", dest="fitters")
    p.add_argument("--boxes", action="append", choices=["gt", "detector"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--markup", default="ibug68", help="landmark markup of the images")
    p.add_argument(
        "--only", nargs="+", help="use only these file stems (held-out split)"
    )
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    images = load_annotated(args.folders, args.markup, on_error="skip")
    if args.only:
        images = [im for im in images if im.path.stem in set(args.only)]
    gts = [PointCloud(np.asarray(im.landmarks["PTS"].points, float)) for im in images]
    box_kinds = args.boxes or ["gt"]
    boxes = {"gt": [box_from_landmarks(g) for g in gts]}
    if "detector" in box_kinds:
        boxes["detector"] = [detector_box(im, g)[0] for im, g in zip(images, gts)]
    names = args.fitters or ["box-aam-face", "mdm-face"]
    for kind in box_kinds:
        print(
            f"\n[{kind} boxes] {len(images)} images, NME / "
            f"{get_markup(args.markup).normaliser_name}"
        )
        print(
            f"{'chain':<22} {'stage':<12} {'mean%':>6} {'median%':>8} {'AUC@.08':>8} "
            f"{'AUC@.10':>8} {'FR@.10':>7} {'ms':>7}"
        )
        for name in names:
            f = load_fitter(name)
            if not hasattr(f, "initialiser") or not hasattr(f, "refiner"):
                f = InitialisedFitter(
                    BoxInitialiser.for_refiner(f), f, name=f"box+{f.name}"
                )
            f.fit_from_bb(images[0], boxes[kind][0])  # warm-up
            errs = {"initialiser": [], "refiner": []}
            times = {"initialiser": [], "refiner": []}
            for im, b, g in zip(images, boxes[kind], gts):
                r = f.fit_from_bb(im, b, gt_shape=g)
                for k, v in r.stage_errors(nme).items():
                    errs[k].append(v)
                for k, v in r.stage_times.items():
                    times[k].append(v)
            for stage in ("initialiser", "refiner"):
                e = np.array(errs[stage])
                print(
                    f"{f.name:<22} {stage:<12} {100 * e.mean():6.2f} "
                    f"{100 * np.median(e):8.2f} {100 * auc(e, 0.08):8.2f} "
                    f"{100 * auc(e, 0.10):8.2f} {100 * failure_rate(e, 0.10):7.2f} "
                    f"{1000 * np.median(times[stage]):7.1f}"
                )


if __name__ == "__main__":
    main()
