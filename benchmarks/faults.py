"""Fault benchmark: bad files, killed runs and big folders, one table.

Every case runs in its own Python process (so that its peak memory is its own) and
prints one row: the case, its outcome, and the process's peak resident memory. The
cases make their own files under a temporary folder; no shared data is needed.

- ``kill_resume``: a training run is killed (SIGKILL) after a checkpoint, resumed, and
  its final weights hashed; an uninterrupted run with the same seed must give the same
  hash (bit-identical on CPU).
- ``stream20`` / ``stream200``: ``menpo-densereg benchmark`` on 20 and on 200 copies of
  one 1 MP photo; the peak memory must not grow with the number of images (within 10 %).
- ``bomb``: a 13,000 x 13,000 px PNG of a few hundred kB beside two good images: a
  per-item skip with its reason, not a crash and not GBs of memory.
- ``png16``, ``nan_weights``, ``recipe_bool``, ``box_outside``, ``only_bad``,
  ``points67``, ``shared_out``: the remaining faults of issue 14, each with its exit
  code or exception and message.

Usage::

    python benchmarks/faults.py                 # all cases (about 2 min on 2 CPUs)
    python benchmarks/faults.py --cases kill_resume stream20 stream200
    python benchmarks/faults.py --fitter densereg-face   # a real fitter in stream*
"""

import argparse
import hashlib
import json
import os
import resource
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

CASES = [
    "kill_resume",
    "stream20",
    "stream200",
    "bomb",
    "png16",
    "nan_weights",
    "recipe_bool",
    "box_outside",
    "only_bad",
    "points67",
    "shared_out",
]


def _peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ------------------------------------------------------------------------ data makers


def _face_points(h, w):
    rng = np.random.default_rng(0)
    pts = rng.uniform([0.3 * h, 0.25 * w], [0.8 * h, 0.75 * w], size=(68, 2))
    pts[36], pts[45] = [0.45 * h, 0.3 * w], [0.45 * h, 0.7 * w]
    return pts


def _write_pts(path, pts):
    from menpo.shape import PointCloud

    from menpo_densereg.data.readers import write_pts

    write_pts(path, PointCloud(pts))


def _photo(path, size=1000):
    """A 1 MP JPEG (smooth noise, so that it does not compress to nothing)."""
    import PIL.Image

    rng = np.random.default_rng(0)
    small = (rng.random((size // 8, size // 8, 3)) * 255).astype(np.uint8)
    img = PIL.Image.fromarray(small).resize((size, size), PIL.Image.BILINEAR)
    img.save(path, quality=90)


def _bomb_png(path, side=13000):
    """A grey PNG of ``side`` x ``side`` zeros, written row by row (tiny file)."""

    def chunk(kind, data):
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    comp = zlib.compressobj(9)
    row = b"\x00" * (side + 1)
    parts = [comp.compress(row) for _ in range(side)]
    parts.append(comp.flush())
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr))
        f.write(chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b""))


class _GTFitter:
    """Ground truth + 2 px: measures the reading/streaming, not a network."""

    name = "gt+2"

    def __init__(self):
        from menpo_densereg.data.markups import get_markup

        self.markup = get_markup("68")

    def fit_from_bb(self, image, bounding_box, gt_shape=None):
        from menpo.shape import PointCloud
        from menpofit.result import Result

        return Result(PointCloud(np.asarray(gt_shape.points) + 2.0))


def _cli(argv, fake_fitter=True):
    """Run ``menpo-densereg`` in this process; returns (exit code, stderr text)."""
    import contextlib
    import io

    from menpo_densereg.cli import main

    if fake_fitter:
        import menpo_densereg.commands.benchmark as bench
        import menpo_densereg.commands.fit as fit

        bench.load_fitters = lambda specs: {"gt+2": _GTFitter()}
        fit.load_fitter_by_name = lambda name: _GTFitter()
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    return code, err.getvalue()


# ---------------------------------------------------------------------------- cases


def _train_child(out, steps, sleep):
    """The training run of ``kill_resume`` (a child process); prints the weights hash."""
    import torch

    from menpo_densereg.training import TrainConfig, seed_everything, train_loop

    torch.set_num_threads(1)

    class Items(torch.utils.data.Dataset):
        def __len__(self):
            return 50

        def __getitem__(self, i):
            g = torch.Generator().manual_seed(i)
            x = torch.rand(1, 24, 24, generator=g)
            x = x + torch.from_numpy(np.random.rand(1, 24, 24).astype(np.float32)) * 0.1
            return {"x": x, "y": torch.tensor([float(x.mean())])}

    def loss_fn(model, batch, device):
        time.sleep(sleep)
        pred = model(batch["x"])
        return torch.nn.functional.mse_loss(pred, batch["y"]), {}

    seed_everything(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Dropout(0.2),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(8, 1),
    )
    cfg = TrainConfig(
        steps=steps,
        batch_size=6,
        lr=0.01,
        warmup=3,
        ckpt_every=5,
        out_dir=str(out),
        progress=False,
        device="cpu",
    )
    train_loop(net, Items(), loss_fn, cfg)
    h = hashlib.sha256()
    for k, v in net.state_dict().items():
        h.update(k.encode() + v.numpy().tobytes())
    return h.hexdigest()


