"""Benchmark fitters on annotated images: per-image errors, tables, CSV, CED plots.

Every fitter is initialised from the same boxes (the tight ground-truth box and/or a
detector box with a ground-truth fallback) and evaluated in the dataset's markup with the
markup's normaliser (see :mod:`menpo_densereg.evaluation.metrics`). A fitter whose output markup
differs from the data is evaluated through a known correspondence (its prediction is
converted to the data's markup, or else the ground truth to the fitter's markup).
"""

import contextlib
import csv
import io
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from menpo_densereg.atomic import atomic_write_text
from menpo_densereg.data.boxes import box_from_landmarks, detector_box
from menpo_densereg.data.markups import (
    can_convert,
    convert,
    get_markup,
    markup_for_n_points,
)
from menpo_densereg.fitting.base import fit_from_detection
from menpo_densereg.evaluation.metrics import (
    THRESHOLDS,
    error_stats,
    nme,
    plot_ced,
    stats_table,
)

__all__ = [
    "ImageRecord",
    "BenchmarkResult",
    "run_benchmark",
    "gt_group",
    "output_lock",
    "OUTPUT_PATTERNS",
    "remove_outputs",
]

#: The files a benchmark writes into its output folder (the CED plots are per protocol).
OUTPUT_PATTERNS = ("table.txt", "per_image.csv", "summary.json", "ced_*.png")


@dataclass
class ImageRecord:
    """One fit of one image by one method."""

    image: str
    method: str
    boxes: str
    box_source: str
    markup: str
    nme: float = float("nan")
    initial_nme: float = float("nan")
    seconds: float = float("nan")
    error: str = ""


