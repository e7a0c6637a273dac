"""Ear DenseReg (DenseReg §4.7): dense ear dataset, training, model file, shipped chains."""

from pathlib import Path

import numpy as np
import pytest
import torch
from menpo.image import Image
from menpo.shape import PointCloud

from menpo_densereg.densereg.network import DenseRegConfig, DenseRegNet
from menpo_densereg.densereg.ear import (
    EAR_HELD_OUT,
    EarDenseDataset,
    EarDenseRegInitialiser,
    canonical_ear_shapes,
    ear_chirality,
    ear_split,
    load_ear_densereg,
    load_ears,
    save_ear_densereg,
    train_ear_densereg,
)
from menpo_densereg.template.ears import EarSpace
from menpo_densereg.fitting.base import box_from_shape
from menpo_densereg.evaluation.metrics import nme
from menpo_densereg.densereg.readout import ShapePCA
from menpo_densereg.fitting.weights import WeightsError, load_weights

FITTERS = Path(__file__).resolve().parents[1] / "fitters"


def _mean_ear():
    """The shipped reference ear (densereg-ear), scaled to a ~100 px box."""
    f = FITTERS / "densereg-ear" / "weights.safetensors"
    if not f.is_file():
        pytest.skip("densereg-ear weights not shipped")
    tensors, _ = load_weights(f, as_torch=False)
    ref = tensors["space.reference"].astype(float)
    ref = ref - (ref.min(0) + ref.max(0)) / 2
    return ref * 100.0 / (ref.max(0) - ref.min(0)).max()


def _synthetic_ears(n=4, size=100, seed=0):
    """Ears drawn as bright dots + polylines on noise, from the shipped mean ear."""
    rng = np.random.default_rng(seed)
    mean = _mean_ear()
    out = []
    for k in range(n):
        pts = mean * rng.uniform(0.45, 0.55) + size / 2 + rng.normal(0, 1.0, mean.shape)
        px = rng.uniform(0.0, 0.3, (3, size, size)).astype(np.float64)
        for a, b in zip(pts[:-1], pts[1:]):
            for t in np.linspace(0, 1, 8):
                y, x = np.round(a + t * (b - a)).astype(int)
                px[:, max(y - 1, 0) : y + 2, max(x - 1, 0) : x + 2] = (0.9, 0.6, 0.5)
        im = Image(px, copy=False)
        im.landmarks["ear55"] = PointCloud(pts)
        im.path = Path(f"synthetic_ear_{k}.png")
        out.append(im)
    return out


def _space(images):
    return EarSpace.from_shapes([im.landmarks["ear55"].points for im in images])


def test_ear_dense_dataset_items_have_the_dense_format():
    ims = _synthetic_ears(3)
    ds = EarDenseDataset(ims, _space(ims), size=48, length=10, seed=1)
    assert len(ds) == 10
    it = ds[0]
    assert it["image"].shape == (3, 48, 48) and it["image"].dtype == torch.float32
    assert 0.0 <= float(it["image"].min()) and float(it["image"].max()) <= 1.0
    assert it["uv"].shape == (2, 48, 48) and it["mask"].shape == (48, 48)
    assert it["lm_ear55"].shape == (55, 2) and float(it["has_ear55"]) == 1.0
    mask = it["mask"].numpy() > 0.5
    assert 0.05 < mask.mean() < 0.9
    uv = it["uv"].numpy()
    assert np.all(uv[:, ~mask] == 0)
    assert 0.0 <= uv.min() and uv.max() <= 1.0
    # the landmarks lie on the ear mask and the field there is near their reference UV
    sp = ds.space
    lm = it["lm_ear55"].numpy()
    r, c = np.clip(np.round(lm).astype(int), 0, 47).T
    inside = mask[r, c]
    assert inside.mean() > 0.6
    got = uv[:, r, c].T[inside]
    assert np.median(np.abs(got - sp.uv[inside])) < 0.05
    # deterministic per index; plain items are the tight box, unaugmented
    assert torch.equal(ds[3]["image"], ds[3]["image"])
    plain = EarDenseDataset(ims, sp, size=48, augment=False)
    assert len(plain) == 3
    lm0 = plain[0]["lm_ear55"].numpy()
    span = lm0.max(0) - lm0.min(0)
    assert abs(span.max() - 48 / 1.5) < 1.0


def test_dataset_rejects_unknown_augmentation_and_bad_shapes():
    ims = _synthetic_ears(2)
    with pytest.raises(ValueError, match="augment"):
        EarDenseDataset(ims, _space(ims), augment={"nope": 1})
    bad = ims[0].copy()
    bad.landmarks["ear55"] = PointCloud(np.zeros((54, 2)))
    with pytest.raises(ValueError):
        EarDenseDataset([bad], _space(ims))


def test_flipped_items_keep_landmark_uv():
    ims = _synthetic_ears(2)
    ds = EarDenseDataset(ims, _space(ims), size=48, length=20, augment={"p_flip": 1.0})
    it = ds[0]
    mask = it["mask"].numpy() > 0.5
    lm = it["lm_ear55"].numpy()
    r, c = np.clip(np.round(lm).astype(int), 0, 47).T
    inside = mask[r, c]
    got = it["uv"].numpy()[:, r, c].T[inside]
    assert np.median(np.abs(got - ds.space.uv[inside])) < 0.05


