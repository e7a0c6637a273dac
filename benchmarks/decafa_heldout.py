"""Held-out accuracy of a DeCaFA fitter (and peers) on the images its recipe held out.

Reads the recipe's ``[[validation]]`` selections (e.g. ``faces68/afw``, a fixed slice of
``helen29`` and one WFLW face) from the data root, and runs the project benchmark
(:func:`menpo_densereg.evaluation.benchmark.run_benchmark`) on exactly those images, every fitter
from the same boxes, each set with its own markup's normaliser (68: outer eye corners
36/45; 29: 8/9; 98: 60/72 -- a 68-point fitter is scored on 98-point data through the
98 -> 68 correspondence, with the 68 normaliser).

Usage::

    python benchmarks/decafa_heldout.py [--fitter fitters/decafa-face] [--peer dlib] \
        [--boxes gt --boxes detector] [--out out/decafa_heldout]
"""

import argparse
import sys
from pathlib import Path

import menpo_densereg  # noqa: F401  (compat fixes first)


def heldout_images(recipe):
    """``{set name: [menpo images]}`` of a recipe's validation selections."""
    from menpo_densereg.decafa.train import _select, resolve_data_root
    from menpo_densereg.data.readers import read_pts_folder

    root = resolve_data_root(
        recipe.get("data", {}).get("root", "../shared/data"), recipe.get("_path")
    )
    out = {}
    for spec in recipe.get("validation", []):
        images = []
        for f in spec.get("folders", []):
            images += list(read_pts_folder(root / f, on_error="skip"))

        class _R:  # adapt to _select's record interface
            def __init__(self, im):
                self.source = str(im.path)
                self.image = im

        picked = _select(
            [_R(im) for im in images],
            exclude=spec.get("exclude", ()),
            only=spec.get("only"),
            slice_=spec.get("slice"),
        )
        out[spec["name"]] = [r.image for r in picked]
    return out


def main(argv=None):
    root = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fitter", default=str(root / "fitters" / "decafa-face"))
    parser.add_argument(
        "--peer",
        action="append",
        default=None,
        help="other fitter specs (e.g. dlib, densereg-face)",
    )
    parser.add_argument(
        "--boxes", action="append", choices=("gt", "detector"), default=None
    )
    parser.add_argument("--out", type=Path, default=root / "out" / "decafa_heldout")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    import torch

    from menpo_densereg.evaluation.benchmark import run_benchmark
    from menpo_densereg.fitting.registry import load_fitter
    from menpo_densereg.fitting.recipes import load_recipe

    torch.set_num_threads(args.threads)
    recipe = load_recipe(args.fitter)
    fitters = {"DeCaFA": load_fitter(args.fitter)}
    for p in args.peer or []:
        try:
            fitters[p] = load_fitter(p)
        except Exception as e:  # peers are optional extras
            print(f"skipping peer {p}: {e}")
    for name, images in heldout_images(recipe).items():
        res = run_benchmark(
            fitters, images, boxes=tuple(args.boxes or ("gt",)), progress=False
        )
        print(f"\n### held-out {name}: {len(images)} images")
        print(res.table())
        res.write(args.out / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
