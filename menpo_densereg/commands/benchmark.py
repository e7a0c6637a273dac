"""``menpo-densereg benchmark``: fitters on folders of annotated images."""

from pathlib import Path

__all__ = ["configure_parser", "run", "load_fitters", "read_folders"]


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


def read_folders(folders, limit=None, progress=True):
    """Read every folder (skipping bad items). Returns (images, bad_items)."""
    from menpo_densereg.data.readers import read_pts_folder

    images, bad = [], []
    for folder in folders:
        r = read_pts_folder(folder, on_error="skip", progress=progress)
        images += list(r)[:limit] if limit else list(r)
        bad += r.bad
    return images, bad


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


def run(args):
    from menpo_densereg.evaluation.benchmark import run_benchmark

    progress = not args.no_progress
    fitters = load_fitters(args.fitters)
    images, bad = read_folders(args.folders, args.limit, progress)
    if not images:
        raise ValueError(
            f"no usable annotated image in {', '.join(map(str, args.folders))}"
        )
    result = run_benchmark(
        fitters,
        images,
        boxes=tuple(args.boxes or ("gt",)),
        progress=progress,
        bad_items=bad,
    )
    paths = result.write(args.out, max_error=args.max_error)
    print(result.table())
    print("\nwrote " + ", ".join(str(p) for p in paths.values()))
    return 0
