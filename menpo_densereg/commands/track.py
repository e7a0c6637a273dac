"""``menpo-densereg track VIDEO --fitter NAME --out DIR``: deformable face tracking.

Tracks the face of a video file (mp4, avi, ... decoded by PyAV) or a 300VW frame
folder with :class:`menpo_densereg.tracking.Tracker` and writes into ``--out``:

- ``frames.csv``: one row per frame: frame, state (detected / tracked / redetected /
  lost), confidence and its terms, milliseconds, and why;
- ``annot/000001.pts`` ...: the landmarks in the 300VW layout (lost frames have none);
- ``overlay.mp4``: the video with landmarks and box drawn, coloured by state
  (``--no-video`` skips it);
- ``summary.txt``: the counts per state and the speed.

A tqdm bar shows progress and frames/s. A corrupt or truncated video stops the
tracking where it fails: what was tracked is still written, and the command exits 2
with the error.

Scoring: when ``VIDEO`` is a 300VW-layout folder (``<clip>/annot/*.pts`` with frames in
``<clip>/imgs/``, or a folder of such clips), the annotated frames of every clip are
tracked and scored (:func:`menpo_densereg.tracking.evaluate_300vw`): NME normalised by
the outer eye corners per video and overall, with AUC / FR at 0.08 and 0.10 (a lost
frame is a failure), written to ``scores.txt`` with each clip's outputs in
``--out/<clip>/``.
"""

import csv
import io
import time
from pathlib import Path

__all__ = ["configure_parser", "run", "write_csv"]


