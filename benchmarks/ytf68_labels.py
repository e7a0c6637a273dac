"""What ``ytf68``'s labels allow: their grid, their convention and their consistency.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/ytf68_labels.py [--data ../shared/data] \
        [--per-person 5] [--max-difference 0.03] [--fitter densereg-mdm-face] \
        [--out out/ytf68_labels]

Measures, from the labels alone and two deterministic landmarkers:

1. **grid**: the share of label coordinates that are whole pixels, and the NME that
   rounding to the pixel grid adds on the held-out frames ``heldout_people.py`` scores
   (:func:`menpo_densereg.evaluation.labels.rounding_floor`);
2. **convention**: the NME against the raw labels of a prediction that is *exact in
   the 300-W convention*: the labels moved by the mean per-point offset of ytf68's
   convention from dlib's (the offset the recipes train with and ``heldout_people.py``'s
   "own convention" rows undo; measured on training people). It is the floor of any
   method that answers in the 300-W convention, before any error of its own;
3. **consistency**: every pair of near-identical frames of one clip (mean absolute grey
   difference <= ``--max-difference``): how far the labels move between the two frames,
   beside how far dlib's ERT and ``--fitter`` move when started from the same box on both.
   Independent manual labels move by the annotators' noise even between identical
   pictures; a deterministic landmarker's output does not.

Prints a table, writes ``table.md`` and ``pairs.png`` (label vs landmarker motion
against the pictures' difference) to ``--out``.
"""

import argparse
import re
from pathlib import Path

import numpy as np

import menpo_densereg  # noqa: F401  (compat fixes before the models load)

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
REPO = Path(__file__).resolve().parents[1]
BINS = (0.0, 0.002, 0.005, 0.01, 0.02, 0.03)


def clip_of(path):
    """``(person, clip digit)`` of a ``Person_Name_CF[_t]`` ytf68 frame name."""
    m = re.fullmatch(r"(.+?)_(\d)\d(?:_t)?", Path(path).stem)
    if m is None:
        raise ValueError(f"{path}: expected a 'Person_Name_CF[_t]' ytf68 frame name")
    return m.group(1), m.group(2)


def main(argv=None):
    import menpo.io as mio
    from tqdm.auto import tqdm

    from menpo_densereg.atomic import atomic_save_figure, atomic_write_text
    from menpo_densereg.data.boxes import box_from_landmarks
    from menpo_densereg.data.pseudolabels import apply_offset, offset_convention_images
    from menpo_densereg.data.splits import heldout_ytf68_frames
    from menpo_densereg.evaluation.labels import (
        integer_fraction,
        near_duplicate_pairs,
        rounding_floor,
    )
    from menpo_densereg.evaluation.metrics import nme, normaliser
    from menpo_densereg.evaluation.peers import DlibPeer
    from menpo_densereg.fitting.registry import load_fitter

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--per-person", type=int, default=5)
    ap.add_argument("--max-difference", type=float, default=BINS[-1])
    ap.add_argument("--fitter", default="densereg-mdm-face")
    ap.add_argument("--out", default=str(REPO / "out" / "ytf68_labels"))
    args = ap.parse_args(argv)
    folder = Path(args.data) / "ytf68"
    if not folder.is_dir():
        raise SystemExit(f"--data: no ytf68 folder in {args.data}")

    paths = sorted(p for p in folder.glob("*.jpg") if p.with_suffix(".pts").is_file())
    images = [
        mio.import_image(p, normalize=True) for p in tqdm(paths, desc="reading ytf68")
    ]
    labels = [im.landmarks[im.landmarks.group_labels[0]] for im in images]
    grid = integer_fraction(labels)

    held = {p.name for p in heldout_ytf68_frames(folder, per_person=args.per_person)}
    held_labels = [lab for p, lab in zip(paths, labels) if p.name in held]
    floor = 100 * rounding_floor(held_labels)
    _, offset = offset_convention_images(folder, every=2, n_samples=150)
    conv = 100 * np.array([nme(apply_offset(g, offset), g) for g in held_labels])
    conv_grid = 100 * np.array(
        [nme(np.round(apply_offset(g.points, offset)), g) for g in held_labels]
    )
    eye = np.array([normaliser(g) for g in held_labels])

    pairs = near_duplicate_pairs(
        images, [clip_of(p) for p in paths], args.max_difference
    )
    peer = DlibPeer(box_convention="landmark")
    fitter = load_fitter(args.fitter)
    rows = []
    for i, j, diff in tqdm(pairs, desc="near-identical pairs"):
        box = box_from_landmarks(labels[i])  # one box for both frames
        moves = [nme(labels[j], labels[i])]
        for f in (peer, fitter):
            a = f.fit_from_bb(images[i], box).final_shape
            b = f.fit_from_bb(images[j], box).final_shape
            moves.append(nme(b, a) * normaliser(a) / normaliser(labels[i]))
        rows.append((diff, *[100 * m for m in moves]))
    rows = np.array(rows, float).reshape(-1, 4)

    lines = [
        f"ytf68: {len(paths)} frames, {len(held_labels)} held-out frames scored "
        f"({args.per_person} per held-out person), median outer-eye distance "
        f"{np.median(eye):.1f} px",
        "",
        "| property | value |",
        "|---|---|",
        f"| label coordinates on the integer pixel grid | {100 * grid:.1f} % |",
        f"| NME added by rounding to the grid (mean / median / max) | "
        f"{floor.mean():.2f} / {np.median(floor):.2f} / {floor.max():.2f} % |",
        f"| NME of an exact 300-W-convention answer (mean / median) | "
        f"{conv.mean():.2f} / {np.median(conv):.2f} % |",
        f"| same, its points rounded to the grid as the labels are | "
        f"{conv_grid.mean():.2f} % |",
        "",
        f"Near-identical frames of one clip (mean |grey difference| <= "
        f"{args.max_difference:g}): median movement between the two frames, NME %",
        "",
        f"| grey difference | pairs | labels | labels exactly equal | dlib ERT | "
        f"{args.fitter} |",
        "|---|---|---|---|---|---|",
    ]
    for lo, hi in zip(BINS[:-1], BINS[1:]):
        sel = rows[(rows[:, 0] > lo) | ((lo == 0) & (rows[:, 0] == 0))]
        sel = sel[sel[:, 0] <= hi]
        if not len(sel):
            continue
        med = np.median(sel[:, 1:], axis=0)
        same = 100 * np.mean(sel[:, 1] == 0)
        lines.append(
            f"| ({lo:g}, {hi:g}] | {len(sel)} | {med[0]:.2f} | {same:.0f} % | "
            f"{med[1]:.2f} | {med[2]:.2f} |"
        )
    text = "\n".join(lines)
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "table.md", text + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for k, (name, m) in enumerate(
        [("labels", "o"), ("dlib ERT", "x"), (args.fitter, "+")], start=1
    ):
        ax.scatter(rows[:, 0], rows[:, k], s=10, marker=m, label=name, alpha=0.6)
    ax.set_xlabel("mean |grey difference| of the two frames")
    ax.set_ylabel("movement between the frames (NME %)")
    ax.set_title("ytf68: near-identical frames of one clip")
    ax.legend()
    fig.tight_layout()
    atomic_save_figure(fig, out / "pairs.png", dpi=120)
    plt.close(fig)
    print(f"wrote {out}/table.md, pairs.png")


if __name__ == "__main__":
    main()
