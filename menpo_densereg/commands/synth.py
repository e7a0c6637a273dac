"""``menpo-densereg synth``: synthesise dense training samples into a sharded cache.

Fits the face template to every 68/98-point image of SRC_FOLDER, then writes N samples
(re-posed 3D renders with yaw up to +-90 deg, relit, over varied backgrounds; a fraction
of augmented real crops with ``--real-fraction``) as npz shards in OUT, in the dense
sample format, deterministic by ``--seed``. ``--overlays K`` saves PNG overlays of the
first K samples. Read the cache with
:class:`menpo_densereg.densereg.dataset.DenseShardDataset`.
"""

import time
from pathlib import Path

import numpy as np

__all__ = ["configure_parser", "run"]


def configure_parser(parser):
    parser.add_argument("source", type=Path, help="folder of 68/98-point images (.pts)")
    parser.add_argument("--out", type=Path, required=True, help="cache folder")
    parser.add_argument("-n", "--n-samples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=128, help="sample side S")
    parser.add_argument("--shard-size", type=int, default=256)
    parser.add_argument(
        "--real-fraction",
        type=float,
        default=0.0,
        help="fraction of augmented real crops among the samples",
    )
    parser.add_argument("--max-yaw", type=float, default=90.0)
    parser.add_argument(
        "--overlays",
        type=int,
        default=0,
        metavar="K",
        help="save PNG overlays of the first K samples",
    )
    parser.add_argument("--no-progress", action="store_true")


def run(args):
    from tqdm import tqdm

    from menpo_densereg.densereg.dataset import _fit_all
    from menpo_densereg.template.overlays import save_dense_overlay
    from menpo_densereg.data.readers import read_pts_folder
    from menpo_densereg.template.synthesis import (
        DataEngine,
        SynthConfig,
        config_dict,
        write_shards,
    )

    if args.n_samples < 1:
        raise ValueError(f"-n must be positive, got {args.n_samples}")
    if args.size < 16:
        raise ValueError(f"--size must be at least 16, got {args.size}")
    if not 0 <= args.real_fraction <= 1:
        raise ValueError(f"--real-fraction must be in [0, 1], got {args.real_fraction}")
    images = read_pts_folder(args.source, on_error="skip", progress=False)
    for path, reason in images.bad:
        print(f"skipped {path}: {reason}")
    images = [
        im
        for im in images
        if im.landmarks[im.landmarks.group_labels[0]].n_points in (68, 98)
    ]
    if not images:
        raise ValueError(f"{args.source}: no 68/98-point annotated images")
    t0 = time.perf_counter()
    faces = _fit_all(images, skip_bad=True)
    cfg = SynthConfig(size=args.size, max_yaw=args.max_yaw)
    engine = DataEngine(faces, cfg, args.seed, args.real_fraction)
    t_prep = time.perf_counter() - t0
    print(f"{engine} (fitted and textured in {t_prep:.1f} s)")
    out = Path(args.out)
    ov_dir = out / "overlays"
    yaws = []

    def gen():
        for i in tqdm(range(args.n_samples), desc="synth", disable=args.no_progress):
            s = engine.sample(i)
            yaws.append(float(s["pose"][0]))
            if i < args.overlays:
                lms = {m: (s[f"lm_{m}"], s[f"vis_{m}"]) for m in ("ibug68", "wflw98")}
                save_dense_overlay(
                    ov_dir / f"sample_{i:05d}.png",
                    s["image"],
                    s["uv"][0],
                    s["uv"][1],
                    s["mask"],
                    s["parts"],
                    s["depth"],
                    lms,
                    title=f"sample {i}: yaw {s['pose'][0]:+.0f} pitch {s['pose'][1]:+.0f} "
                    f"roll {s['pose'][2]:+.0f}",
                )
            yield s

    t0 = time.perf_counter()
    meta = dict(
        config=config_dict(cfg),
        seed=args.seed,
        n_samples=args.n_samples,
        real_fraction=args.real_fraction,
        source=str(args.source),
        n_sources=len(faces),
        format="dense sample format (menpo_densereg.template.synthesis)",
    )
    paths = write_shards(gen(), out, shard_size=args.shard_size, meta=meta)
    dt = time.perf_counter() - t0
    y = np.abs(np.array(yaws))
    print(
        f"wrote {args.n_samples} samples (S={args.size}) in {len(paths)} shards to {out}"
    )
    print(
        f"{args.n_samples / dt:.1f} samples/s ({1000 * dt / args.n_samples:.1f} ms/sample"
        f"{', overlays included' if args.overlays else ''}); |yaw| > 60 deg: "
        f"{np.mean(y > 60):.0%}, > 75 deg: {np.mean(y > 75):.0%}"
    )
    return 0