@dataclass
class BenchmarkResult:
    """All records of a benchmark run, with tables and plots on demand."""

    records: list = field(default_factory=list)
    bad_items: list = field(default_factory=list)
    thresholds: tuple = THRESHOLDS

    def methods(self):
        seen = []
        for r in self.records:
            if r.method not in seen:
                seen.append(r.method)
        return seen

    def errors(self, method, boxes, markup=None):
        return np.array(
            [
                r.nme
                for r in self.records
                if r.method == method
                and r.boxes == boxes
                and not r.error
                and (markup is None or r.markup == markup)
            ]
        )

    def table(self):
        """Text tables: one per (box protocol, markup)."""
        out = []
        for boxes in dict.fromkeys(r.boxes for r in self.records):
            for mk in dict.fromkeys(r.markup for r in self.records if r.boxes == boxes):
                stats, speed, fails = [], [], []
                for m in self.methods():
                    recs = [
                        r
                        for r in self.records
                        if r.method == m and r.boxes == boxes and r.markup == mk
                    ]
                    if not recs:
                        continue
                    stats.append(
                        error_stats(m, self.errors(m, boxes, mk), self.thresholds)
                    )
                    secs = [r.seconds for r in recs if not r.error]
                    speed.append(f"{1.0 / np.mean(secs):.1f}" if secs else "-")
                    fails.append(str(sum(1 for r in recs if r.error)))
                markup = get_markup(mk)
                n_fallback = sum(
                    1
                    for r in self.records
                    if r.boxes == boxes
                    and r.markup == mk
                    and r.box_source == "gt"
                    and boxes == "detector"
                )
                title = f"[{boxes} boxes] {markup.name}"
                if boxes == "detector":
                    found = {}  # image -> the detector that found it (or "gt")
                    for r in self.records:
                        if r.boxes == boxes and r.markup == mk:
                            found[r.image] = r.box_source
                    by = ", ".join(
                        f"{k} {list(found.values()).count(k)}"
                        for k in sorted(set(found.values()))
                    )
                    title += (
                        f" ({n_fallback} fits fell back to the GT box; images by box "
                        f"source: {by}; detector boxes calibrated to the landmark box)"
                    )
                out.append(title)
                out.append(
                    stats_table(
                        stats,
                        normaliser_name=markup.normaliser_name,
                        extra_columns={"faces/s": speed, "errors": fails},
                    )
                )
                out.append("")
        if self.bad_items:
            out.append(f"{len(self.bad_items)} bad input items skipped:")
            out += [f"  {p}: {why}" for p, why in self.bad_items]
        return "\n".join(out)

    def n_measured(self):
        """Fits that gave an error value (records without an error)."""
        return sum(1 for r in self.records if not r.error)

    def failures(self):
        """``[(image, method, error)]`` of the fits that failed."""
        return [(r.image, r.method, r.error) for r in self.records if r.error]

    def csv(self):
        buf = io.StringIO()
        names = list(ImageRecord.__dataclass_fields__)
        w = csv.DictWriter(buf, fieldnames=names)
        w.writeheader()
        for r in self.records:
            w.writerow(asdict(r))
        return buf.getvalue()

    def write(self, out_dir, max_error=0.1):
        """Write ``table.txt``, ``per_image.csv``, ``summary.json`` and CED PNGs.

        Returns
        -------
        paths : `dict` name -> `Path`
        """
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = {"table": out_dir / "table.txt", "csv": out_dir / "per_image.csv"}
        atomic_write_text(paths["table"], self.table() + "\n")
        atomic_write_text(paths["csv"], self.csv())
        summary = {}
        for boxes in dict.fromkeys(r.boxes for r in self.records):
            for mk in dict.fromkeys(r.markup for r in self.records if r.boxes == boxes):
                curves = {
                    m: self.errors(m, boxes, mk)
                    for m in self.methods()
                    if self.errors(m, boxes, mk).size
                }
                if not curves:
                    continue
                png = out_dir / f"ced_{boxes}_{mk}.png"
                plot_ced(
                    curves,
                    png,
                    max_error=max_error,
                    title=f"{mk}, {boxes} boxes",
                    xlabel=f"NME ({get_markup(mk).normaliser_name})",
                )
                paths[f"ced_{boxes}_{mk}"] = png
                summary[f"{boxes}/{mk}"] = {
                    m: asdict(error_stats(m, e, self.thresholds))
                    for m, e in curves.items()
                }
        paths["summary"] = out_dir / "summary.json"
        summary["bad_items"] = self.bad_items
        summary["n_measured"] = self.n_measured()
        summary["written"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        atomic_write_text(paths["summary"], json.dumps(summary, indent=1, default=str))
        # plots of an earlier run (another protocol or markup) must not look current
        remove_outputs(out_dir, keep=paths.values())
        return paths


def remove_outputs(out_dir, keep=()):
    """Delete benchmark outputs (:data:`OUTPUT_PATTERNS`) in ``out_dir`` but ``keep``.

    Returns
    -------
    removed : `list` of `Path`
    """
    out_dir = Path(out_dir)
    keep = {Path(p).resolve() for p in keep}
    removed = []
    if not out_dir.is_dir():
        return removed
    for pattern in OUTPUT_PATTERNS:
        for p in out_dir.glob(pattern):
            if p.resolve() not in keep and p.is_file():
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
                    removed.append(p)
    return removed


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def output_lock(out_dir):
    """Hold ``out_dir/.benchmark.lock`` for one run: a second run there is refused.

    A lock left by a process that no longer runs is taken over.

    Raises
    ------
    ValueError
        Another live benchmark holds the folder.
    """
    out_dir = Path(out_dir)
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    lock = out_dir / ".benchmark.lock"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                pid = int(lock.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                pid = None
            if pid is not None and _pid_alive(pid):
                raise ValueError(
                    f"{out_dir}: another benchmark (pid {pid}) is writing there; "
                    "wait for it or give another --out"
                ) from None
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()  # stale: its process is gone
            continue
        with os.fdopen(fd, "w") as f:
            f.write(f"{os.getpid()}\n")
        break
    else:  # pragma: no cover - lost a race twice
        raise ValueError(f"{out_dir}: could not take the benchmark lock {lock}")
    try:
        yield lock
    finally:
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()
        if created:  # a run that wrote nothing leaves no empty folder behind
            with contextlib.suppress(OSError):
                out_dir.rmdir()


def gt_group(image):
    """The landmark group of an image that names a known markup."""
    for g in image.landmarks.group_labels:
        if markup_for_n_points(image.landmarks[g].n_points) is not None and g != "box":
            return g
    counts = {g: image.landmarks[g].n_points for g in image.landmarks.group_labels}
    raise ValueError(
        f"{getattr(image, 'path', 'image')}: no landmark group of a known markup "
        f"(groups and point counts: {counts}; known markups have "
        f"{', '.join(str(n) for n in _known_counts())} points)"
    )


def _known_counts():
    from menpo_densereg.data.markups import MARKUPS

    return sorted({m.n_points for m in MARKUPS.values()})


def _evaluate(pred, gt, data_markup, fitter_markup):
    """NME in the data markup when possible, else in the fitter's markup."""
    if fitter_markup.name == data_markup.name:
        return nme(pred, gt, data_markup), data_markup.name
    if can_convert(fitter_markup, data_markup):
        return nme(convert(pred, fitter_markup, data_markup), gt, data_markup), (
            data_markup.name
        )
    if can_convert(data_markup, fitter_markup):
        return nme(pred, convert(gt, data_markup, fitter_markup), fitter_markup), (
            fitter_markup.name
        )
    raise ValueError(
        f"no correspondence between {fitter_markup.name} and {data_markup.name}"
    )


def _fitter_for(fitter, markup):
    """A fitter that outputs ``markup`` if it can (multi-markup initialisers)."""
    if (
        getattr(fitter, "markup", None) is not None
        and get_markup(fitter.markup) == markup
    ):
        return fitter
    markups = getattr(fitter, "markups", None) or ()
    names = {get_markup(m).name for m in markups}
    if markup.name in names and hasattr(fitter, "for_markup"):
        return fitter.for_markup(markup.name)
    return fitter


def run_benchmark(
    fitters, images, boxes=("gt",), progress=True, bad_items=(), detector=None
):
    """Fit every image with every fitter from every box protocol.

    Parameters
    ----------
    fitters : `dict` name -> fitter
        Objects with ``markup`` and ``fit_from_bb(image, box, gt_shape=None)``.
    images : iterable of menpo images with ground-truth landmarks
        Consumed once, one image at a time (read, fit, record, release): a lazy
        reader (:class:`menpo_densereg.data.readers.PtsFolder`) keeps the memory
        independent of the number of images. Its ``bad`` items (``(path, reason)``,
        found while iterating) are added to the result's.
    boxes : `tuple` of ``"gt"`` / ``"detector"``
    progress : `bool`
    bad_items : `list` of ``(path, reason)`` already skipped by the reader
    detector : `str`, optional
        The face detector of the ``"detector"`` protocol (a name of
        :data:`menpo_densereg.data.detectors.DETECTOR_NAMES`; default: the cascade).
        Its boxes are calibrated to the landmark box
        (:func:`menpo_densereg.data.detectors.calibrate_box`); each record's
        ``box_source`` names the detector that found the face, or ``"gt"`` where
        none did (the fallback).

    Returns
    -------
    result : `BenchmarkResult`
    """
    for b in boxes:
        if b not in ("gt", "detector"):
            raise ValueError(f"boxes: unknown protocol {b!r} (use 'gt' or 'detector')")
    result = BenchmarkResult(bad_items=list(bad_items))
    from tqdm.auto import tqdm

    n_images = len(images) if hasattr(images, "__len__") else None
    bar = tqdm(
        total=None if n_images is None else n_images * len(boxes) * len(fitters),
        disable=not progress,
        desc="benchmark",
        dynamic_ncols=True,
    )
    for image in images:
        name = str(getattr(image, "path", f"image{len(result.records)}"))
        try:
            group = gt_group(image)
        except ValueError as e:
            result.bad_items.append((name, str(e)))
            bar.update(len(boxes) * len(fitters))
            continue
        gt = image.landmarks[group]
        data_markup = markup_for_n_points(gt.n_points)
        for protocol in boxes:
            if protocol == "gt":
                box, source = box_from_landmarks(gt), "gt"
            else:
                box, source = detector_box(image, gt, detector=detector)
            for method, fitter in fitters.items():
                bar.set_postfix_str(method)
                rec = ImageRecord(name, method, protocol, source, data_markup.name)
                f = _fitter_for(fitter, data_markup)
                fm = get_markup(f.markup)
                try:
                    gt_for_fitter = gt if fm == data_markup else None
                    t0 = time.perf_counter()
                    res = fit_from_detection(
                        f, image, box, source, gt_shape=gt_for_fitter
                    )
                    rec.seconds = time.perf_counter() - t0
                    rec.nme, rec.markup = _evaluate(
                        res.final_shape, gt, data_markup, fm
                    )
                    init = getattr(res, "initial_shape", None)
                    if init is not None and init.n_points == res.final_shape.n_points:
                        rec.initial_nme = _evaluate(init, gt, data_markup, fm)[0]
                except Exception as e:  # a failed fit is recorded, not fatal
                    rec.error = f"{type(e).__name__}: {e}"
                result.records.append(rec)
                bar.update(1)
        # release the pixels (a result may hold its image) before the next is read
        image = gt = res = None
    bar.close()
    result.bad_items += list(getattr(images, "bad", ()))
    return result
