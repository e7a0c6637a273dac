"""DenseReg read-out field size and UV radius, chosen on TRAINING people only.

The network's heads have stride 4, so decoding them at the full crop size (112 px) and
at half of it carries the same information; the coarser field decodes 4x fewer pixels
and reads landmarks faster, but has fewer pixels within a given UV radius. This script
scores ``densereg-face-pca`` (or ``--fitter``) with each ``(field_size, radius)`` on people the shipped
networks trained on (never on the held-out people of ``heldout_people.py``):

- ``ytf68`` frames of training-split people (one frame per person, every other
  person), from their landmark boxes, NME by outer eye corners;
- re-renders at 45-90° yaw of ``faces68/afw`` and some of those frames (box-normalised
  NME, as ``heldout_people.py`` scores large pose).

Usage::

    python benchmarks/readout_field.py [--data ../shared/data] [--renders 60]
        [--fitter densereg-face-pca] [--config full:0.025 --config 56:0.04:7 ...]

Prints a table of mean NME (%) and the read-out's time per face (crop and mirror, PCA).
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

DEFAULT_CONFIGS = [
    "full:0.025",
    "full:0.035",
    "84:0.025",
    "84:0.035",
    "56:0.025",
    "56:0.035",
    "56:0.04",
    "56:0.05",
]


def training_frames(data, every=2, offset=1):
    """One ``ytf68`` frame per training-split person (every ``every``-th person)."""
    from menpo_densereg.data.splits import person_of, split_files

    train, _ = split_files(data / "ytf68", "ytf68")
    seen, frames = set(), []
    for p in sorted(train):
        if p.stem.endswith("_t") or not p.with_suffix(".pts").is_file():
            continue
        if person_of(p) not in seen:
            seen.add(person_of(p))
            frames.append(p)
    return frames[offset::every]


def parse_config(text):
    """``"56:0.04"`` -> ``(56, 0.04, None)``; ``"full:0.025"`` -> ``(None, 0.025,
    None)``; ``"56:0.04:9"`` -> ``(56, 0.04, 9)`` (PCA components; default: the
    recipe's)."""
    try:
        size, radius, *rest = text.split(":")
        if len(rest) > 1:
            raise ValueError(text)
        n = int(rest[0]) if rest else None
        return (None if size == "full" else int(size)), float(radius), n
    except ValueError:
        raise SystemExit(
            f"--config: expected SIZE:RADIUS[:COMPONENTS] (SIZE 'full' or px), got {text!r}"
        )


def main(argv=None):
    import torch

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    p.add_argument("--renders", type=int, default=60)
    p.add_argument("--config", action="append", default=None)
    p.add_argument("--fitter", default="densereg-face-pca", help="a DenseReg fitter")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    data = Path(args.data)
    if not (data / "ytf68").is_dir():
        raise SystemExit(f"--data: {data}/ytf68 not found")

    from detectors import synthetic_items
    from heldout_people import _load
    from tqdm.auto import tqdm

    from menpo_densereg.data.boxes import box_from_landmarks
    from menpo_densereg.evaluation.metrics import nme
    from menpo_densereg.fitting.registry import load_fitter

    frames = training_frames(data)
    frontal = _load(frames)
    afw = sorted((data / "faces68" / "afw").glob("*.jpg"))
    afw += sorted((data / "faces68" / "afw").glob("*.png"))
    renders = [
        load()
        for _, load, _ in synthetic_items(
            afw + frames[::10], args.renders, tag="-train"
        )
    ]
    print(f"{len(frontal)} ytf68 training frames, {len(renders)} large-pose renders")
    base = load_fitter(args.fitter)
    rows = []
    for text in args.config or DEFAULT_CONFIGS:
        size, radius, n = parse_config(text)
        opts = {"n_components": n} if n is not None else {}
        ini = base.with_options(field_size=size, radius=radius, **opts)
        errs = {}
        for name, images, kind in (("ytf", frontal, None), ("lp", renders, "box")):
            e = []
            for im in tqdm(images, desc=text, leave=False):
                gt = im.landmarks["PTS"]
                res = ini.fit_from_bb(im, box_from_landmarks(gt))
                e.append(float(nme(res.final_shape, gt, kind=kind)))
            errs[name] = 100 * np.mean(e)
        crop, _ = ini._crop(frontal[0], box_from_landmarks(frontal[0].landmarks["PTS"]))
        dense, mirrored = ini.predict_crop_and_mirror(crop, ini.field_size)
        times = []
        for _ in range(30):
            t0 = time.perf_counter()
            ini.read_landmarks(dense, mirrored)
            times.append(time.perf_counter() - t0)
        rows.append((text, errs["ytf"], errs["lp"], 1000 * np.median(times)))
    print(
        "\n| field:radius[:components] | ytf68 training people | large pose (renders) | read-out ms |"
    )
    print("|---|---|---|---|")
    for text, a, b, ms in rows:
        print(f"| {text} | {a:.3f} | {b:.3f} | {ms:.2f} |")


if __name__ == "__main__":
    main()
