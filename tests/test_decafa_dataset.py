import numpy as np
import pytest
import torch
from menpo.image import Image
from menpo.shape import PointCloud

from menpo_densereg.decafa.dataset import (
    FLIP_PERMUTATIONS,
    AlternatingSourceSampler,
    AugmentConfig,
    DenseSampleAdapter,
    LandmarkDataset,
    MixedLandmarkDataset,
    _record_from_image,
    derived_markups,
    flip_permutation,
    load_landmark_folder,
    to_grey,
)
from menpo_densereg.data.markups import conversion_matrix, get_markup


def _mirror(pts, perm):
    out = pts.copy()
    out[:, 1] = -out[:, 1]
    return out[perm]


@pytest.mark.parametrize("markup", sorted(FLIP_PERMUTATIONS))
def test_flip_permutations_are_involutions(markup):
    perm = flip_permutation(markup)
    n = get_markup(markup).n_points
    assert sorted(perm) == list(range(n))
    assert np.array_equal(perm[perm], np.arange(n))


def test_flip_maps_left_eye_to_right_eye():
    for m in FLIP_PERMUTATIONS:
        g = get_markup(m).groups
        perm = flip_permutation(m)
        assert sorted(perm[list(g["left_eye"])]) == sorted(g["right_eye"])
        if "left_eyebrow" in g:
            assert sorted(perm[list(g["left_eyebrow"])]) == sorted(g["right_eyebrow"])


@pytest.mark.parametrize(
    "src,dst",
    [
        ("wflw98", "ibug68"),
        ("ibug68", "five"),
        ("ibug68", "lfpw29"),
        ("wflw98", "five"),
    ],
)
def test_flip_commutes_with_markup_conversion(src, dst):
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(get_markup(src).n_points, 2))
    M = conversion_matrix(src, dst)
    a = M @ _mirror(pts, flip_permutation(src))
    b = _mirror(M @ pts, flip_permutation(dst))
    assert np.allclose(a, b)


def test_derived_markups():
    assert derived_markups("68") == ["ibug68", "lfpw29", "five"]
    assert derived_markups("98") == ["wflw98", "ibug68", "lfpw29", "five"]
    assert derived_markups("29") == ["lfpw29"]


def _synthetic_record(size=64):
    # a bright square "face" with 68 points on a grid inside it
    px = np.zeros((3, 200, 200), np.float32)
    px[:, 60:140, 50:150] = 1.0
    ys, xs = np.meshgrid(
        np.linspace(70, 130, 4), np.linspace(60, 140, 17), indexing="ij"
    )
    pts = np.stack([ys.ravel(), xs.ravel()], 1)
    image = Image(px)
    return _record_from_image(image, PointCloud(pts), "ibug68", size), pts


def test_plain_crop_matches_crop_face():
    from menpo_densereg.data.crop import crop_face
    from menpo_densereg.fitting.base import box_from_shape

    rec, pts = _synthetic_record()
    ds = LandmarkDataset([rec], size=64, augment=None)
    item = ds[0]
    px = np.zeros((3, 200, 200), np.float32)
    px[:, 60:140, 50:150] = 1.0
    crop, tr = crop_face(Image(px), box_from_shape(pts), 64, margin=0.25)
    expect = tr.pseudoinverse().apply(PointCloud(pts)).points
    assert np.allclose(item["lm_ibug68"].numpy(), expect, atol=0.05)
    assert item["image"].shape == (3, 64, 64)
    assert np.abs(item["image"].numpy() - crop.pixels).mean() < 0.03
    assert item["has_ibug68"] == 1 and item["has_wflw98"] == 0
    assert item["has_five"] == 1 and item["has_lfpw29"] == 1
    assert item["vis_wflw98"].sum() == 0 and item["vis_ibug68"].sum() == 68


def test_augmentation_is_deterministic_and_keeps_landmarks_on_the_face():
    rec, _ = _synthetic_record()
    ds = LandmarkDataset(
        [rec], size=64, augment=AugmentConfig(), seed=3, repeats=20, channels=1
    )
    a, b = ds[5], ds[5]
    assert torch.equal(a["image"], b["image"]) and torch.equal(
        a["lm_ibug68"], b["lm_ibug68"]
    )
    assert a["image"].shape == (1, 64, 64)
    assert not torch.equal(ds[5]["lm_ibug68"], ds[6]["lm_ibug68"])
    for i in range(20):
        it = ds[i]
        pts = it["lm_ibug68"].numpy()
        vis = it["vis_ibug68"].numpy() > 0
        yx = np.clip(np.round(pts[vis]).astype(int), 0, 63)
        # landmarks lie on the bright square (photometric changes keep it brighter)
        inside = it["image"][0].numpy()[yx[:, 0], yx[:, 1]]
        assert np.median(inside) > np.median(it["image"][0].numpy()) - 0.05


