"""Where does an MDM chain win or lose? Part-by-part NME after every step.

Usage::

    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/mdm_steps.py \
        [--chain densereg-mdm-face --chain decafa-mdm-face] [--refiner fitters/_mdm12] \
        [--per-person 1] [--boxes detector] [--out out/mdm_steps]

For each chain (a fitter with ``initialiser`` and an MDM ``refiner``; ``--refiner``
swaps the chain's refiner for a candidate, to compare it with the shipped one on the
same starts) it fits the held-out sets of ``benchmarks/heldout_people.py`` (faces68
lfpw + helen, ``--per-person`` frames of every held-out ytf68 person) from the
calibrated detector's boxes (or the GT boxes) and prints, for the start (step 0) and
after every MDM step, the mean NME of each part of the 68-point markup (jaw, eyebrows,
nose, eyes, mouth; left and right pooled, :func:`menpo_densereg.evaluation.metrics.
region_nme`) and of all points. Writes ``steps.md`` and one PNG per set and chain
(``steps_<set>_<chain>.png``: a line per part over the steps).
"""

import argparse
import io
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def face_boxes(images, boxes="detector", detector="cascade"):
    """One box per image: the tight GT box (``"gt"``) or the calibrated detection."""
    from menpo_densereg.data.boxes import box_from_landmarks, detector_box

    if boxes == "gt":
        return [box_from_landmarks(im.landmarks["PTS"]) for im in images]
    return [
        detector_box(im, im.landmarks["PTS"], detector=detector)[0] for im in images
    ]


def step_parts(chain, images, boxes="detector", detector="cascade", progress=True):
    """``[{part: [NME per image]}]``: index 0 is the start, then one per MDM step.

    ``boxes``: ``"gt"``, ``"detector"`` or one box per image (:func:`face_boxes`, to
    give several chains the same boxes without detecting twice).
    """
    from tqdm.auto import tqdm

    from menpo_densereg.evaluation.metrics import nme, region_nme

    if isinstance(boxes, str):
        boxes = face_boxes(images, boxes, detector)
    per_step = []
    items = zip(images, boxes)
    desc = getattr(chain, "name", "chain")
    for im, box in tqdm(items, total=len(images), desc=desc, disable=not progress):
        gt = im.landmarks["PTS"]
        start = chain.initialiser.fit_from_bb(im, box).final_shape
        res = chain.refiner.fit_from_shape(im, start)
        # menpofit's iterative result: shapes[0] is the start, then one per step
        for k, shape in enumerate(res.shapes):
            if len(per_step) <= k:
                per_step.append({})
            parts = region_nme(shape, gt)
            parts["all"] = nme(shape, gt)
            for part, v in parts.items():
                per_step[k].setdefault(part, []).append(v)
    return per_step


def steps_table(per_step, title):
    """Markdown table: one row per step (0 = start), one column per part (% NME)."""
    parts = list(per_step[0])
    out = io.StringIO()
    out.write(f"**{title}** (n = {len(per_step[0][parts[0]])})\n\n")
    out.write("| step | " + " | ".join(parts) + " |\n")
    out.write("|---" * (len(parts) + 1) + "|\n")
    for k, row in enumerate(per_step):
        name = "start" if k == 0 else str(k)
        cells = " | ".join(f"{100 * np.mean(row[p]):.2f}" for p in parts)
        out.write(f"| {name} | {cells} |\n")
    return out.getvalue()


def plot_steps(per_step, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from menpo_densereg.atomic import atomic_save_figure

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    steps = np.arange(len(per_step))
    for part in per_step[0]:
        y = [100 * np.mean(row[part]) for row in per_step]
        ax.plot(steps, y, "-o", lw=2.5 if part == "all" else 1.2, label=part)
    ax.set_xticks(steps, ["start"] + [str(k) for k in steps[1:]])
    ax.set_xlabel("MDM step")
    ax.set_ylabel("mean NME %")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    atomic_save_figure(fig, path)
    plt.close(fig)


def main(argv=None):
    import torch

    import menpo_densereg  # noqa: F401
    from menpo_densereg.atomic import atomic_write_text
    from menpo_densereg.fitting.composition import InitialisedFitter
    from menpo_densereg.fitting.registry import load_fitter

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import heldout_people as hp

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chain", action="append", default=None)
    ap.add_argument("--refiner", default=None, help="a candidate MDM (name or folder)")
    ap.add_argument("--per-person", type=int, default=1)
    ap.add_argument("--boxes", choices=["gt", "detector"], default="detector")
    ap.add_argument("--data", default=str(hp.DATA))
    ap.add_argument("--out", default=str(REPO / "out" / "mdm_steps"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    data = Path(args.data).resolve()
    if not data.is_dir():
        raise SystemExit(f"--data: {data} not found")
    sets = hp.held_out_sets(data, args.per_person, None, 0)
    chains = {}
    refiner = load_fitter(args.refiner) if args.refiner else None
    for name in args.chain or ["densereg-mdm-face", "decafa-mdm-face"]:
        chain = load_fitter(name)
        if not hasattr(chain, "initialiser") or not hasattr(chain, "refiner"):
            raise SystemExit(f"--chain {name}: not an initialiser + refiner chain")
        if refiner is not None:
            chain = InitialisedFitter(chain.initialiser, refiner)
            name = f"{name}[{Path(args.refiner).name}]"
        chains[name] = chain
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    texts = []
    for set_name, paths in sets.items():
        images = hp._load(paths)
        boxes = face_boxes(images, args.boxes)  # the same boxes for every chain
        for name, chain in chains.items():
            per_step = step_parts(chain, images, boxes=boxes)
            title = f"{set_name}, {name}, {args.boxes} boxes"
            texts.append(steps_table(per_step, title))
            print(texts[-1])
            slug = f"{set_name.split()[0]}_{Path(name).name}".replace("/", "_")
            plot_steps(per_step, out / f"steps_{slug}.png", title)
    atomic_write_text(out / "steps.md", "\n".join(texts))
    print(f"wrote {out}/steps.md and steps_*.png")


if __name__ == "__main__":
    main()
