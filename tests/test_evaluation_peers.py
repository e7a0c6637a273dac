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
