"""Per-class part-segmentation IoU of DenseReg on held-out real images.

The parts are read through the predicted UV field with the template labelling
(nearest template label in UV, masked by the predicted face); the ground truth is the
data engine's rasterised part map of each held-out image (``[data] validation`` of the
recipe), from the tight landmark box. IoU is accumulated over all images per class.

Usage::

    python benchmarks/densereg_parts_iou.py [--fitter fitters/densereg-face]
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import menpo_densereg  # noqa: E402,F401
from menpo_densereg.densereg.initialiser import DenseRegInitialiser  # noqa: E402
from menpo_densereg.densereg.network import decode_uv  # noqa: E402
from menpo_densereg.densereg.train import heldout_dense_samples  # noqa: E402
from menpo_densereg.fitting.recipes import load_recipe  # noqa: E402


def part_iou(pred, gt, n_classes):
    """Intersection and union counts per class (0 = background)."""
    inter = np.zeros(n_classes)
    union = np.zeros(n_classes)
    for c in range(n_classes):
        a, b = pred == c, gt == c
        inter[c] += (a & b).sum()
        union[c] += (a | b).sum()
    return inter, union


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fitter", default=str(REPO / "fitters" / "densereg-face"))
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    fdir = Path(args.fitter)
    ini = DenseRegInitialiser.from_fitter_dir(fdir)
    recipe = load_recipe(fdir)
    samples = heldout_dense_samples(recipe, size=ini.input_size)
    names = ini.template.part_names
    inter = np.zeros(len(names))
    union = np.zeros(len(names))
    x = torch.from_numpy(
        np.stack([np.asarray(s["image"], np.float32) for s in samples])
    )
    with torch.inference_mode():
        dec = decode_uv(ini.net(x), residual=ini.config.has_residual)
    for j, s in enumerate(samples):
        face = dec["face_prob"][j].numpy() >= 0.5
        pred = (
            ini.template.parts_from_uv(dec["u"][j].numpy(), dec["v"][j].numpy()) * face
        )
        i, u = part_iou(pred, np.asarray(s["parts"]), len(names))
        inter += i
        union += u
    iou = inter / np.maximum(union, 1)
    print(
        f"{ini.name}: part IoU on {len(samples)} held-out real images "
        f"({', '.join(recipe['data']['validation'])}), engine ground truth, "
        f"{ini.input_size}px crops"
    )
    print("| part | IoU |")
    print("|---|---|")
    for n, v in zip(names, iou):
        print(f"| {n} | {v:.3f} |")
    print(f"| mean (8 parts, excl. background) | {iou[1:].mean():.3f} |")


if __name__ == "__main__":
    main()
