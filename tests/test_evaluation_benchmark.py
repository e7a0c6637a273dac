import csv
import json

import numpy as np
import pytest
from menpo.image import Image
from menpo.shape import PointCloud
from menpofit.result import Result

from menpo_densereg.evaluation.benchmark import run_benchmark
from menpo_densereg.data.boxes import box_from_landmarks, box_iou
from menpo_densereg.cli import main
from menpo_densereg.data.markups import get_markup


class _Offset:
    """A fake fitter: the GT shape (passed through the image) shifted by an offset."""

    def __init__(self, offset, markup="68", fail_on=None):
        self.offset = np.asarray(offset, float)
        self.markup = get_markup(markup)
        self.name = f"offset{offset}"
        self.fail_on = fail_on

    def fit_from_bb(self, image, bounding_box, gt_shape=None):
        if self.fail_on is not None and image.path == self.fail_on:
            raise RuntimeError("boom")
        truth = image.truth
        return Result(PointCloud(truth + self.offset), initial_shape=PointCloud(truth))


def _face(path, scale=1.0, n=68):
    rng = np.random.default_rng(len(str(path)))
    pts = rng.uniform(20, 80, size=(n, 2)) * scale
    if n == 68:
        pts[36], pts[45] = [50 * scale, 20 * scale], [50 * scale, 80 * scale]
    im = Image(np.zeros((3, int(120 * scale), int(120 * scale))))
    im.landmarks["ibug68" if n == 68 else "wflw98"] = PointCloud(pts)
    im.truth = pts
    im.path = path
    return im


def test_run_benchmark_exact_errors_and_failures(tmp_path):
    images = [_face("a"), _face("b", 2.0), _face("c")]
    fitters = {"f": _Offset([3, 4]), "g": _Offset([0, 0], fail_on="c")}
    res = run_benchmark(fitters, images, progress=False)
    f = res.errors("f", "gt")
    # 5 px everywhere; normaliser 60 px (and 120 px for the image scaled by 2)
    np.testing.assert_allclose(sorted(f), sorted([5 / 60, 5 / 120, 5 / 60]))
    assert len(res.errors("g", "gt")) == 2
    failed = [r for r in res.records if r.error]
    assert len(failed) == 1 and "boom" in failed[0].error
    paths = res.write(tmp_path / "out")
    table = paths["table"].read_text()
    assert "outer eye corners (36, 45)" in table and "errors" in table
    rows = list(csv.DictReader(paths["csv"].open()))
    assert len(rows) == 6 and {r["method"] for r in rows} == {"f", "g"}
    assert paths["ced_gt_ibug68"].read_bytes()[:4] == b"\x89PNG"
    assert not list((tmp_path / "out").glob("*.tmp*"))


def test_benchmark_converts_between_markups():
    im = _face("w", n=98)
    pts = im.truth
    res = run_benchmark({"f68": _Offset([0, 0], markup="98")}, [im], progress=False)
    assert res.records[0].nme == pytest.approx(0.0)
    assert res.records[0].markup == "wflw98"

    # a 68-point fitter on 98-point data is evaluated on the 68 correspondences
    class _F68(_Offset):
        def fit_from_bb(self, image, bounding_box, gt_shape=None):
            from menpo_densereg.data.markups import convert

            return Result(PointCloud(convert(pts, "98", "68").points + 1.0))

    res = run_benchmark({"x": _F68([0, 0])}, [im], progress=False)
    assert res.records[0].markup == "ibug68"
    d = np.linalg.norm(pts[60] - pts[72])
    assert res.records[0].nme == pytest.approx(np.sqrt(2) / d)


def test_boxes_from_landmarks_and_iou():
    b = box_from_landmarks(PointCloud(np.array([[10, 20], [30, 60], [np.nan, np.nan]])))
    np.testing.assert_allclose(b.bounds(), ([10, 20], [30, 60]))
    assert box_iou(b, b) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="degenerate"):
        box_from_landmarks(PointCloud(np.ones((5, 2))))
    with pytest.raises(ValueError):
        run_benchmark({}, [], boxes=("bogus",))


def test_dlib_benchmark_matches_independent_nme(shared_data, tmp_path):
    dlib = pytest.importorskip("dlib")
    from PIL import Image as PILImage

    from menpo_densereg.data.detectors import CALIBRATION_FILE
    from menpo_densereg.evaluation.peers import dlib_model_path

    out = tmp_path / "bench"
    assert (
        main(
            [
                "benchmark",
                str(shared_data / "faces68"),
                "-f",
                "dlib",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    rows = list(csv.DictReader((out / "per_image.csv").open()))
    assert len(rows) >= 10
    predictor = dlib.shape_predictor(str(dlib_model_path()))
    for row in rows[:5]:
        img_path = row["image"]
        pixels = np.asarray(PILImage.open(img_path).convert("RGB"))
        gt_xy = (
            np.loadtxt(
                [
                    ln
                    for ln in open(img_path.rsplit(".", 1)[0] + ".pts")
                    if ln[0].isdigit()
                ]
            )
            - 1.0
        )  # .pts is 1-based x y
        # the landmark box, mapped back to dlib's HOG-box convention (the inverse of
        # the stored "hog" calibration: centre += offset * size, size *= scale; y, x)
        cal = json.loads(CALIBRATION_FILE.read_text())["detectors"]["hog"]
        off_xy, scale_xy = np.array(cal["offset"])[::-1], np.array(cal["scale"])[::-1]
        lo, hi = gt_xy.min(0), gt_xy.max(0)
        size = (hi - lo) / scale_xy
        centre = (lo + hi) / 2 - off_xy * size
        lo, hi = centre - size / 2, centre + size / 2
        rect = dlib.rectangle(int(lo[0]), int(lo[1]), int(hi[0]), int(hi[1]))
        pred = np.array([(p.x, p.y) for p in predictor(pixels, rect).parts()], float)
        expected = np.linalg.norm(pred - gt_xy, axis=1).mean() / np.linalg.norm(
            gt_xy[36] - gt_xy[45]
        )
        assert float(row["nme"]) == pytest.approx(expected, rel=1e-6)
    assert "dlib-ert" in (out / "table.txt").read_text()


def test_cli_reports_bad_input(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert (
        main(
            [
                "benchmark",
                str(tmp_path / "empty"),
                "-f",
                "dlib",
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "empty" in err and "error" in err
    assert main(["benchmark", str(tmp_path), "-f", "no-such-fitter"]) == 2
    assert "no-such-fitter" in capsys.readouterr().err


def test_box_source_reaches_only_fitters_that_take_it(monkeypatch):
    """The detector's name goes to a fitter with ``uses_box_source`` (the dlib peer, to
    get its own HOG box back), never to the others (menpofit passes unknown keywords
    on to its algorithms)."""
    import menpo_densereg.evaluation.benchmark as B

    class _Sourced(_Offset):
        uses_box_source = True

        def fit_from_bb(self, image, bounding_box, gt_shape=None, box_source=None):
            self.seen.append(box_source)
            return super().fit_from_bb(image, bounding_box, gt_shape)

    im = _face("a")
    monkeypatch.setattr(
        B,
        "detector_box",
        lambda image, gt, detector=None: (box_from_landmarks(gt), "hog-side"),
    )
    sourced = _Sourced([0, 0])
    sourced.seen = []
    res = run_benchmark(
        {"s": sourced, "plain": _Offset([0, 0])},
        [im],
        boxes=("gt", "detector"),
        progress=False,
    )
    assert sourced.seen == ["gt", "hog-side"]
    assert not any(r.error for r in res.records)
