"""Face fitters on held-out PEOPLE, side by side with dlib, from GT and detector boxes.

Usage::

    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/heldout_people.py \
        [--per-person 5] [--mdm mdm-face] [--out out/heldout_people] [--limit N]

Sets (``menpo_densereg.data.splits``: no model here trains on these people):

- ``faces68``: ``faces68/lfpw`` + ``faces68/helen`` (300-W convention);
- ``ytf68``: ``--per-person`` frames of every held-out ``ytf68`` person (their own,
  noisier convention: dlib differs from it by ~6.5 % median, so read the rows side by
  side, not against 0); also scored as ``ytf68 people, own convention``: every
  method's points (dlib's too) moved from the 300-W convention into ytf68's by the mean
  per-point offset measured on *training* frames (the offset the recipes use to move
  ytf68's labels the other way), which separates the convention gap from the error;
- ``large pose``: ``--large-pose`` re-renders of held-out people (the faces above, one
  frame of every held-out ytf68 person) at 45° <= |yaw| <= 90° by the data engine
  (``benchmarks/detectors.py``'s ``synthetic_items``, fixed seed; not
  ``faces68/300wlp``, whose two AFW profiles are training faces); NME by the GT
  box's mean edge (the outer eye corners nearly meet at profile; AFLW2000-3D's
  convention), FR@0.08 of that.

Boxes: ``gt`` = the tight landmark box for everyone; ``detector`` = the ``--detector``
detection (default the ``cascade``) overlapping the face best (IoU >= 0.3), mapped to the
landmark-box convention by its calibration (``detectors.detect``), the same box for every
fitter (the dlib peer maps it back to its own convention); images without a detection
fall back to the GT box (counted in the table). Fitters: dlib, ``densereg-face`` and
``densereg-face-pca`` (``--densereg``), each + MDM (the second is ``densereg-mdm-face``),
``decafa-face``, ``decafa-face`` + MDM, ``densereg-aam-face`` (``--aam`` names the AAM
chains: ``--aam densereg-aam-face --aam decafa-aam-face``);
``--mdm`` picks the MDM refiner (a fitter name or folder; repeat it to compare a
candidate with the shipped one before shipping it; ``--densereg`` and ``--decafa`` too:
a model given twice or more is paired, every candidate against the first, in
``paired.md`` with 95 % intervals over people, ``menpo_densereg.evaluation.paired``).
NME by the outer eye corners
(36, 45). Prints a table per set and box
protocol (mean, median, FR@0.08) and writes ``per_image.csv`` and CED PNGs to ``--out``.
"""

import argparse
import csv
import io
import time
from pathlib import Path

import menpo.io as mio
import numpy as np

import menpo_densereg  # noqa: F401  (compat fixes before the models load)

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
REPO = Path(__file__).resolve().parents[1]


def _load(paths):
    from menpo.image import Image
    from menpo.shape import PointCloud

    images = []
    for p in paths:
        if isinstance(p, Image):  # a synthetic render with its "PTS" landmarks
            images.append(p)
            continue
        im = mio.import_image(p, normalize=True)
        g = list(im.landmarks.keys())[0]
        gt = PointCloud(np.asarray(im.landmarks[g].points, float))
        if gt.n_points != 68:
            continue
        im.landmarks.clear()
        im.landmarks["PTS"] = gt
        im.path = Path(p)
        images.append(im)
    return images


LARGE_POSE = "large pose |yaw| 45-90"


