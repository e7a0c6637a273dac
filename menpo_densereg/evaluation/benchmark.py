"""Benchmark fitters on annotated images: per-image errors, tables, CSV, CED plots.

Every fitter is initialised from the same boxes (the tight ground-truth box and/or a
detector box with a ground-truth fallback) and evaluated in the dataset's markup with the
markup's normaliser (see :mod:`menpo_densereg.evaluation.metrics`). A fitter whose output markup
differs from the data is evaluated through a known correspondence (its prediction is
converted to the data's markup, or else the ground truth to the fitter's markup).
"""

import csv
import io
import json
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
from menpo_densereg.evaluation.metrics import (
    THRESHOLDS,
    error_stats,
    nme,
    plot_ced,
    stats_table,
)

__all__ = ["ImageRecord", "BenchmarkResult", "run_benchmark", "gt_group"]


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
                    title += f" ({n_fallback} fits fell back to the GT box)"
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
        atomic_write_text(paths["summary"], json.dumps(summary, indent=1, default=str))
        return paths


def gt_group(image):
    """The landmark group of an image that names a known markup."""
    for g in image.landmarks.group_labels:
        if markup_for_n_points(image.landmarks[g].n_points) is not None and g != "box":
            return g
    raise ValueError(
        f"{getattr(image, 'path', 'image')}: no landmark group of a known markup "
        f"(groups: {list(image.landmarks.group_labels)})"
    )


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


def run_benchmark(fitters, images, boxes=("gt",), progress=True, bad_items=()):
    """Fit every image with every fitter from every box protocol.

    Parameters
    ----------
    fitters : `dict` name -> fitter
        Objects with ``markup`` and ``fit_from_bb(image, box, gt_shape=None)``.
    images : iterable of menpo images with ground-truth landmarks
    boxes : `tuple` of ``"gt"`` / ``"detector"``
    progress : `bool`
    bad_items : `list` of ``(path, reason)`` already skipped by the reader

    Returns
    -------
    result : `BenchmarkResult`
    """
    for b in boxes:
        if b not in ("gt", "detector"):
            raise ValueError(f"boxes: unknown protocol {b!r} (use 'gt' or 'detector')")
    images = list(images)
    result = BenchmarkResult(bad_items=list(bad_items))
    from tqdm.auto import tqdm

    bar = tqdm(
        total=len(images) * len(boxes) * len(fitters),
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
                box, source = detector_box(image, gt)
            for method, fitter in fitters.items():
                bar.set_postfix_str(method)
                rec = ImageRecord(name, method, protocol, source, data_markup.name)
                f = _fitter_for(fitter, data_markup)
                fm = get_markup(f.markup)
                try:
                    gt_for_fitter = gt if fm == data_markup else None
                    t0 = time.perf_counter()
                    res = f.fit_from_bb(image, box, gt_shape=gt_for_fitter)
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
    bar.close()
    return result
