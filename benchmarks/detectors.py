"""Face detectors on the annotated sets: recall, false positives, time at 640 x 480.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/detectors.py [--data ../shared/data]
        [--per-person 2] [--synthetic 60] [--time-images 12] [--out out/detectors]
        [--time-only]

For each detector (``hog``, ``mmod``, ``haar``) and the ``cascade`` (hog, then mmod
where hog finds nothing scoring >= 0.5, then haar where neither found anything, then
HOG's weak candidates re-checked by MMOD on a crop, ``mmod-crop``; see
:mod:`menpo_densereg.data.detectors` for each one's working scale) it prints, per set:

- recall: share of annotated faces with a *calibrated* detection at IoU >= 0.5 against
  the tight landmark box (``raw``: the same with the detector's own box);
- FP/img: detections per image overlapping the annotated face by IoU < 0.3 (on sets
  whose images show several faces, ``faces68``, an unannotated face counts here too);
- IoU: the mean IoU of the best calibrated detection where one was found;

and the median and mean milliseconds per image of each detector on the first
``--time-images`` photos of ``unlabelled`` resized to 640 x 480 (the detectors' own
working scales and threads; ``OMP_NUM_THREADS=1`` as above). Synthetic faces are also
reported by |yaw| bin (45-60, 60-75, 75-90) and by source (300-W photographs, or
low-resolution ytf68 video frames, whose re-renders carry more artefacts), and the
cascade's misses among them are drawn in ``synthetic_misses.png``. Sets: ``ytf68``
held-out people (``--per-person`` frames each, split by
:mod:`menpo_densereg.data.splits`),
``faces68`` (300-W faces, without the profiles), ``faces68/300wlp`` (profiles),
``video68``, ``wflw98``, and re-renders of held-out people (faces68 lfpw + helen and
held-out ytf68 people) at 45 <= |yaw| <= 90 degrees by the data engine. Raw detections
are cached (``--out``/cache.jsonl, with each detector's settings: a changed detector
is re-run), so a run can be interrupted and resumed.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

MEMBERS = ("hog", "mmod", "profile", "haar")


def _scanned():
    """The detector names to scan: the members and the cascade's candidate check."""
    from menpo_densereg.data.detectors import CASCADE_CHECK

    return MEMBERS + ((CASCADE_CHECK,) if CASCADE_CHECK else ())


SYNTH_SEED = 2026


def real_items(paths):
    """``(key, load, landmark box)`` of image files with a ``.pts`` beside them."""
    from menpo_densereg.data.boxes import box_from_landmarks
    from menpo_densereg.data.readers import read_image, read_pts

    items = []
    for p in paths:
        p = Path(p)
        pts = read_pts(p.with_suffix(".pts"))
        items.append((str(p), (lambda p=p: read_image(p)), box_from_landmarks(pts)))
    return items


def synthetic_items(sources, n, seed=SYNTH_SEED, yaw=(45.0, 90.0), size=192, tag=""):
    """``n`` re-renders at ``yaw[0] <= |yaw| <= yaw[1]`` of the annotated ``sources``.

    Each render is a ``size`` px image with the face about half its side, the source
    photograph's own surroundings as background, random pitch (±20°), roll (±15°),
    lighting and a random shift of the face; the landmark box is the tight box of the
    rendered 68 points. Deterministic in ``seed``.
    """
    from menpo.image import Image
    from menpo.shape import PointCloud

    from menpo_densereg.data.boxes import box_from_landmarks
    from menpo_densereg.data.readers import read_image, read_pts
    from menpo_densereg.template.synthesis import (
        SynthConfig,
        TexturedFace,
        annotated_face,
        synthetic_sample,
    )

    cfg = SynthConfig(
        size=size,
        margin=0.6,
        max_yaw=yaw[1],
        max_pitch=20.0,
        max_roll=15.0,
        jitter_shift=0.2,
        jitter_scale=0.15,
        jitter_rotation=0.0,
        p_context=1.0,
        p_image_background=0.0,
    )
    textured = []
    for p in sources:
        p = Path(p)
        image = read_image(p)
        try:
            textured.append(
                TexturedFace(annotated_face(image, read_pts(p.with_suffix(".pts"))))
            )
        except ValueError as e:
            print(f"skipped source {p.name}: {e}", file=sys.stderr)
    items, i = [], 0
    rng = np.random.default_rng(seed)
    while len(items) < n and textured:
        k = i % len(textured)
        i += 1
        s = synthetic_sample(textured[k], cfg, rng)
        if not yaw[0] <= abs(float(s["pose"][0])) <= yaw[1]:
            continue
        img = Image(np.clip(s["image"], 0, 1).astype(np.float32), copy=False)
        img.landmarks["PTS"] = PointCloud(np.asarray(s["lm_ibug68"], float))
        key = f"synth{tag}/{len(items):03d}_{Path(textured[k].face.name).stem}_yaw{s['pose'][0]:+.0f}"
        items.append((key, (lambda img=img: img), box_from_landmarks(s["lm_ibug68"])))
    return items


def _yaw(key):
    """The yaw (degrees) written in a synthetic item's key."""
    return float(key.rsplit("_yaw", 1)[1])


