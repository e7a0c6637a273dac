"""DeCaFA ablations of the paper's Table-1 kind, on our real images, with equal budgets.

Trains every recipe of ``fitters/decafa-ablations/*/recipe.toml`` (F1 vs F5 fusion,
chained vs independent transfer layers, increasing vs constant stage weights, S = 1..4)
for the same number of steps and batch size, with the same data, held-out split and
seed, and prints one table of held-out NMEs (each markup with its own normaliser:
68 -> outer eye corners 36/45, 29 -> 8/9, 5 -> eye centres), plus the training time.

Usage::

    python benchmarks/decafa_ablations.py --steps 300 [--only baseline,fusion-f1] \
        [--out runs/decafa_ablations]

Nothing is written into ``fitters/``; checkpoints go to ``--out`` (fresh every run) and
the table to ``<out>/table.md`` and ``<out>/results.json``.
"""

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import menpo_densereg  # noqa: F401  (compat fixes first)
import torch

COLUMNS = [
    ("afw68", "ibug68"),
    ("afw68", "lfpw29"),
    ("afw68", "five"),
    ("helen29", "lfpw29"),
    ("wflw98", "ibug68"),
]


def main(argv=None):
    root = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="steps per variant")
    parser.add_argument(
        "--batch-size", type=int, default=None, help="override batch size"
    )
    parser.add_argument("--only", default=None, help="comma-separated variant names")
    parser.add_argument("--recipes", default=str(root / "fitters" / "decafa-ablations"))
    parser.add_argument("--out", default=str(root / "runs" / "decafa_ablations"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)

    from menpo_densereg.atomic import atomic_write_text
    from menpo_densereg.decafa.train import train_from_recipe
    from menpo_densereg.fitting.recipes import load_recipe

    torch.set_num_threads(args.threads)
    dirs = sorted(p.parent for p in Path(args.recipes).glob("*/recipe.toml"))
    if args.only:
        keep = set(args.only.split(","))
        dirs = [d for d in dirs if d.name in keep]
    if not dirs:
        raise SystemExit(f"no ablation recipes found in {args.recipes}")
    out = Path(args.out)
    rows = []
    for d in dirs:
        recipe = load_recipe(d)
        if args.batch_size:
            recipe.setdefault("train", {})["batch_size"] = args.batch_size
        recipe["train"]["val_every"] = 0  # validate once, at the end
        ckpt = out / d.name
        shutil.rmtree(ckpt, ignore_errors=True)
        ns = argparse.Namespace(
            steps=args.steps,
            device=args.device,
            resume=False,
            progress=False,
            out_dir=str(ckpt),
            save=False,
        )
        print(f"== {d.name}: {args.steps} steps", flush=True)
        t = time.perf_counter()
        summary = train_from_recipe(recipe, d, ns)
        m = recipe["model"]
        row = {
            "variant": d.name,
            "stages": m["n_stages"],
            "fusion": m["fusion"],
            "chained": m["chained"],
            "schedule": recipe.get("loss", {}).get("schedule", "increasing"),
            "steps": summary["steps"],
            "batch": recipe["train"]["batch_size"],
            "seconds": round(time.perf_counter() - t, 1),
            "final_loss": summary["final_train"].get("loss"),
            **{
                f"{s}/{k}": summary["final_val"].get(f"nme_{s}_{k}") for s, k in COLUMNS
            },
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    head = [
        "variant",
        "S",
        "fusion",
        "chained",
        "lambda",
        "steps x batch",
        "train s",
    ] + [f"{s} NME {k}" for s, k in COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        vals = [
            r["variant"],
            str(r["stages"]),
            r["fusion"],
            "yes" if r["chained"] else "no",
            r["schedule"],
            f"{r['steps']} x {r['batch']}",
            f"{r['seconds']:.0f}",
        ] + [
            "-" if r[f"{s}/{k}"] is None else f"{100 * r[f'{s}/{k}']:.2f}%"
            for s, k in COLUMNS
        ]
        lines.append("| " + " | ".join(vals) + " |")
    table = "\n".join(lines)
    print()
    print(table)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "table.md", table + "\n")
    atomic_write_text(out / "results.json", json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