def test_chirality_and_split():
    ims = _synthetic_ears(3)
    s = [im.landmarks["ear55"].points for im in ims]
    mirrored = s[1] * np.array([1.0, -1.0])
    assert ear_chirality(s[1], s[0]) == 1
    assert ear_chirality(mirrored, s[0]) == -1
    canon = canonical_ear_shapes([s[0], mirrored])
    assert ear_chirality(canon[1], s[0]) == 1
    train, test = ear_split(ims, held_out=["synthetic_ear_1"])
    assert [p.path.stem for p in test] == ["synthetic_ear_1"] and len(train) == 2
    assert len(EAR_HELD_OUT) == 7


def test_tiny_training_lowers_the_loss():
    torch.manual_seed(0)
    from menpo_densereg.training import TrainConfig

    ims = _synthetic_ears(4)
    cfg = DenseRegConfig(input_size=48, width=8, n_bins=4, depth_head=False)
    tc = TrainConfig(
        steps=40,
        batch_size=8,
        lr=3e-3,
        warmup=5,
        progress=False,
        out_dir=None,
        log_every=1,
        device="cpu",
    )
    net, space, pca, hist = train_ear_densereg(ims, cfg, tc, pca=True)
    losses = [h["loss"] for h in hist["train"] if "loss" in h]
    assert len(losses) >= 10
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])
    assert isinstance(pca, ShapePCA) and pca.n_points == 55
    assert space.n_shapes == 4


def test_save_load_round_trip(tmp_path):
    ims = _synthetic_ears(4)
    space = _space(ims)
    net = DenseRegNet(
        DenseRegConfig(input_size=48, width=8, n_bins=4, depth_head=False)
    )
    pca = ShapePCA.from_shapes([im.landmarks["ear55"].points for im in ims])
    path = tmp_path / "ear.safetensors"
    save_ear_densereg(path, net.eval(), space, pca, extra={"note": "test"})
    net2, space2, pca2, header = load_ear_densereg(path)
    assert header["extra"]["note"] == "test"
    np.testing.assert_allclose(space2.uv, space.uv)
    np.testing.assert_allclose(pca2.mean, pca.mean, atol=1e-6)
    a = EarDenseRegInitialiser(net, space, pca, use_pca=True)
    b = EarDenseRegInitialiser(net2, space2, pca2, use_pca=True)
    box = box_from_shape(ims[0].landmarks["ear55"])
    ra, rb = a.fit_from_bb(ims[0], box), b.fit_from_bb(ims[0], box)
    assert ra.final_shape.n_points == 55
    np.testing.assert_allclose(ra.final_shape.points, rb.final_shape.points, atol=1e-3)
    # a foreign or corrupt file is one clear error naming it
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a model")
    with pytest.raises(WeightsError, match="bad.safetensors"):
        load_ear_densereg(bad)
    with pytest.raises(ValueError, match="PCA"):
        EarDenseRegInitialiser(net, space, None, use_pca=True)


def test_shipped_ear_chain_on_held_out_ears(shared_data):
    from menpo_densereg.fitting.registry import load_fitter

    if not (FITTERS / "densereg-ear" / "weights.safetensors").is_file():
        pytest.skip("densereg-ear weights not trained")
    torch.set_num_threads(1)
    ears = load_ears(shared_data / "ears55")
    assert len(ears) == 21  # 7 empty PNGs skipped; one ear has a point at x = -1
    _, test = ear_split(ears)
    assert sorted(p.path.stem for p in test) == sorted(EAR_HELD_OUT)
    for name in ("densereg-mdm-ear", "densereg-aam-ear"):
        chain = load_fitter(name, cache=False)
        assert chain.markup.name == "ear55"
        e0, e1 = [], []
        for im in test:
            gt = im.landmarks["ear55"]
            res = chain.fit_from_bb(im, box_from_shape(gt), gt_shape=gt)
            # shapes in the image frame: near the GT box
            assert res.final_shape.n_points == 55
            lo, hi = gt.bounds()
            c = res.final_shape.points.mean(0)
            assert np.all(c > lo - (hi - lo)) and np.all(c < hi + (hi - lo))
            errs = res.stage_errors(lambda s, g: nme(s, g, "ear55"))
            e0.append(errs["initialiser"])
            e1.append(errs["refiner"])
        assert np.mean(e1) <= np.mean(e0) + 1e-9, (name, np.mean(e0), np.mean(e1))
        assert np.mean(e1) < 0.2


def test_backbone_transfer_loads_matching_backbones_only(tmp_path):
    from menpo_densereg.densereg.ear import _load_backbone

    ims = _synthetic_ears(3)
    src = DenseRegNet(
        DenseRegConfig(input_size=48, width=8, n_bins=4, depth_head=False)
    )
    path = tmp_path / "src.safetensors"
    save_ear_densereg(path, src.eval(), _space(ims))
    dst = DenseRegNet(
        DenseRegConfig(input_size=64, width=8, n_bins=6, depth_head=False)
    )
    _load_backbone(dst, path)
    for (k, a), b in zip(
        src.backbone.state_dict().items(), dst.backbone.state_dict().values()
    ):
        assert torch.equal(a, b), k
    wide = DenseRegNet(
        DenseRegConfig(input_size=48, width=16, n_bins=4, depth_head=False)
    )
    with pytest.raises(ValueError, match="backbone does not match"):
        _load_backbone(wide, path)