def _source(key):
    """The file stem of the photograph a synthetic item was rendered from."""
    return key.split("/", 1)[1].split("_", 1)[1].rsplit("_yaw", 1)[0]


def evaluate(items, found, name, calibrate=True):
    """Recall, raw recall, FP per image and mean IoU of detector ``name``."""
    from menpo_densereg.data.boxes import box_iou
    from menpo_densereg.data.detectors import calibrate_box, cascade_of

    hits = raw_hits = fps = 0
    ious, which = [], {}
    for key, _, gt in items:
        per = found[key]
        dets = cascade_of(per)[0] if name == "cascade" else per[name][0]
        cal = [calibrate_box(d.box, d.detector) if calibrate else d.box for d in dets]
        iou = [box_iou(b, gt) for b in cal]
        raw = [box_iou(d.box, gt) for d in dets]
        if iou and max(iou) >= 0.5:
            hits += 1
            ious.append(max(iou))
            src = dets[int(np.argmax(iou))].detector
            which[src] = which.get(src, 0) + 1
        raw_hits += bool(raw and max(raw) >= 0.5)
        fps += sum(v < 0.3 for v in iou)
    n = max(len(items), 1)
    return {
        "n": len(items),
        "recall": hits / n,
        "raw_recall": raw_hits / n,
        "fp": fps / n,
        "iou": float(np.mean(ious)) if ious else float("nan"),
        "which": which,
    }


def time_at_640(paths, names=MEMBERS + ("cascade",)):
    """``{name: (median, mean)}`` ms per image of each detector on ``paths`` resized
    to 640 x 480."""
    import PIL.Image
    from menpo.image import Image

    from menpo_densereg.data.detectors import get_detector

    images = []
    for p in paths:
        with PIL.Image.open(p) as im:
            a = np.asarray(im.convert("RGB").resize((640, 480), PIL.Image.BILINEAR))
        images.append(
            Image(np.moveaxis(a, -1, 0).astype(np.float32) / 255.0, copy=False)
        )
    out = {}
    for n in names:
        d = get_detector(n)
        d(images[0])  # load the model
        ts = []
        for im in images:
            t0 = time.perf_counter()
            d(im)
            ts.append(1000.0 * (time.perf_counter() - t0))
        out[n] = (float(np.median(ts)), float(np.mean(ts)))
    return out


def sets(data, per_person, n_synth):
    """``{set name: items}`` of the benchmark (see the module docstring)."""
    from menpo_densereg.data.splits import heldout_ytf68_frames, held_out_people

    data = Path(data)
    faces = sorted(
        p
        for sub in ("afw", "lfpw", "helen")
        for p in (data / "faces68" / sub).iterdir()
        if p.suffix in (".jpg", ".png") and p.with_suffix(".pts").is_file()
    )
    out = {
        "ytf68 held-out": real_items(heldout_ytf68_frames(data / "ytf68", per_person)),
        "faces68": real_items(faces),
        "faces68/300wlp": real_items(
            sorted((data / "faces68" / "300wlp").glob("*.jpg"))
        ),
        "video68": real_items(sorted((data / "video68").glob("*/*.jpg"))),
        "wflw98": real_items(sorted((data / "wflw98").glob("*.jpg"))),
    }
    if n_synth:
        srcs = [p for p in faces if p.parent.name in ("lfpw", "helen")]
        srcs += heldout_ytf68_frames(data / "ytf68", 1)[
            :: max(1, len(held_out_people(data / "ytf68")) // 20)
        ]
        out["synthetic, yaw 45-90 deg"] = synthetic_items(srcs, n_synth)
    return out


def table(results, times, n_time=0):
    rows = [
        "| set | n | detector | recall (IoU >= 0.5) | raw-box recall | FP / img | IoU | found by |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s, per in results.items():
        for name, r in per.items():
            which = ", ".join(f"{k} {v}" for k, v in sorted(r["which"].items()))
            rows.append(
                f"| {s} | {r['n']} | {name} | {100 * r['recall']:.1f} % | "
                f"{100 * r['raw_recall']:.1f} % | {r['fp']:.2f} | {r['iou']:.2f} | {which} |"
            )
    rows += [
        "",
        f"| detector | ms / image at 640 x 480: median | mean ({n_time} images) |",
        "|---|---|---|",
    ]
    rows += [f"| {n} | {t[0]:.0f} | {t[1]:.0f} |" for n, t in times.items()]
    return "\n".join(rows)


def plot_recall(results, path):
    """A grouped bar chart of calibrated recall per set and detector (PNG, atomic)."""
    import matplotlib.pyplot as plt

    from menpo_densereg.atomic import atomic_save_figure

    names = list(results)
    dets = list(next(iter(results.values())))
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(names), 3.6))
    w = 0.8 / len(dets)
    for j, d in enumerate(dets):
        x = np.arange(len(names)) + (j - (len(dets) - 1) / 2) * w
        ax.bar(x, [100 * results[n][d]["recall"] for n in names], w, label=d)
    ax.set_xticks(np.arange(len(names)))
    labels = [
        n.strip().replace("of which ", "synthetic\n").replace(", ", "\n") for n in names
    ]
    ax.set_xticklabels(labels, fontsize=7)
    ax.set_ylabel("recall at IoU >= 0.5 (%)")
    ax.set_ylim(0, 105)
    ax.legend(fontsize=7, ncol=len(dets))
    fig.tight_layout()
    atomic_save_figure(fig, path, dpi=120)
    plt.close(fig)


