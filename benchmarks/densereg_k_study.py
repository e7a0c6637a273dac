"""DenseReg K study (the paper's Fig. 5) on our held-out real images.

Trains, with identical data and budgets, plain regression (K = 1), quantised-only
(bin centre, K = 10) and quantised regression for a few K, then evaluates each on the
held-out real images of the recipe (``[data] validation``) against the data engine's
dense ground truth: mean UV error on ground-truth face pixels (Euclidean, UV units) and
landmark NME (68 points read out of the field; inter-ocular normaliser, points 36/45),
from the tight landmark box.

Usage::

    python benchmarks/densereg_k_study.py [--steps 300] [--batch 8] [--ks 5,10,20]

Runs in a few minutes on 2 CPU cores (data are rendered once and cached in
``runs/densereg-k-study/``).
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import menpo_densereg  # noqa: E402,F401
from menpo_densereg.densereg.losses import DenseRegLossConfig  # noqa: E402
from menpo_densereg.densereg.network import (
    DenseRegConfig,
    build_densereg,
    decode_uv,
)  # noqa: E402
from menpo_densereg.densereg.train import (  # noqa: E402
    build_train_dataset,
    heldout_dense_samples,
    make_loss_fn,
)
from menpo_densereg.data.markups import get_markup  # noqa: E402
from menpo_densereg.densereg.readout import landmarks_from_uv  # noqa: E402
from menpo_densereg.template.face import FaceTemplate  # noqa: E402
from menpo_densereg.fitting.recipes import load_recipe
from menpo_densereg.training import TrainConfig, train_loop  # noqa: E402


def evaluate(net, samples, residual=True):
    """UV error on GT face pixels and landmark NME over held-out dense samples."""
    lm_uv = FaceTemplate.load().landmark_uv("68")
    m68 = get_markup("68")
    x = torch.from_numpy(
        np.stack([np.asarray(s["image"], np.float32) for s in samples])
    )
    net.eval()
    with torch.inference_mode():
        dec = decode_uv(net(x), residual=residual)
    dec = {k: v.numpy() for k, v in dec.items()}
    uv_err, nme, q_err = [], [], []
    for j, s in enumerate(samples):
        mask = np.asarray(s["mask"]) > 0.5
        uv = np.asarray(s["uv"])
        e = np.hypot(dec["u"][j] - uv[0], dec["v"][j] - uv[1])[mask]
        uv_err.append(e.mean())
        pts, _, _ = landmarks_from_uv(
            dec["u"][j], dec["v"][j], lm_uv, dec["face_prob"][j]
        )
        gt = np.asarray(s["lm_ibug68"], np.float64)
        nme.append(
            np.linalg.norm(pts - gt, axis=1).mean() / m68.normalising_distance(gt)
        )
        pm = dec["face_prob"][j] > 0.5
        q_err.append((pm & mask).sum() / max((pm | mask).sum(), 1))
    return float(np.mean(uv_err)), float(np.mean(nme)), float(np.mean(q_err))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", default=str(REPO / "fitters" / "densereg-face"))
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--ks", default="5,10,20", help="K values of quantised regression")
    p.add_argument(
        "--samples", type=int, default=600, help="real + synthetic samples each"
    )
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    recipe = load_recipe(Path(args.recipe))
    recipe["data"]["real_samples"] = args.samples
    recipe["data"]["synth_samples"] = args.samples
    out = REPO / "runs" / "densereg-k-study"
    base = DenseRegConfig(input_size=args.size, width=args.width, depth_head=False)
    dataset, _ = build_train_dataset(recipe, base, seed=0, cache_dir=out)
    held = heldout_dense_samples(recipe, size=args.size)
    print(
        f"train: {len(dataset)} samples; held-out: {len(held)} real images "
        f"({', '.join(recipe['data']['validation'])}); {args.steps} steps x batch "
        f"{args.batch} each, {args.size}px, width {args.width}"
    )
    variants = [("plain regression", dict(head="plain", n_bins=1))]
    variants.append(("quantised only", dict(head="quantised_only", n_bins=10)))
    for k in [int(k) for k in args.ks.split(",") if k]:
        variants.append(("quantised regression", dict(head="quantised", n_bins=k)))
    rows = []
    for name, kw in variants:
        torch.manual_seed(0)
        cfg = DenseRegConfig(
            input_size=args.size, width=args.width, depth_head=False, **kw
        )
        net = build_densereg(cfg)
        # paper: residual weight 40 for d = 0.1; keep w * d constant across K
        loss_cfg = DenseRegLossConfig(
            residual_weight=4.0 / cfg.bin_width, depth_weight=0
        )
        tc = TrainConfig(
            steps=args.steps,
            batch_size=args.batch,
            lr=3e-3,
            warmup=20,
            seed=0,
            out_dir=None,
            progress=False,
            log_every=0,
            device="cpu",
        )
        t0 = time.perf_counter()
        train_loop(net, dataset, make_loss_fn(loss_cfg), tc)
        secs = time.perf_counter() - t0
        uv, nme, iou = evaluate(net, held, residual=cfg.has_residual)
        rows.append((name, cfg.n_bins, uv, nme, iou, secs))
        print(
            f"  {name:22s} K={cfg.n_bins:<3d} UV err {uv:.4f}  NME {nme:.4f}  "
            f"face IoU {iou:.3f}  ({secs:.0f} s)",
            flush=True,
        )
    print()
    print(
        "| method | K | mean UV error (face px) | landmark NME (IOD) | face IoU | train s |"
    )
    print("|---|---|---|---|---|---|")
    for name, k, uv, nme, iou, secs in rows:
        print(f"| {name} | {k} | {uv:.4f} | {nme:.4f} | {iou:.3f} | {secs:.0f} |")


if __name__ == "__main__":
    main()
