"""``menpo-densereg benchmark``: fitters on folders of annotated images.

Images stream through the fitters (read, fit, record, release), so the memory does not
grow with the number of images; ``--limit`` stops reading a folder once that many
usable images were read. One run holds ``--out`` (a lock): a second run on the same
folder is refused, and files of an earlier run that this run does not rewrite are
removed. The exit status is 0 when something was measured and 2 otherwise, with every
skipped item and failed fit and its reason printed.
"""

from pathlib import Path

__all__ = ["configure_parser", "run", "load_fitters", "read_folders", "stream_folders"]


def configure_parser(parser):
    parser.add_argument(
        "folders",
        nargs="+",
        type=Path,
        help="folders of images with .pts landmarks (searched recursively)",
    )
    parser.add_argument(
        "--fitter",
        "-f",
        action="append",
        dest="fitters",
        required=True,
        help="fitter: a shipped name (see fitters/), a fitter folder, "
        "'dlib', or 'aam:TRAIN_FOLDER'; repeat for several",
    )
    parser.add_argument(
        "--boxes",
        action="append",
        choices=("gt", "detector"),
        help="initialisation boxes (repeatable; default: gt)",
    )
    parser.add_argument(
        "--detector",
        default=None,
        help="face detector of --boxes detector: hog, mmod, haar, profile or cascade "
        "(default: cascade); its boxes are calibrated to the landmark box",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("out/benchmark"),
        help="output folder for table.txt, per_image.csv, CED PNGs",
    )
    parser.add_argument(
        "--limit",
        type=int,
        default=None,
        help="use at most this many images per folder",
    )
    parser.add_argument(
        "--max-error", type=float, default=0.1, help="right end of the CED plots"
    )
    parser.add_argument("--no-progress", action="store_true")


class _Folders:
    """Several :class:`~menpo_densereg.data.readers.PtsFolder` as one lazy stream."""

    def __init__(self, folders):
        self.folders = folders

    def __len__(self):
        return sum(len(f) for f in self.folders)

    def __iter__(self):
        for f in self.folders:
            yield from f

    @property
    def bad(self):
        return [b for f in self.folders for b in f.bad]


def stream_folders(folders, limit=None):
    """A lazy stream of the annotated images of ``folders`` (``limit`` per folder).

    Nothing is decoded until iterated; ``.bad`` lists the skipped items and reasons.
    """
    from menpo_densereg.data.readers import PtsFolder

    return _Folders([PtsFolder(folder, limit=limit) for folder in folders])


def read_folders(folders, limit=None, progress=True):
    """Read every folder (skipping bad items). Returns (images, bad_items)."""
    stream = stream_folders(folders, limit)
    images = list(stream)
    return images, stream.bad


def load_fitters(specs):
    """``{display name: fitter}`` for a list of specs (names must be unique)."""
    from menpo_densereg.fitting.registry import load_fitter

    fitters = {}
    for spec in specs:
        f = load_fitter(spec)
        name = getattr(f, "name", str(spec))
        if name in fitters:
            name = str(spec)
        fitters[name] = f
    return fitters


def _nothing_measured(args, result):
    lines = [
        f"nothing measured in {', '.join(map(str, args.folders))}: "
        f"{len(result.bad_items)} items skipped, {len(result.failures())} fits failed"
    ]
    lines += [
        f"  skipped {p}: {why[len(str(p)) + 2:] if why.startswith(f'{p}: ') else why}"
        for p, why in result.bad_items
    ]
    lines += [f"  failed {p} ({m}): {why}" for p, m, why in result.failures()]
    return "\n".join(lines)


def run(args):
    from menpo_densereg.evaluation.benchmark import (
        output_lock,
        remove_outputs,
        run_benchmark,
    )

    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit: expected a positive number, got {args.limit}")
    progress = not args.no_progress
    detector = getattr(args, "detector", None)
    if detector is not None:
        from menpo_densereg.data.detectors import get_detector

        try:
            get_detector(detector)
        except ValueError as e:
            raise ValueError(f"--detector: {e}") from None
    fitters = load_fitters(args.fitters)
    images = stream_folders(args.folders, args.limit)
    with output_lock(args.out):
        result = run_benchmark(
            fitters,
            images,
            boxes=tuple(args.boxes or ("gt",)),
            progress=progress,
            detector=detector,
        )
        if not result.n_measured():
            # an earlier run's table must not stand beside this failure looking current
            removed = remove_outputs(args.out)
            message = _nothing_measured(args, result)
            if removed:
                message += f"\n(removed {len(removed)} outputs of an earlier run)"
            raise ValueError(message)
        paths = result.write(args.out, max_error=args.max_error)
    print(result.table())
    print("\nwrote " + ", ".join(str(p) for p in paths.values()))
    return 0