def plot_misses(items, found, path, name="cascade", max_n=24):
    """A contact sheet of the faces ``name`` misses (PNG, atomic): the landmark box in
    green, the detector's calibrated boxes in red, the key above. Returns the count."""
    import matplotlib.pyplot as plt

    from menpo_densereg.atomic import atomic_save_figure
    from menpo_densereg.data.boxes import box_iou
    from menpo_densereg.data.detectors import calibrate_box, cascade_of, image_to_uint8

    misses = []
    for key, load, gt in items:
        per = found[key]
        dets = cascade_of(per)[0] if name == "cascade" else per[name][0]
        cal = [calibrate_box(d.box, d.detector) for d in dets]
        if not any(box_iou(b, gt) >= 0.5 for b in cal):
            misses.append((key, load, gt, cal))
    if not misses:
        return 0
    shown = misses[:max_n]
    cols = min(6, len(shown))
    rows = (len(shown) + cols - 1) // cols
    fig, axes = plt.subplots(
        rows, cols, figsize=(2.2 * cols, 2.4 * rows), squeeze=False
    )
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (key, load, gt, cal) in zip(axes.ravel(), shown):
        ax.imshow(image_to_uint8(load()))
        for b, colour in [(gt, "lime")] + [(c, "red") for c in cal]:
            (t, l), (bt, r) = b.points.min(0), b.points.max(0)
            ax.add_patch(
                plt.Rectangle((l, t), r - l, bt - t, fill=False, ec=colour, lw=1)
            )
        ax.set_title(Path(key).name[:28], fontsize=6)
    fig.suptitle(
        f"{name} misses: {len(misses)} of {len(items)} (green: landmark box, "
        "red: calibrated detections)",
        fontsize=8,
    )
    fig.tight_layout()
    atomic_save_figure(fig, path, dpi=110)
    plt.close(fig)
    return len(misses)


def main(argv=None):
    import menpo_densereg  # noqa: F401

    from menpo_densereg.atomic import atomic_write_text
    from menpo_densereg.data.detectors import scan_detections

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--data",
        default=str(Path(__file__).resolve().parents[1] / ".." / "shared" / "data"),
    )
    p.add_argument("--per-person", type=int, default=2)
    p.add_argument("--synthetic", type=int, default=60)
    p.add_argument("--time-images", type=int, default=12)
    p.add_argument("--out", default="out/detectors")
    p.add_argument(
        "--time-only", action="store_true", help="only the 640 x 480 timing table"
    )
    args = p.parse_args(argv)
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass
    out = Path(args.out)
    results = {}
    all_sets = (
        {} if args.time_only else sets(args.data, args.per_person, args.synthetic)
    )
    for name, items in all_sets.items():
        found = scan_detections(
            [(k, ld) for k, ld, _ in items], _scanned(), cache=out / "cache.jsonl"
        )
        results[name] = {n: evaluate(items, found, n) for n in MEMBERS + ("cascade",)}
        if name.startswith("synthetic"):  # recall by |yaw| bin and by source
            subsets = {
                f"  of which yaw {lo}-{hi} deg": [
                    it for it in items if lo <= abs(_yaw(it[0])) < hi + (hi == 90)
                ]
                for lo, hi in ((45, 60), (60, 75), (75, 90))
            }
            photos = {Path(k).stem for k, _, _ in all_sets.get("faces68", [])}
            subsets["  of which from 300-W photos"] = [
                it for it in items if _source(it[0]) in photos
            ]
            subsets["  of which from ytf68 frames"] = [
                it for it in items if _source(it[0]) not in photos
            ]
            for sub_name, sub in subsets.items():
                if sub:
                    results[sub_name] = {
                        n: evaluate(sub, found, n) for n in MEMBERS + ("cascade",)
                    }
        print(
            name,
            {n: f"{100 * r['recall']:.1f}%" for n, r in results[name].items()},
            flush=True,
        )
    data = Path(args.data)
    timing = sorted((data / "unlabelled").glob("*.jpg"))[: args.time_images]
    times = time_at_640(timing) if timing else {}
    text = table(results, times, len(timing))
    print(text)
    if not args.time_only:
        atomic_write_text(out / "table.md", text + "\n")
        plot_recall(results, out / "recall.png")
        print(f"-> {out / 'table.md'}, {out / 'recall.png'}")
        for name, items in all_sets.items():
            if name.startswith("synthetic"):
                found = scan_detections(
                    [(k, ld) for k, ld, _ in items],
                    _scanned(),
                    cache=out / "cache.jsonl",
                    progress=False,
                )
                if plot_misses(items, found, out / "synthetic_misses.png"):
                    print(f"-> {out / 'synthetic_misses.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