def configure_parser(parser):
    parser.add_argument("video", type=Path, help="video file or 300VW frame folder")
    parser.add_argument(
        "--fitter",
        default="densereg-mdm-face",
        help="shipped fitter name, folder or dlib",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument(
        "--threshold", type=float, default=0.3, help="re-detect below this confidence"
    )
    parser.add_argument(
        "--detector",
        default=None,
        help="face detector: hog, mmod, haar, profile or cascade (default: the cascade)",
    )
    parser.add_argument(
        "--no-smooth", action="store_true", help="report the raw fits (no smoothing)"
    )
    parser.add_argument("--max-frames", type=int, default=None, help="stop after N")
    parser.add_argument("--no-video", action="store_true", help="no overlay video")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")


def write_csv(path, result):
    """Write the per-frame CSV of a :class:`~menpo_densereg.tracking.TrackingResult`."""
    from menpo_densereg.atomic import atomic_write_text

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(
        ["frame", "state", "confidence", "fit", "shape", "motion", "ms", "reason"]
    )

    def cell(v):
        return "" if v is None or v != v else f"{v:.4f}"

    for r in result:
        t = r.terms
        w.writerow(
            [
                r.index,
                r.state,
                cell(r.confidence),
                cell(t.get("fit")),
                cell(t.get("shape")),
                cell(t.get("motion")),
                f"{r.ms:.2f}",
                r.reason,
            ]
        )
    atomic_write_text(path, buf.getvalue())


def _tracker(args, **kwargs):
    """The :class:`~menpo_densereg.tracking.Tracker` the options ask for (and the torch
    threads set)."""
    import torch

    from menpo_densereg.tracking import Tracker

    torch.set_num_threads(max(1, args.threads))
    return Tracker(
        args.fitter,
        detector=args.detector,
        threshold=args.threshold,
        smoothing=not args.no_smooth,
        **kwargs,
    )


def run(args):
    from menpo_densereg.atomic import atomic_write_text
    from menpo_densereg.tracking import (
        STATES,
        VideoError,
        VideoWriter,
        draw_overlay,
        iter_frames,
        video_info,
        write_300vw,
    )

    if not args.video.exists():
        raise FileNotFoundError(f"{args.video}: video not found")
    if args.video.is_dir() and _clips_300vw(args.video):
        return _score_300vw(args)
    if args.max_frames is not None and args.max_frames < 1:
        raise ValueError(f"--max-frames: expected >= 1, got {args.max_frames}")
    info = video_info(args.video)
    tracker = _tracker(args, fps=info["fps"])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    writer = None
    if not args.no_video:
        writer = VideoWriter(out / "overlay.mp4", fps=info["fps"]).__enter__()

    def draw(image, rec):
        if writer is not None:
            conf = "-" if rec.confidence != rec.confidence else f"{rec.confidence:.2f}"
            caption = f"{rec.index} {rec.state} {conf} {rec.ms:.0f}ms"
            writer.write(draw_overlay(image, rec.shape, rec.box, caption, rec.state))

    total = info["n_frames"] or None
    if args.max_frames:
        total = min(total or args.max_frames, args.max_frames)
    frames = iter_frames(args.video, stop=args.max_frames)
    t0 = time.perf_counter()
    error = None
    try:
        result = tracker.track(
            _Sized(frames, total),
            progress=f"track {args.video.name}",
            on_error="raise",
            callback=draw,
        )
    except VideoError as e:
        error, result = e, e.result
    except BaseException as e:
        if writer is not None:
            writer.__exit__(type(e), e, None)
        raise
    wall = time.perf_counter() - t0
    if writer is not None:
        writer.__exit__(None, None, None)
    write_csv(out / "frames.csv", result)
    write_300vw(out, result.shapes)
    counts = ", ".join(f"{s} {result.count(s)}" for s in STATES)
    lines = [
        f"{args.video}: {len(result)} frames tracked with {tracker.name} ({counts})",
        f"speed: tracker {result.frames_per_second:.1f} frames/s; end to end (decode, "
        f"track, draw, write) {len(result) / wall if wall > 0 else 0:.1f} frames/s",
        f"-> {out}/frames.csv, {out}/annot/*.pts"
        + ("" if args.no_video else f", {out}/overlay.mp4"),
    ]
    if error is not None:
        lines.append(f"stopped early: {error}")
    atomic_write_text(out / "summary.txt", "\n".join(lines) + "\n")
    print("\n".join(lines))
    if error is not None:
        raise error
    return 0


def _is_clip(folder):
    return (folder / "annot").is_dir() or any(folder.glob("*.pts"))


def _clips_300vw(folder):
    """The 300VW clips of ``folder``: itself if it has ``annot/`` (or frames with .pts
    beside them), else its subfolders that have one."""
    folder = Path(folder)
    if _is_clip(folder):
        return [folder]
    return sorted(p for p in folder.iterdir() if p.is_dir() and _is_clip(p))


def _score_300vw(args):
    from menpo_densereg.atomic import atomic_write_text
    from menpo_densereg.evaluation.metrics import stats_table
    from menpo_densereg.tracking import evaluate_300vw, write_300vw

    tracker = _tracker(args)
    clips = _clips_300vw(args.video)
    root = clips[0].parent
    report = evaluate_300vw(tracker, root, clips=[c.name for c in clips], progress=True)
    out = Path(args.out)
    for clip, res in report["results"].items():
        write_csv(out / clip / "frames.csv", res)
        write_300vw(out / clip, res.shapes)
    stats = list(report["per_video"].values()) + [report["overall"]]
    lost = [sum(r.lost for r in res) for res in report["results"].values()]
    table = stats_table(
        stats,
        "the outer eye corners (lost frames count as failures)",
        extra_columns={"lost": lost + [sum(lost)]},
    )
    text = f"{tracker}\n{table}\n"
    atomic_write_text(out / "scores.txt", text)
    print(text + f"-> {out}/scores.txt, {out}/<clip>/frames.csv, annot/*.pts")
    return 0


class _Sized:
    """An iterable with a length (for the progress bar's total)."""

    def __init__(self, it, n):
        self._it, self._n = it, n

    def __iter__(self):
        return iter(self._it)

    def __len__(self):
        return self._n or 0
