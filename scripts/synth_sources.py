"""Write a folder of training faces (image links + 300-W ``.pts``) for ``menpo-densereg synth``.

The data engine's command reads one folder of annotated images; the recipes' training
faces come from several folders and label sources (``offset68:``, ``consensus68:``,
``pseudo68:`` specs of :func:`menpo_densereg.densereg.train.load_image_folders`). This
script resolves such a list of specs, keeps the training side of the person split
(:mod:`menpo_densereg.data.splits`) and writes, for every face, a symbolic link to its
image and its (possibly moved or pseudo-) labels as ``.pts``::

    python scripts/synth_sources.py --out /tmp/synth_src \\
        faces68/afw faces68/300wlp video68/001 video68/401 wflw98 \\
        offset68:ytf68 consensus68:unlabelled_lfw --offset68-every 8 --max-faces 400
    menpo-densereg synth /tmp/synth_src --out runs/synth/decafa-v4 -n 4000 --size 64
"""

import argparse
from pathlib import Path

import menpo_densereg  # noqa: F401  (compat fixes first)


def main(argv=None):
    from tqdm.auto import tqdm

    from menpo_densereg.data.readers import write_pts
    from menpo_densereg.data.splits import split_of
    from menpo_densereg.densereg.train import load_image_folders

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("specs", nargs="+", help="folders under --root, or pool specs")
    ap.add_argument(
        "--root",
        default=str(Path(__file__).resolve().parents[1] / ".." / "shared" / "data"),
    )
    ap.add_argument("--out", required=True)
    ap.add_argument("--offset68-every", type=int, default=8)
    ap.add_argument("--max-faces", type=int, default=400, help="per consensus pool")
    ap.add_argument("--exclude", nargs="*", default=["7_Cheering_Cheering_7_16_40"])
    ap.add_argument(
        "--labeller",
        action="append",
        help="consensus labeller names in order, as a recipe's [data] "
        "consensus_labellers (default: the recipes' default pair)",
    )
    ap.add_argument(
        "--label",
        choices=("first", "mean"),
        default="first",
        help="consensus label: the first labeller's shape or the mean of them all",
    )
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = {
        "offset68_every": args.offset68_every,
        "consensus_labels": "cached",
        "consensus_label": args.label,
    }
    if args.labeller:
        data["consensus_labellers"] = list(args.labeller)
    images = load_image_folders(
        Path(args.root).resolve(),
        args.specs,
        consensus_max_faces=args.max_faces,
        data=data,
    )
    n = 0
    for k, im in enumerate(tqdm(images, desc="write")):
        src = Path(im.path).resolve()
        if src.stem in args.exclude or split_of(src) == "heldout":
            continue
        stem = f"{k:05d}_{src.stem}"
        link = out / f"{stem}{src.suffix}"
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(src)
        group = im.landmarks.group_labels[0]
        write_pts(out / f"{stem}.pts", im.landmarks[group])
        n += 1
    print(f"{n} training faces written to {out}")


if __name__ == "__main__":
    main()