def test_flip_keeps_left_landmarks_on_the_image_left():
    rec, _ = _synthetic_record()
    aug = AugmentConfig(
        jitter=0,
        scale=0,
        rotation=0,
        flip=1.0,
        brightness=0,
        contrast=0,
        gamma=0,
        noise=0,
    )
    item = LandmarkDataset([rec], size=64, augment=aug)[0]
    plain = LandmarkDataset([rec], size=64, augment=None)[0]
    f, p = item["lm_ibug68"].numpy(), plain["lm_ibug68"].numpy()
    # the same points, relabelled: flipped shape = mirror of the plain shape, permuted
    mirrored = p.copy()
    mirrored[:, 1] = 63 - mirrored[:, 1]
    assert np.allclose(f, mirrored[flip_permutation("ibug68")], atol=1e-3)
    assert f[36, 1] < f[45, 1]  # left eye corner still left of the right one


def test_alternating_source_sampler_batches_one_source_at_a_time():
    sampler = AlternatingSourceSampler([10, 3, 25], batch_size=4, n_batches=9, seed=0)
    batches = sampler.batches()
    assert len(batches) == 9 and len(list(iter(sampler))) == 36
    bounds = [(0, 10), (10, 13), (13, 38)]
    for k, batch in enumerate(batches):
        lo, hi = bounds[k % 3]
        assert all(lo <= i < hi for i in batch)
    sampler.set_epoch(0)
    again = AlternatingSourceSampler([10, 3, 25], batch_size=4, n_batches=9, seed=0)
    assert again.batches() == batches


def test_mixed_dataset_and_dense_adapter():
    rec, _ = _synthetic_record()
    real = LandmarkDataset([rec], size=64, repeats=4)
    fake = [
        {
            "image": torch.rand(3, 128, 128),
            "uv": torch.rand(2, 128, 128),
            "lm_ibug68": torch.full((68, 2), 127.0),
            "has_ibug68": torch.tensor(1.0),
            "vis_ibug68": torch.ones(68),
        }
    ]
    adapted = DenseSampleAdapter(fake, size=64, channels=1)
    item = adapted[0]
    assert item["image"].shape == (1, 64, 64) and "uv" not in item
    assert torch.allclose(item["lm_ibug68"], torch.full((68, 2), 63.0))
    assert item["has_wflw98"] == 0
    mixed = MixedLandmarkDataset([real, DenseSampleAdapter(fake, size=64)])
    assert mixed.source_sizes == [4, 1]
    batch = torch.utils.data.default_collate([mixed[0], mixed[4]])
    assert batch["lm_ibug68"].shape == (2, 68, 2)


def test_to_grey():
    rgb = torch.rand(2, 3, 8, 8)
    g = to_grey(rgb)
    assert g.shape == (2, 1, 8, 8)
    assert torch.equal(to_grey(g), g)


def test_real_folders_load_with_their_markups(shared_data):
    recs = load_landmark_folder(shared_data / "wflw98", size=64)
    assert len(recs) == 5
    assert set(recs[0].shapes) == {"wflw98", "ibug68", "lfpw29", "five"}
    ds = LandmarkDataset(recs, size=64, augment=AugmentConfig(), seed=0)
    item = ds[0]
    assert item["lm_wflw98"].shape == (98, 2) and item["has_wflw98"] == 1
    helen = load_landmark_folder(
        shared_data / "helen29", size=64, exclude={"100032540_1"}
    )
    assert len(helen) == 299
    assert set(helen[0].shapes) == {"lfpw29"}
    # 29-point order: left eye outer corner (8) left of the right one (9), chin lowest
    shape = helen[0].shapes["lfpw29"]
    assert shape[8, 1] < shape[9, 1] and shape[28, 0] == shape[:, 0].max()


def test_bad_arguments():
    with pytest.raises(ValueError, match="records"):
        LandmarkDataset([])
    rec, _ = _synthetic_record()
    with pytest.raises(ValueError, match="channels"):
        LandmarkDataset([rec], channels=2)
    with pytest.raises(ValueError, match="source_sizes"):
        AlternatingSourceSampler([0, 3], batch_size=2)
