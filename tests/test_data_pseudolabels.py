import numpy as np
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