def large_pose_images(data, faces68, n):
    """``n`` synthetic re-renders of held-out people at 45-90° yaw (menpo images)."""
    import sys

    from menpo_densereg.data.splits import held_out_people, heldout_ytf68_frames

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from detectors import synthetic_items

    srcs = list(faces68)
    srcs += heldout_ytf68_frames(data / "ytf68", 1)[
        :: max(1, len(held_out_people(data / "ytf68")) // 20)
    ]
    images = []
    for key, load, _ in synthetic_items(srcs, n, tag="-heldout"):
        im = load()
        im.path = Path(key)
        images.append(im)
    return images


def held_out_sets(data, per_person=5, limit=None, large_pose=40):
    """``{set name: [image path or menpo image]}`` of the held-out evaluation sets."""
    from menpo_densereg.data.splits import heldout_ytf68_frames, split_files

    faces68 = []
    for sub in ("lfpw", "helen"):
        _, held = split_files(data / "faces68" / sub)
        faces68 += [p for p in held if p.with_suffix(".pts").is_file()]
    ytf = heldout_ytf68_frames(data / "ytf68", per_person=per_person)
    sets = {"faces68 lfpw+helen": faces68, "ytf68 held-out people": ytf}
    if large_pose:
        # renders only: the two faces68/300wlp profiles are AFW people that every
        # face recipe trains on (they were in this set until 2026-12-02, session 3)
        sets[LARGE_POSE] = large_pose_images(data, faces68, large_pose)
    return {k: v[:limit] if limit else v for k, v in sets.items()}


def build_fitters(
    mdm_specs=("mdm-face",),
    densereg_specs=("densereg-face",),
    decafa_specs=("decafa-face",),
    aam_specs=("densereg-aam-face",),
):
    """``{name: fitter}``; every fitter gets the same (calibrated detector) box.

    ``aam_specs``: the shipped AAM chains (or folders) to add, each under its name.

    With several MDM refiners, the chains are named ``+MDM[<spec>]``.
    """
    from menpo_densereg.evaluation.peers import DlibPeer
    from menpo_densereg.fitting.composition import InitialisedFitter
    from menpo_densereg.fitting.registry import load_fitter

    denseregs = {str(d): load_fitter(str(d)) for d in densereg_specs}
    decafas = {str(d): load_fitter(str(d)) for d in decafa_specs}
    mdms = {str(m): load_fitter(str(m)) for m in mdm_specs}

    def tag(m):
        return "+MDM" if len(mdms) == 1 else f"+MDM[{Path(m).name}]"

    out = {"dlib-ert (peer)": DlibPeer()}
    inits = [
        (
            (
                "densereg-face"
                if len(denseregs) == 1
                else f"densereg-face[{Path(d).name}]"
            ),
            f,
        )
        for d, f in denseregs.items()
    ]
    inits += [
        (
            "decafa-face" if len(decafas) == 1 else f"decafa-face[{Path(d).name}]",
            f,
        )
        for d, f in decafas.items()
    ]
    for name, ini in inits:
        out[name] = ini
        for m, mdm in mdms.items():
            out[name + tag(m)] = InitialisedFitter(ini, mdm)
    for a in aam_specs:
        out[Path(str(a)).name] = load_fitter(str(a))
    return out


def candidate_pairs(mdm_specs, densereg_specs=None, decafa_specs=None):
    """``[(reference tag, candidate tag)]``: each candidate against the first spec.

    A model given more than once (``--mdm mdm-face --mdm fitters/_mdm8``) is a candidate
    comparison: the first is the reference, every other one a candidate, paired image by
    image in every chain that holds it (the tags as :func:`build_fitters` names them).
    DenseReg's default pair (the raw and the PCA read-out) is not a comparison, so
    DenseReg is paired only when ``--densereg`` was given.
    """
    pairs = []
    for specs, fmt in (
        (mdm_specs, "MDM[{}]"),
        (densereg_specs, "densereg-face[{}]"),
        (decafa_specs, "decafa-face[{}]"),
    ):
        names = [Path(str(s)).name for s in specs or ()]
        if len(set(names)) < len(names):
            raise ValueError(
                f"{fmt.format('')[:-2]}: two models named alike in {names}: the "
                "chains are told apart by folder name"
            )
        pairs += [(fmt.format(names[0]), fmt.format(n)) for n in names[1:]]
    return pairs


YTF_OWN = "ytf68 people, own convention"


def run(sets, fitters, progress=True, detector="cascade", ytf68_offset=None):
    """Per-image records: set, image, boxes, box source, method, nme, start nme.

    With ``ytf68_offset`` (the mean per-point offset of ytf68's convention from
    300-W's, :func:`menpo_densereg.data.pseudolabels.offset_convention_images`, measured
    on training people), every prediction on the ytf68 set is also scored after being
    moved into ytf68's own convention, as the set :data:`YTF_OWN` (dlib's included).
    """
    from tqdm.auto import tqdm

    from menpo_densereg.data.boxes import box_from_landmarks, detector_box
    from menpo_densereg.data.pseudolabels import apply_offset
    from menpo_densereg.evaluation.metrics import nme
    from menpo_densereg.fitting.base import fit_from_detection

    records = []
    for set_name, paths in sets.items():
        images = _load(paths)
        kind = "box" if set_name == LARGE_POSE else None
        own = [] if ytf68_offset is not None and set_name.startswith("ytf68") else None
        for im in tqdm(images, desc=set_name, disable=not progress):
            gt = im.landmarks["PTS"]
            tight = box_from_landmarks(gt)
            protocols = {
                "gt": (tight, "gt"),
                "detector": detector_box(im, gt, detector=detector),
            }
            for proto, (box, src) in protocols.items():
                for name, fitter in fitters.items():
                    t0 = time.perf_counter()
                    res = fit_from_detection(fitter, im, box, src)
                    dt = time.perf_counter() - t0
                    init = getattr(res, "initial_shape", None)
                    records.append(
                        {
                            "set": set_name,
                            "image": str(im.path),
                            "boxes": proto,
                            "box_source": src,
                            "method": name,
                            "nme": float(nme(res.final_shape, gt, kind=kind)),
                            "start_nme": (
                                float(nme(init, gt, kind=kind))
                                if init is not None
                                else np.nan
                            ),
                            "ms": 1000 * dt,
                        }
                    )
                    if own is not None:
                        moved = apply_offset(res.final_shape, -ytf68_offset)
                        own.append(
                            dict(
                                records[-1],
                                set=YTF_OWN,
                                nme=float(nme(moved, gt)),
                                start_nme=np.nan,
                            )
                        )
        records += own or []
    return records


def table(records, thr=0.08):
    """Markdown table: set, boxes, method, n, mean, median, FR@thr (NME in %)."""
    out = io.StringIO()
    out.write(
        f"| set | boxes | method | n | mean % | median % | FR@{thr:g} % | ms/face |\n"
        "|---|---|---|---|---|---|---|---|\n"
    )
    keys = []
    for r in records:
        k = (r["set"], r["boxes"], r["method"])
        if k not in keys:
            keys.append(k)
    for s, b, m in keys:
        rs = [r for r in records if (r["set"], r["boxes"], r["method"]) == (s, b, m)]
        e = np.array([r["nme"] for r in rs])
        n_fallback = sum(r["box_source"] == "gt" for r in rs) if b == "detector" else 0
        n = f"{len(e)}" + (f" ({n_fallback} GT fallback)" if n_fallback else "")
        out.write(
            f"| {s} | {b} | {m} | {n} | {100 * e.mean():.2f} | "
            f"{100 * np.median(e):.2f} | {100 * np.mean(e > thr):.1f} | "
            f"{np.median([r['ms'] for r in rs]):.0f} |\n"
        )
    return out.getvalue()


def main(argv=None):
    import torch

    from menpo_densereg.atomic import atomic_write_text
    from menpo_densereg.evaluation.metrics import plot_ced

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--per-person", type=int, default=5)
    ap.add_argument(
        "--mdm",
        action="append",
        default=None,
        help="MDM refiner (name or folder; repeat to compare candidates)",
    )
    ap.add_argument(
        "--densereg",
        action="append",
        default=None,
        help="DenseReg initialiser (name or folder; repeat to compare candidates)",
    )
    ap.add_argument(
        "--decafa",
        action="append",
        default=None,
        help="DeCaFA initialiser (name or folder; repeat to compare candidates)",
    )
    ap.add_argument(
        "--aam",
        action="append",
        default=None,
        help="AAM chain (name or folder; default densereg-aam-face; repeat for more, "
        "e.g. --aam densereg-aam-face --aam decafa-aam-face)",
    )
    ap.add_argument(
        "--no-aam", action="store_true", help="leave the AAM chains out (slow)"
    )
    ap.add_argument("--out", default=str(REPO / "out" / "heldout_people"))
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument(
        "--large-pose", type=int, default=40, help="synthetic |yaw| 45-90 renders"
    )
    ap.add_argument("--detector", default="cascade")
    ap.add_argument(
        "--no-own-convention",
        action="store_true",
        help="do not also score ytf68 with predictions moved to its own convention",
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    data = Path(args.data).resolve()
    if not data.is_dir():
        raise SystemExit(f"--data: {data} not found")
    mdms = args.mdm or ["mdm-face"]
    try:
        pairs = candidate_pairs(mdms, args.densereg, args.decafa)
    except ValueError as e:
        raise SystemExit(f"--mdm / --densereg / --decafa: {e}")
    sets = held_out_sets(data, args.per_person, args.limit, args.large_pose)
    # both DenseReg read-outs: the raw one and the PCA-cleaned start of densereg-mdm-face
    denseregs = args.densereg or ["densereg-face", "densereg-face-pca"]
    print({k: len(v) for k, v in sets.items()}, "images; MDM:", mdms, denseregs)
    aams = [] if args.no_aam else (args.aam or ["densereg-aam-face"])
    fitters = build_fitters(mdms, denseregs, args.decafa or ["decafa-face"], aams)
    offset = None
    if "ytf68 held-out people" in sets and not args.no_own_convention:
        from menpo_densereg.data.pseudolabels import offset_convention_images

        # the recipes' offset68 settings: every 2nd training frame, 150 samples
        _, offset = offset_convention_images(data / "ytf68", every=2, n_samples=150)
    records = run(sets, fitters, detector=args.detector, ytf68_offset=offset)
    text = table(records)
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "table.md", text)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(records[0]))
    w.writeheader()
    w.writerows(records)
    atomic_write_text(out / "per_image.csv", buf.getvalue())
    for s in sets:
        for b in ("gt", "detector"):
            errs = {}
            for r in records:
                if r["set"] == s and r["boxes"] == b:
                    errs.setdefault(r["method"], []).append(r["nme"])
            slug = s.split()[0]
            plot_ced(errs, out / f"ced_{slug}_{b}.png", title=f"{s}, {b} boxes")
    if pairs:
        from menpo_densereg.evaluation.paired import compare_methods, paired_table

        texts = []
        for ref, cand in pairs:
            for b in ("detector", "gt"):
                paired = compare_methods(records, ref, cand, boxes=b)
                if paired:
                    texts.append(paired_table(paired, ref, cand, boxes=b))
        text = "\n".join(texts)
        print(text)
        atomic_write_text(out / "paired.md", text)
    print(
        f"wrote {out}/table.md, per_image.csv, ced_*.png"
        + (", paired.md" if pairs else "")
    )


if __name__ == "__main__":
    main()
