from pathlib import Path

import numpy as np
import pytest
from menpo.image import Image
from menpo.shape import PointCloud
from menpofit.result import Result

from menpo_densereg.data.markups import convert
from menpo_densereg.data.pseudolabels import _exact_rows, pseudo_label_68


class _Peer:
    def __init__(self, shape):
        self.shape = shape

    def fit_from_bb(self, image, box, gt_shape=None):
        return Result(PointCloud(self.shape))


def _image_with_29(pts68, noise=0.0):
    im = Image(np.zeros((3, 200, 200)))
    pts29 = convert(pts68, "68", "29").points + noise
    im.landmarks["lfpw29"] = PointCloud(pts29)
    im.path = "x.png"
    return im


def _pts68():
    rng = np.random.default_rng(3)
    p = rng.uniform(60, 140, (68, 2))
    p[36], p[45] = [90, 60], [90, 140]
    return p


def test_exact_rows_skip_approximations():
    rows = _exact_rows("29")
    assert rows[36] == 8 and rows[45] == 9 and rows[8] == 28
    assert 19 not in rows and 24 not in rows  # brow top/bottom both from one point


def test_pseudo_labels_accept_agreeing_and_reject_disagreeing(monkeypatch):
    import menpo_densereg.data.pseudolabels as pl

    monkeypatch.setattr(
        pl, "detector_box", lambda im, s, min_iou: (s.bounding_box(), "gt")
    )
    pts = _pts68()
    im = _image_with_29(pts, noise=0.5)
    acc, rej = pseudo_label_68([im], peer=_Peer(pts), progress=False)
    assert len(acc) == 1 and not rej
    lab = acc[0].landmarks["ibug68"].points
    # exact correspondences come from the manual points, the rest from the peer
    np.testing.assert_allclose(lab[36], im.landmarks["lfpw29"].points[8])
    np.testing.assert_allclose(lab[0], pts[0])
    acc, rej = pseudo_label_68([im], peer=_Peer(pts + 30.0), progress=False)
    assert not acc and len(rej) == 1 and rej[0][1] > 0.06


def test_consensus_labels_keep_agreeing_faces_and_cache_provenance(
    monkeypatch, tmp_path
):
    import json

    import menpo.io as mio

    import menpo_densereg.data.pseudolabels as pl
    from menpo.shape import bounding_box

    pts = _pts68()
    folder = tmp_path / "pool"
    folder.mkdir()
    for k in range(3):
        mio.export_image(Image(np.full((3, 40, 40), 0.1 * k)), folder / f"P_{k}.png")
    calls = []

    class _Shifted(_Peer):
        """Agrees with the reference on image 0 and 1, not on image 2."""

        def fit_from_bb(self, image, box, gt_shape=None):
            calls.append(1)
            shift = 30.0 if image.pixels.mean() > 0.15 else 0.5
            return Result(PointCloud(self.shape + shift))

    fitters = {"dlib-ref": lambda: _Peer(pts), "ours": _Shifted(pts)}
    versions = {"dlib-ref": "dlib-ref v1", "ours": "ours v1"}
    monkeypatch.setattr(
        pl, "_central_detection", lambda im: bounding_box((5, 5), (35, 35))
    )
    kept, s = pl.consensus_pseudo_labels(
        folder, fitters, versions, max_nme=0.05, cache_dir=tmp_path, progress=False
    )
    assert [p.name for p, _, _ in kept] == ["P_0.png", "P_1.png"]
    np.testing.assert_allclose(kept[0][1], pts, atol=1e-3)  # the first labeller's
    assert s["n_labelled"] == 3 and s["n_kept"] == 2
    assert abs(s["kept_fraction"] - 2 / 3) < 1e-9
    assert s["versions"] == {"dlib-ref": "dlib-ref v1", "ours": "ours v1"}
    prov = json.loads((Path(s["cache"]) / "provenance.json").read_text())
    assert prov["labellers"] == ["dlib-ref", "ours"]
    # cached: a second call (looser threshold) labels nothing and keeps all three
    n_calls = len(calls)
    kept, s = pl.consensus_pseudo_labels(
        folder, fitters, versions, max_nme=1.0, cache_dir=tmp_path, progress=False
    )
    assert len(calls) == n_calls and s["n_kept"] == 3 and s["label_seconds"] == 0.0
    # label fusion: the mean of the two labellers' shapes (0.5 px apart on P_0)
    kept, s = pl.consensus_pseudo_labels(
        folder, fitters, versions, cache_dir=tmp_path, progress=False, label="mean"
    )
    assert s["label"] == "mean" and len(calls) == n_calls
    np.testing.assert_allclose(kept[0][1], pts + 0.25, atol=1e-3)
    with pytest.raises(ValueError, match="'first' or 'mean'"):
        pl.consensus_pseudo_labels(folder, fitters, versions, label="median")
    with pytest.raises(ValueError, match="two or more"):
        pl.consensus_pseudo_labels(folder, {"ours": fitters["ours"]}, versions)
    with pytest.raises(ValueError, match="versions"):
        pl.consensus_pseudo_labels(folder, fitters, {"ours": "v1"}, cache_dir=tmp_path)


def test_convention_offset_recovers_a_systematic_shift():
    from menpo_densereg.data.pseudolabels import apply_offset, convention_offset

    pts = _pts68()
    shift = np.zeros((68, 2))
    shift[27:36, 0] = 4.0  # the peer puts the nose 4 px lower (eye distance 80 px)
    images = []
    for angle in (0.0, 0.3):
        c = pts.mean(0)
        R = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        im = Image(np.zeros((1, 200, 200)))
        im.landmarks["PTS"] = PointCloud((pts - c) @ R.T + c)
        im.peer = PointCloud((pts + shift - c) @ R.T + c)
        images.append(im)

    class _Own(_Peer):
        def fit_from_bb(self, image, box, gt_shape=None):
            return Result(image.peer)

    off = convention_offset(images, peer=_Own(None), boxes="gt")
    np.testing.assert_allclose(off[30], [4.0 / 80, 0.0], atol=1e-9)
    np.testing.assert_allclose(off[0], [0.0, 0.0], atol=1e-9)
    moved = apply_offset(images[1].landmarks["PTS"], off)
    np.testing.assert_allclose(moved.points, images[1].peer.points, atol=1e-9)
    with pytest.raises(ValueError, match="boxes"):
        convention_offset(images, peer=_Own(None), boxes="nope")
