"""Tracking vs frame-by-frame detection on talking-head clips, per fitter.

For every clip of ``--videos`` (the 20 clips of ``../shared/data/videos``; the first
``--max-frames`` frames of each) and every fitter, runs

- ``frame-by-frame``: a fresh dlib HOG detection and ``fit_from_bb`` on every frame
  (detections computed once per frame and shared by all fitters; their time is
  counted in every fitter's frames/s);
- ``tracking``: :class:`menpo_densereg.tracking.Tracker` (detector on the first frame
  and on low confidence, else the previous frame's result), reporting raw shapes;
- ``tracking+smooth``: the same run's one-euro smoothed shapes (same speed).

and prints one table: frames lost (all clips, and the talking-head clips: the
``liveportrait_driving_*``, ``retalking_*`` and ``sadtalker_*`` ones), re-detections,
jitter (mean frame-to-frame landmark motion / eye distance), shake (second
difference / eye distance), frames/s. Then the speed of tracking on frames resized to
640 x 480 (``--speed-clip``), and the NME of tracking on the annotated 300VW frames of
``video68``. Results per clip are cached in ``--out`` (re-running resumes).

    python benchmarks/tracking.py --max-frames 100 --out out/tracking
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
FITTERS = ["densereg-face", "densereg-mdm-face", "decafa-face", "dlib"]
TALKING = ("liveportrait_driving_", "retalking_", "sadtalker_")


def _box_list(box):
    if box is None:
        return None
    return [*map(float, box.points.min(0)), *map(float, box.points.max(0))]


def _box_from(lst):
    from menpo.shape import bounding_box

    return None if lst is None else bounding_box(lst[:2], lst[2:])


def detections(clip, max_frames, cache):
    """dlib HOG boxes (calibrated) of every frame, cached as JSON."""
    from menpo_densereg.atomic import atomic_write_text
    from menpo_densereg.tracking import default_detector, iter_frames

    if cache.is_file():
        d = json.loads(cache.read_text())
        boxes = {int(k): _box_from(v) for k, v in d["boxes"].items()}
        boxes["_ms"] = {int(k): v for k, v in d["ms"].items()}
        return boxes
    boxes, ms = {}, {}
    for im in iter_frames(clip, stop=max_frames):
        t = time.perf_counter()
        found = default_detector(im)
        ms[im.frame] = 1000 * (time.perf_counter() - t)
        boxes[im.frame] = found[0] if found else None
    atomic_write_text(
        cache,
        json.dumps(
            {"boxes": {k: _box_list(v) for k, v in boxes.items()}, "ms": ms}, indent=0
        ),
    )
    boxes["_ms"] = ms
    return boxes


def run_clip(clip, fitter_name, max_frames, boxes, cache):
    from menpo_densereg.atomic import atomic_write_text
    from menpo_densereg.fitting.registry import load_fitter
    from menpo_densereg.tracking import (
        Tracker,
        fit_each_frame,
        iter_frames,
        summarise,
        video_info,
    )

    if cache.is_file():
        return json.loads(cache.read_text())
    fitter = load_fitter(fitter_name)
    fps = video_info(clip)["fps"]
    fbf = fit_each_frame(fitter, iter_frames(clip, stop=max_frames), boxes=boxes)
    tracker = Tracker(fitter, smoothing=True, fps=fps)
    tr = tracker.track(iter_frames(clip, stop=max_frames))
    rows = {
        "frame-by-frame": summarise(fbf),
        "tracking": summarise(tr, raw=True),
        "tracking+smooth": summarise(tr),
    }
    for r in rows.values():
        r["clip"] = clip.stem
    rows["confidence_median"] = float(np.nanmedian(tr.confidences))
    atomic_write_text(cache, json.dumps(rows, indent=1))
    return rows


def aggregate(rows):
    """Per (fitter, mode): totals and frame-weighted means."""
    out = {}
    for (fitter, mode), rs in rows.items():
        n = sum(r["frames"] for r in rs)
        talk = [r for r in rs if r["clip"].startswith(TALKING)]
        w = np.array([r["frames"] for r in rs], float)

        def wmean(key):
            v = np.array([r[key] for r in rs], float)
            ok = np.isfinite(v)
            return float((v[ok] * w[ok]).sum() / w[ok].sum()) if ok.any() else np.nan

        secs = sum(r["frames"] / r["fps"] for r in rs if r["fps"] > 0)
        out[(fitter, mode)] = {
            "clips": len(rs),
            "frames": n,
            "lost": sum(r["lost"] for r in rs),
            "lost_talking": sum(r["lost"] for r in talk),
            "talking_frames": sum(r["frames"] for r in talk),
            "redetected": sum(r["redetected"] for r in rs),
            "jitter": wmean("jitter"),
            "shake": wmean("shake"),
            "fps": n / secs if secs > 0 else np.nan,
        }
    return out


def table(agg):
    head = (
        f"{'fitter':<19} {'mode':<16} {'frames':>6} {'lost':>5} {'lost(talk)':>10} "
        f"{'redet':>5} {'jitter %':>8} {'shake %':>7} {'frames/s':>8}"
    )
    lines = [head, "-" * len(head)]
    for (fitter, mode), a in agg.items():
        lines.append(
            f"{fitter:<19} {mode:<16} {a['frames']:>6} {a['lost']:>5} "
            f"{a['lost_talking']:>10} {a['redetected']:>5} {100 * a['jitter']:>8.2f} "
            f"{100 * a['shake']:>7.2f} {a['fps']:>8.1f}"
        )
    return "\n".join(lines)


def speed(clip, fitters, n_frames):
    """Tracking speed on frames resized to 640 x 480 (decoding excluded).

    Wall-clock frames/s depend on what else runs on the machine; the CPU time of this
    process per frame (one torch thread, OMP_NUM_THREADS=1) is what an idle core
    would take, so both are reported.
    """
    from menpo_densereg.fitting.registry import load_fitter
    from menpo_densereg.tracking import Tracker, read_video

    frames = read_video(clip, stop=n_frames, size=(640, 480))
    out = {}
    for name in fitters:
        tracker = Tracker(load_fitter(name))
        tracker.track(frames[:5])  # warm-up
        cpu = time.process_time()
        res = tracker.track(frames)
        cpu = time.process_time() - cpu
        ms = np.array([r.ms for r in res])
        out[name] = {
            "frames": len(res),
            "fps": res.frames_per_second,
            "ms_median": float(np.median(ms)),
            "fps_median": 1000.0 / float(np.median(ms)),
            "cpu_ms": 1000.0 * cpu / len(res),
            "fps_cpu": len(res) / cpu if cpu > 0 else float("nan"),
            "redetected": res.count("redetected"),
            "lost": res.count("lost"),
        }
    return out


def video68(root, fitters):
    from menpo_densereg.fitting.registry import load_fitter
    from menpo_densereg.tracking import Tracker, evaluate_300vw

    out = {}
    for name in fitters:
        rep = evaluate_300vw(Tracker(load_fitter(name)), root)
        s = rep["overall"]
        out[name] = {
            "frames": s.n,
            "mean": s.mean,
            "median": s.median,
            "auc08": s.auc[0.08],
            "fr08": s.fr[0.08],
            "auc10": s.auc[0.1],
            "fr10": s.fr[0.1],
            "states": {c: r.states for c, r in rep["results"].items()},
        }
    return out


def plot(agg, path):
    import matplotlib.pyplot as plt

    from menpo_densereg.atomic import atomic_save_figure

    fitters = sorted(
        {f for f, _ in agg}, key=lambda f: FITTERS.index(f) if f in FITTERS else 99
    )
    modes = ["frame-by-frame", "tracking", "tracking+smooth"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    x = np.arange(len(fitters))
    for k, mode in enumerate(modes):
        for ax, key in zip(axes, ("jitter", "shake")):
            v = [100 * agg.get((f, mode), {}).get(key, np.nan) for f in fitters]
            ax.bar(x + (k - 1) * 0.27, v, 0.27, label=mode)
    for ax, key in zip(
        axes, ("jitter (motion / eye dist., %)", "shake (2nd diff. / eye dist., %)")
    ):
        ax.set_xticks(x, fitters, rotation=15)
        ax.set_ylabel(key)
    axes[0].legend()
    fig.suptitle("Tracking vs frame-by-frame detection (shared/data/videos)")
    atomic_save_figure(fig, path)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--videos", type=Path, default=DATA / "videos")
    p.add_argument("--video68", type=Path, default=DATA / "video68")
    p.add_argument("--fitters", nargs="+", default=FITTERS)
    p.add_argument("--max-frames", type=int, default=100)
    p.add_argument("--clips", type=int, default=None, help="only the first N clips")
    p.add_argument("--speed-clip", default="retalking_4")
    p.add_argument("--speed-frames", type=int, default=150)
    p.add_argument("--out", type=Path, default=ROOT / "out" / "tracking")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)

    import torch
    from tqdm import tqdm

    import menpo_densereg  # noqa: F401
    from menpo_densereg.atomic import atomic_write_text

    torch.set_num_threads(args.threads)
    if not args.videos.is_dir():
        print(f"{args.videos}: no clips (shared data absent); nothing to measure")
        return 0
    clips = sorted(args.videos.glob("*.mp4"))[: args.clips]
    args.out.mkdir(parents=True, exist_ok=True)
    rows = {}
    for clip in tqdm(clips, desc="clips", unit="clip"):
        boxes = detections(
            clip,
            args.max_frames,
            args.out / "boxes" / f"{clip.stem}_{args.max_frames}.json",
        )
        for name in args.fitters:
            cache = args.out / "rows" / f"{clip.stem}_{args.max_frames}__{name}.json"
            res = run_clip(clip, name, args.max_frames, boxes, cache)
            for mode in ("frame-by-frame", "tracking", "tracking+smooth"):
                rows.setdefault((name, mode), []).append(res[mode])
    agg = aggregate(rows)
    text = [
        f"{len(clips)} clips of {args.videos}, first {args.max_frames} frames each; "
        f"torch threads {args.threads}; load average at the end "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs",
        "jitter = mean frame-to-frame landmark motion / eye distance; shake = "
        "second difference / eye distance; lost(talk) = lost frames on talking-head clips",
        table(agg),
    ]
    speed_clip = args.videos / f"{args.speed_clip}.mp4"
    sp = {}
    if args.speed_frames > 0 and speed_clip.is_file():
        sp = speed(speed_clip, args.fitters, args.speed_frames)
        text.append(
            f"\nTracking speed on {args.speed_clip} resized to 640x480 "
            f"({args.speed_frames} frames, decoding excluded; wall clock on this machine"
            f" as loaded, and CPU time of the process = an idle core):"
        )
        for name, s in sp.items():
            text.append(
                f"  {name:<19} wall {s['fps']:6.1f} frames/s (median frame "
                f"{s['ms_median']:.1f} ms); CPU {s['cpu_ms']:.1f} ms/frame = "
                f"{s['fps_cpu']:.1f} frames/s; redetected {s['redetected']}, lost {s['lost']}"
            )
    v68 = {}
    if args.video68.is_dir():
        v68 = video68(args.video68, args.fitters)
        text.append(
            f"\nTracking on {args.video68} (300VW frames, NME / outer eye corners, %):"
        )
        for name, s in v68.items():
            text.append(
                f"  {name:<19} n={s['frames']} mean {100 * s['mean']:.2f} median "
                f"{100 * s['median']:.2f} AUC@0.08 {100 * s['auc08']:.1f} FR@0.08 "
                f"{100 * s['fr08']:.1f} FR@0.10 {100 * s['fr10']:.1f}"
            )
    out = "\n".join(text)
    print(out)
    atomic_write_text(args.out / "table.txt", out + "\n")
    atomic_write_text(
        args.out / "summary.json",
        json.dumps(
            {
                "table": {f"{f}|{m}": a for (f, m), a in agg.items()},
                "speed_640x480": sp,
                "video68": v68,
            },
            indent=1,
            default=float,
        ),
    )
    plot(agg, args.out / "jitter.png")
    print(f"-> {args.out}/table.txt, summary.json, jitter.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
