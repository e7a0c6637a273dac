"""Regression guard: every shipped fitter still fits faces (and ears) of held-out people.

Each shipped fitter is run from the tight landmark box on a few held-out images (faces:
``faces68`` lfpw + helen and one frame of every 4th held-out ``ytf68`` person, see
:mod:`menpo_densereg.data.splits`; ears: the ear recipes' held-out ears) and its mean
NME (outer eye corners for faces, the ear markup's normaliser for ears) must stay below
a fixed bound. Each bound is the value measured when the weights were shipped, plus a
margin of 15 % of it (at least 0.3 points), so that a broken model file, a wrong
markup or a regression in the fitting path fails here. This is not an accuracy
benchmark (``benchmarks/heldout_people.py`` is).

Re-measure after retraining with::

    python tests/test_fitting_heldout_guard.py
"""

import numpy as np
import pytest

#: shipped fitter -> mean NME (%) measured on the guard images when it shipped
#: (16 faces, 7 ears; measured 2026-12-02 with densereg-face v4, decafa-face v4, mdm-face v5, aam-face v3;
#: the three MDM rows re-measured with mdm-face v6, densereg-mdm-face now starting from densereg-face-pca;
#: the DenseReg and MDM rows re-measured in session 4 with densereg-face v6 (flip-averaged)
#: and mdm-face v7; the three DeCaFA rows re-measured in session 8 with decafa-face v7, and the
#: two MDM chains with their new refiner mdm-chain-face; the three mdm-chain-face rows
#: re-measured in session 9 with its v3; in session 10 the three with mdm-chain-face's flip on,
#: the densereg-decafa ensembles added, and the four mdm-chain-face rows with its v4; in
#: session 11 the four rows that read DenseReg+PCA, now from a 56 px field with radius 0.04,
#: then densereg-face-pca and densereg-decafa-face with 5 PCA components; in session 13 the
#: five rows that hold DeCaFA, with decafa-face v9, then the four mdm-chain-face rows with
#: its v5)
MEASURED = {
    "aam-ear": 11.21,
    "aam-face": 6.64,
    "box-aam-ear": 11.21,
    "box-aam-face": 6.66,
    "box-mdm-ear": 9.07,
    "decafa-aam-face": 6.93,
    "decafa-face": 5.55,
    "decafa-mdm-face": 5.45,
    "densereg-aam-ear": 10.68,
    "densereg-aam-face": 6.82,
    "densereg-decafa-face": 5.19,
    "densereg-decafa-mdm-face": 5.16,
    "densereg-ear": 11.92,
    "densereg-ear-pca": 10.87,
    "densereg-face": 6.63,
    "densereg-face-pca": 5.37,
    "densereg-mdm-ear": 11.82,
    "densereg-mdm-face": 5.12,
    "mdm-chain-face": 5.67,
    "mdm-ear": 9.07,
    "mdm-face": 5.60,
}

EAR_HELD_OUT = ("ear_10", "ear_18", "ear_25", "ear_30", "ear_36", "ear_40", "ear_9")


def bound(measured):
    """The guard's bound (%) for a measured mean NME (%)."""
    return measured + max(0.15 * measured, 0.3)


def guard_images(data, kind):
    """The guard's menpo images (landmarks in group ``"PTS"``) of ``kind`` face/ear."""
    from menpo_densereg.data.readers import read_image, read_pts
    from menpo_densereg.data.splits import heldout_ytf68_frames, split_files

    if kind == "ear":
        paths = [data / "ears55" / f"{stem}.png" for stem in EAR_HELD_OUT]
    else:
        paths = []
        for sub in ("lfpw", "helen"):
            paths += [
                p
                for p in split_files(data / "faces68" / sub)[1]
                if p.with_suffix(".pts").is_file()
            ]
        paths += heldout_ytf68_frames(data / "ytf68", per_person=1)[::4]
    images = []
    for p in paths:
        im = read_image(p)
        im.landmarks["PTS"] = read_pts(p.with_suffix(".pts"))
        images.append(im)
    assert images, f"no guard images of kind {kind}"
    return images


def measure(name, images):
    """Mean NME (%) of shipped fitter ``name`` from the tight landmark boxes."""
    from menpo_densereg.data.boxes import box_from_landmarks
    from menpo_densereg.evaluation.metrics import nme
    from menpo_densereg.fitting.registry import load_fitter

    fitter = load_fitter(name)
    errs = []
    for im in images:
        gt = im.landmarks["PTS"]
        res = fitter.fit_from_bb(im, box_from_landmarks(gt))
        errs.append(nme(res.final_shape, gt))
    return 100.0 * float(np.mean(errs))


def _kind(name):
    return "ear" if "ear" in name else "face"


@pytest.fixture(scope="module")
def guard_sets(shared_data):
    return {k: guard_images(shared_data, k) for k in ("face", "ear")}


def test_every_shipped_fitter_has_a_guard():
    from menpo_densereg.fitting.registry import list_fitters

    shipped = {n for n in list_fitters() if not n.startswith("decafa-ablations")}
    assert shipped - {"dlib-ert"} <= set(MEASURED), shipped - set(MEASURED)


@pytest.mark.parametrize("name", sorted(MEASURED))
def test_shipped_fitter_stays_below_its_guard(name, guard_sets):
    err = measure(name, guard_sets[_kind(name)])
    assert np.isfinite(err)
    assert err <= bound(MEASURED[name]), (
        f"{name}: mean NME {err:.2f} % on the held-out guard images, above its bound "
        f"{bound(MEASURED[name]):.2f} % (measured {MEASURED[name]:.2f} % when shipped)"
    )


if __name__ == "__main__":  # re-measure: prints the MEASURED table
    from pathlib import Path

    import menpo_densereg  # noqa: F401

    from menpo_densereg.fitting.registry import list_fitters

    data = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
    sets = {k: guard_images(data.resolve(), k) for k in ("face", "ear")}
    print({k: len(v) for k, v in sets.items()}, "guard images")
    print("MEASURED = {")
    for n in list_fitters():
        if n.startswith("decafa-ablations") or n == "dlib-ert":
            continue
        print(f'    "{n}": {measure(n, sets[_kind(n)]):.2f},', flush=True)
    print("}")
