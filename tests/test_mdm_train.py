"""Tests of menpo_densereg.mdm.train's data plumbing (no network training here)."""

import numpy as np
import pytest

from menpo_densereg.mdm.train import MDMTrainingSet, SourceFace, _group_weights


def test_group_weights_give_each_group_its_share():
    w = _group_weights(
        {"manual": 10, "offset68:ytf68": 30, "consensus68:a": 20, "consensus68:b": 60},
        {"manual": 0.2, "offset68": 0.3, "consensus68": 0.5},
    )
    assert w.shape == (120,) and abs(w.sum() - 1) < 1e-12
    np.testing.assert_allclose(w[:10].sum(), 0.2)
    np.testing.assert_allclose(w[10:40].sum(), 0.3)
    # the consensus pools share their fraction by size
    np.testing.assert_allclose(w[40:60].sum(), 0.5 * 20 / 80)
    np.testing.assert_allclose(w[60:].sum(), 0.5 * 60 / 80)
    # groups without a fraction share what is left
    w = _group_weights({"manual": 4, "offset68:y": 4}, {"offset68": 0.75})
    np.testing.assert_allclose([w[:4].sum(), w[4:].sum()], [0.25, 0.75])


def test_source_face_keeps_several_initialiser_starts():
    gt = np.random.default_rng(0).uniform(60, 130, (68, 2))
    one = SourceFace(np.zeros((192, 192)), gt, gt + 1)
    assert one.init.shape == (1, 68, 2)
    two = SourceFace(np.zeros((192, 192)), gt, [gt + 1, gt - 1])
    assert two.init.shape == (2, 68, 2)
    with pytest.raises(ValueError, match="init"):
        SourceFace(np.zeros((192, 192)), gt, gt[:10])
    # items starting from an initialiser use one of the stored starts
    mean = gt - gt.mean(0)
    data = MDMTrainingSet(
        [two], mean, crop_size=32, augment={"p_init": 1.0, "init_noise": 0.0}, length=8
    )
    kinds = [int(data[i]["kind"]) for i in range(8)]
    assert kinds == [1] * 8