def case_kill_resume(tmp):
    steps = 40
    child = [sys.executable, __file__, "--train-child"]
    whole = subprocess.run(
        child + [str(tmp / "whole"), str(steps)], capture_output=True, text=True
    )
    h_whole = whole.stdout.split()[-1]
    proc = subprocess.Popen(
        child + [str(tmp / "killed"), str(steps)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    ckpt = tmp / "killed" / "checkpoint.pt"
    killed_at = None
    from menpo_densereg.training import load_checkpoint

    while proc.poll() is None:
        if ckpt.is_file():
            try:
                step = int(load_checkpoint(ckpt)["step"])
            except ValueError:
                step = 0
            if step >= 15:
                proc.send_signal(signal.SIGKILL)
                killed_at = step
                break
        time.sleep(0.02)
    proc.wait()
    resumed = subprocess.run(
        child + [str(tmp / "killed"), str(steps)], capture_output=True, text=True
    )
    h_resumed = resumed.stdout.split()[-1]
    same = h_resumed == h_whole
    outcome = (
        f"killed after the step-{killed_at} checkpoint, resumed: weights "
        f"{'identical' if same else 'DIFFER'} (sha256 {h_resumed[:12]} vs "
        f"{h_whole[:12]})"
    )
    return outcome, same


def _stream(tmp, n, fitter):
    folder = tmp / f"photos{n}"
    folder.mkdir()
    _photo(folder / "src.jpg")
    pts = _face_points(1000, 1000)
    for i in range(n):
        os.link(folder / "src.jpg", folder / f"p{i:04d}.jpg")
        _write_pts(folder / f"p{i:04d}.pts", pts)
    (folder / "src.jpg").unlink()
    argv = ["benchmark", str(folder), "--out", str(tmp / "out"), "--no-progress"]
    argv += ["-f", fitter or "gt"]
    code, err = _cli(argv, fake_fitter=fitter is None)
    rows = (tmp / "out" / "per_image.csv").read_text().count("\n") - 1
    return f"exit {code}, {rows} images measured", code == 0 and rows == n


def case_bomb(tmp):
    folder = tmp / "bomb"
    folder.mkdir()
    for i in range(2):
        _photo(folder / f"good{i}.jpg", 300)
        _write_pts(folder / f"good{i}.pts", _face_points(300, 300))
    _bomb_png(folder / "bomb.png")
    _write_pts(folder / "bomb.pts", _face_points(300, 300))
    size = (folder / "bomb.png").stat().st_size
    code, err = _cli(["benchmark", str(folder), "-f", "gt", "--out", str(tmp / "o")])
    table = (tmp / "o" / "table.txt").read_text() if code == 0 else err
    ok = code == 0 and "bomb.png" in table and "MP limit" in table
    return f"{size // 1024} kB PNG of 13000x13000 px: exit {code}, skipped", ok


def case_png16(tmp):
    import PIL.Image

    from menpo_densereg.commands.fit import _read_rgb
    from menpo_densereg.data.readers import read_image

    ramp = np.linspace(0, 65535, 256 * 256).reshape(256, 256).astype(np.uint16)
    p = tmp / "deep.png"
    PIL.Image.fromarray(ramp).save(p)
    bench = read_image(p).pixels[0]
    fit = np.asarray(_read_rgb(p))[..., 0] / 255.0
    white = float((fit >= 1.0).mean())
    diff = float(np.abs(fit - bench).max())
    return f"fit vs benchmark max |diff| {diff:.4f}, {100 * white:.1f} % white", (
        diff < 0.003 and white < 0.01
    )


def case_nan_weights(tmp):
    import torch

    from menpo_densereg.fitting.weights import WeightsError, load_weights, save_weights

    save_weights(tmp / "nan.safetensors", {"w": torch.full((4,), float("nan"))}, "mdm")
    try:
        load_weights(tmp / "nan.safetensors")
    except WeightsError as e:
        return f"WeightsError: {str(e).split(': ', 1)[1][:60]}...", True
    return "loaded (NaN weights accepted)", False


def case_recipe_bool(tmp):
    from menpo_densereg.fitting.recipes import RecipeError, load_recipe

    (tmp / "recipe.toml").write_text(
        '[fitter]\nkind = "densereg"\n[readout]\npca = "no"'
    )
    try:
        load_recipe(tmp)
    except RecipeError as e:
        return f"RecipeError: {str(e).split(': ', 1)[1]}", True
    return "accepted", False


def case_box_outside(tmp):
    import PIL.Image

    PIL.Image.new("RGB", (96, 96)).save(tmp / "face.png")
    code, err = _cli(
        ["fit", str(tmp / "face.png"), "--box", "500,500,600,600", "--out", str(tmp)]
    )
    written = [p.name for p in tmp.iterdir() if p.name != "face.png"]
    return f"exit {code}: {err.strip().split('error: ')[-1][:70]}", (
        code == 2 and not written
    )


def case_only_bad(tmp):
    (tmp / "broken.png").write_bytes(b"\x89PNG not really")
    _write_pts(tmp / "broken.pts", _face_points(96, 96))
    _write_pts(tmp / "lonely.pts", _face_points(96, 96))
    code, err = _cli(["benchmark", str(tmp), "-f", "gt", "--out", str(tmp / "o")])
    n = err.count("  skipped ")
    return f"exit {code}, {n} skip reasons printed", code == 2 and n == 2


def case_points67(tmp):
    import PIL.Image

    for i in range(2):
        PIL.Image.new("RGB", (96, 96)).save(tmp / f"f{i}.png")
        _write_pts(tmp / f"f{i}.pts", _face_points(96, 96)[:67])
    code, err = _cli(["benchmark", str(tmp), "-f", "gt", "--out", str(tmp / "o")])
    ok = code == 2 and "67" in err and not (tmp / "o").exists()
    return f"exit {code}, reason names the 67 points", ok


def case_shared_out(tmp):
    import PIL.Image

    PIL.Image.new("RGB", (96, 96)).save(tmp / "a.png")
    _write_pts(tmp / "a.pts", _face_points(96, 96))
    out = tmp / "o"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (out / ".benchmark.lock").write_text(f"{holder.pid}\n")
        code, err = _cli(["benchmark", str(tmp), "-f", "gt", "--out", str(out)])
    finally:
        holder.kill()
        holder.wait()
    return f"second run: exit {code}, refused (lock held)", (
        code == 2 and "another benchmark" in err
    )


def run_case(name, fitter=None):
    with tempfile.TemporaryDirectory(prefix=f"faults-{name}-") as d:
        tmp = Path(d)
        if name == "stream20":
            outcome, ok = _stream(tmp, 20, fitter)
        elif name == "stream200":
            outcome, ok = _stream(tmp, 200, fitter)
        else:
            outcome, ok = globals()[f"case_{name}"](tmp)
    return {"case": name, "outcome": outcome, "ok": bool(ok), "peak_mb": _peak_mb()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", nargs="+", choices=CASES, default=CASES)
    parser.add_argument("--fitter", default=None, help="a real fitter for stream*")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--train-child", nargs=2, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.train_child:
        print(_train_child(args.train_child[0], int(args.train_child[1]), 0.03))
        return 0
    if args.one:
        print("RESULT " + json.dumps(run_case(args.one, args.fitter)))
        return 0
    env = dict(os.environ, OMP_NUM_THREADS="1")
    rows = []
    for name in args.cases:
        cmd = [sys.executable, __file__, "--one", name]
        if args.fitter:
            cmd += ["--fitter", args.fitter]
        t0 = time.perf_counter()
        run = subprocess.run(cmd, capture_output=True, text=True, env=env)
        line = [x for x in run.stdout.splitlines() if x.startswith("RESULT ")]
        if run.returncode or not line:
            tail = (run.stderr or run.stdout).strip().splitlines()[-1:]
            row = {"case": name, "outcome": f"CRASHED: {tail}", "ok": False}
            row["peak_mb"] = float("nan")
        else:
            row = json.loads(line[0][len("RESULT ") :])
        row["seconds"] = time.perf_counter() - t0
        rows.append(row)
        print(
            f"  {name}: {'ok' if row['ok'] else 'FAIL'} ({row['seconds']:.0f} s)",
            file=sys.stderr,
        )
    width = max(len(r["outcome"]) for r in rows)
    print(f"{'case':<12} {'ok':<4} {'outcome':<{width}} {'peak RSS':>9}")
    print("-" * (12 + 4 + width + 12))
    for r in rows:
        print(
            f"{r['case']:<12} {'yes' if r['ok'] else 'NO':<4} "
            f"{r['outcome']:<{width}} {r['peak_mb']:>6.0f} MB"
        )
    peaks = {r["case"]: r["peak_mb"] for r in rows}
    if "stream20" in peaks and "stream200" in peaks:
        growth = peaks["stream200"] / peaks["stream20"] - 1
        verdict = "within 10 %" if abs(growth) <= 0.10 else "MORE than 10 %"
        print(
            f"\npeak RSS, 200 vs 20 images: {peaks['stream200']:.0f} vs "
            f"{peaks['stream20']:.0f} MB ({100 * growth:+.1f} %, {verdict})"
        )
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    if "--one" in sys.argv or "--train-child" in sys.argv:
        import menpo_densereg  # noqa: F401  (the compat fixes before menpofit)
    sys.exit(main())
