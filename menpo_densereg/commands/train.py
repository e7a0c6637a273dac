"""``menpo-densereg train fitters/<name>``: train a fitter from its recipe."""

import importlib
from pathlib import Path

__all__ = ["configure_parser", "run"]


def configure_parser(parser):
    parser.add_argument(
        "fitter", help="fitter folder (with recipe.toml) or shipped name"
    )
    parser.add_argument(
        "--steps", type=int, default=None, help="override the recipe's number of steps"
    )
    parser.add_argument(
        "--device",
        default=None,
        help="'auto' (default: CUDA when present), 'cpu', 'cuda:0'...",
    )
    parser.add_argument(
        "--no-resume",
        dest="resume",
        action="store_false",
        help="start afresh even if a checkpoint exists (a checkpoint of another "
        "configuration is never resumed: it is refused with an error)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="write weights/card here instead of the fitter folder",
    )


def run(args):
    from menpo_densereg.fitting.registry import TRAINERS, fitter_dir
    from menpo_densereg.fitting.recipes import load_recipe

    d = fitter_dir(args.fitter)
    recipe = load_recipe(d)
    kind = recipe["fitter"]["kind"]
    if kind not in TRAINERS:
        raise ValueError(
            f"{d}/recipe.toml: kind {kind!r} is not trainable "
            f"(trainable: {sorted(TRAINERS)})"
        )
    module = importlib.import_module(TRAINERS[kind])
    out = args.out or d
    if args.out is not None:
        out.mkdir(parents=True, exist_ok=True)
        from menpo_densereg.atomic import atomic_write_text

        atomic_write_text(out / "recipe.toml", Path(recipe["_path"]).read_text())
    module.train_from_recipe(recipe, out, args)
    return 0
