"""Tests of the data engine, the dense datasets and the make-gt / synth commands."""

import numpy as np
import pytest
import torch

import menpo.io as mio
from menpo_densereg.densereg.dataset import (
    DenseShardDataset,
    RealDenseDataset,
    SyntheticDenseDataset,
)
from menpo_densereg.template.synthesis import (
    SAMPLE_KEYS,
    DataEngine,
    SynthConfig,
    annotated_face,
    real_sample,
    write_shards,
)

S = 64


@pytest.fixture(scope="module")
def images():
    a = mio.import_builtin_asset.takeo_ppm().rescale(0.5)
    b = mio.import_builtin_asset.einstein_jpg().rescale(0.12)
    return [a, b]


@pytest.fixture(scope="module")
def engine(images):
    return DataEngine(
        [annotated_face(im) for im in images], SynthConfig(size=S), seed=3
    )


def _check_format(s, size=S):
    assert set(SAMPLE_KEYS) <= set(s)
    assert s["image"].shape == (3, size, size) and s["image"].dtype == np.float32
    assert 0 <= s["image"].min() and s["image"].max() <= 1
    assert s["uv"].shape == (2, size, size) and s["uv"].dtype == np.float32
    m = s["mask"]
    assert m.shape == (size, size) and set(np.unique(m)) <= {0.0, 1.0} and m.sum() > 50
    assert s["uv"].min() >= 0 and s["uv"].max() <= 1 and np.all(s["uv"][:, m == 0] == 0)
    assert (
        s["depth"].dtype == np.float32
        and s["depth"].min() >= 0
        and s["depth"].max() <= 1
    )
    assert s["parts"].dtype == np.int64 and np.all(s["parts"][m == 0] == 0)
    assert set(np.unique(s["parts"][m > 0])) <= set(range(1, 9))
    for name, n in [("ibug68", 68), ("wflw98", 98), ("lfpw29", 29), ("five", 5)]:
        assert s[f"lm_{name}"].shape == (n, 2) and s[f"lm_{name}"].dtype == np.float32
        assert s[f"vis_{name}"].shape == (n,)
        assert np.asarray(s[f"has_{name}"]).shape == ()


def _visible_on_mask(s, name="ibug68"):
    pts = s[f"lm_{name}"][s[f"vis_{name}"] > 0]
    r, c = np.clip(np.rint(pts).astype(int), 0, S - 1).T
    on = np.zeros(len(pts), bool)
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            on |= s["mask"][np.clip(r + dr, 0, S - 1), np.clip(c + dc, 0, S - 1)] > 0
    return on.mean()


def test_real_sample_format_and_landmarks(engine):
    s = real_sample(engine.faces[0], engine.config, np.random.default_rng(0))
    _check_format(s)
    assert s["has_ibug68"] == 1 and s["has_wflw98"] == 1
    assert _visible_on_mask(s) > 0.9
    plain = real_sample(
        engine.faces[0], engine.config, np.random.default_rng(0), augment=False
    )
    lm = plain["lm_ibug68"]  # the un-jittered crop centres the landmark box
    centre = (lm.min(0) + lm.max(0)) / 2
    np.testing.assert_allclose(centre, (S - 1) / 2, atol=1.0)
    only = real_sample(
        engine.faces[0], engine.config, np.random.default_rng(0), derived_markups=False
    )
    assert (
        only["has_ibug68"] == 1
        and only["has_wflw98"] == 0
        and not only["lm_wflw98"].any()
    )


def test_synthetic_samples_cover_profiles_and_are_deterministic(engine):
    yaws = []
    for i in range(12):
        s = engine.sample(i)
        _check_format(s)
        assert _visible_on_mask(s) > 0.85
        yaws.append(abs(float(s["pose"][0])))
    assert max(yaws) > 70 and min(yaws) < 45
    a, b = engine.sample(5), engine.sample(5)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    c = DataEngine(engine.faces, engine.config, seed=4).sample(5)
    assert not np.array_equal(a["image"], c["image"])


def test_profile_hides_the_far_side(engine):
    from menpo_densereg.template.synthesis import TexturedFace

    tex = TexturedFace(engine.faces[0])
    posed = tex.posed(85, 0, 0)
    from menpo_densereg.template.groundtruth import rasterise

    lo = posed.vertices_xy.min(0)
    fit = posed.warped(np.array([[1, 0, -lo[1] + 2], [0, 1, -lo[0] + 2]], float))
    gt = rasterise(fit, (120, 120))
    pts, depth = fit.landmarks("68")
    vis = gt.is_visible(pts, depth)
    left_eye, right_eye = vis[36:42].mean(), vis[42:48].mean()
    assert min(left_eye, right_eye) < 0.2 and max(left_eye, right_eye) > 0.6


def test_datasets_and_shards(images, tmp_path):
    ds = RealDenseDataset(images, size=S, seed=1)
    assert len(ds) == 2 and "RealDenseDataset" in str(ds)
    x, y = ds[1], ds[1]
    assert all(torch.equal(x[k], y[k]) for k in x)
    assert x["image"].dtype == torch.float32 and x["parts"].dtype == torch.int64
    ds.set_epoch(1)
    assert not torch.equal(ds[1]["image"], x["image"])
    syn = SyntheticDenseDataset(images, size=S, length=5, seed=2)
    paths = write_shards(
        (syn.sample(i) for i in range(5)), tmp_path / "c", shard_size=2
    )
    assert len(paths) == 3
    cache = DenseShardDataset(tmp_path / "c")
    assert len(cache) == 5
    for i in (0, 3, 4):
        a, b = cache[i], syn[i]
        assert all(torch.equal(a[k], b[k]) for k in a)
    batch = next(iter(torch.utils.data.DataLoader(cache, batch_size=5)))
    assert batch["uv"].shape == (5, 2, S, S)
    with pytest.raises(IndexError):
        cache[5]


def test_bad_inputs(images, tmp_path):
    from menpo.shape import PointCloud

    im = images[0].copy()
    im.landmarks["PTS"] = PointCloud(im.landmarks["PTS"].points[:5])
    with pytest.raises(ValueError, match="68- or 98-point"):
        annotated_face(im)
    with pytest.raises(FileNotFoundError):
        DenseShardDataset(tmp_path / "nothing")
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "shard_0000000.npz").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="shard_0000000.npz"):
        DenseShardDataset(tmp_path / "e")
    with pytest.raises(ValueError, match="no usable"):
        RealDenseDataset([im], size=S)


def test_commands(images, tmp_path, capsys):
    from menpo_densereg.cli import main
    from menpo_densereg.data.readers import write_pts

    src = tmp_path / "src"
    src.mkdir()
    for k, im in enumerate(images):
        mio.export_image(im, src / f"face{k}.png")
        write_pts(src / f"face{k}.pts", im.landmarks["PTS"])
    assert (
        main(
            [
                "make-gt",
                str(src),
                "--out",
                str(tmp_path / "gt"),
                "--overlays",
                "--no-progress",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "wrote dense ground truth for 2/2" in out and "median" in out
    with np.load(tmp_path / "gt" / "face0.npz", allow_pickle=False) as f:
        assert f["u"].shape == images[0].shape and f["landmarks"].shape == (68, 2)
    assert (tmp_path / "gt" / "face0.png").stat().st_size > 1000
    args = [
        "synth",
        str(src),
        "-n",
        "3",
        "--seed",
        "7",
        "--size",
        "32",
        "--no-progress",
    ]
    assert main(args + ["--out", str(tmp_path / "s1"), "--overlays", "1"]) == 0
    assert main(args + ["--out", str(tmp_path / "s2")]) == 0
    assert "samples/s" in capsys.readouterr().out
    a = (tmp_path / "s1" / "shard_0000000.npz").read_bytes()
    assert a == (tmp_path / "s2" / "shard_0000000.npz").read_bytes()
    assert (tmp_path / "s1" / "overlays" / "sample_00000.png").exists()
    assert main(["synth", str(src), "--out", str(tmp_path / "s3"), "-n", "0"]) == 2


def test_flip_sample_mirrors_everything(engine):
    from menpo_densereg.template.synthesis import flip_sample
    from menpo_densereg.template.face import FaceTemplate

    s = real_sample(
        engine.faces[0], engine.config, np.random.default_rng(0), augment=False
    )
    f = flip_sample(s)
    _check_format(f)
    np.testing.assert_array_equal(f["image"], s["image"][:, :, ::-1])
    m = s["mask"] > 0
    np.testing.assert_allclose(f["uv"][0][:, ::-1][m], 1 - s["uv"][0][m], atol=1e-6)
    # the left eye of the flipped face is the mirrored right eye of the original
    np.testing.assert_allclose(
        f["lm_ibug68"][36, 1], S - 1 - s["lm_ibug68"][45, 1], atol=1e-4
    )
    assert (f["parts"] == 3).sum() == (s["parts"] == 4).sum()
    back = flip_sample(f)
    for k in s:
        np.testing.assert_allclose(back[k], s[k], atol=1e-6)
    t = FaceTemplate.load()
    assert list(t.flip_permutation("5")) == [1, 0, 2, 4, 3]
    assert t.flip_permutation("68")[48] == 54


def test_real_and_synthetic_items_collate_together(images):
    real = RealDenseDataset(images, size=32, seed=0)
    syn = SyntheticDenseDataset(images, size=32, length=2, seed=0)
    both = torch.utils.data.ConcatDataset([real, syn])
    batch = next(iter(torch.utils.data.DataLoader(both, batch_size=4)))
    assert set(batch) == set(SAMPLE_KEYS)
    assert batch["image"].shape == (4, 3, 32, 32)


def test_datasets_share_fitted_faces(images):
    real = RealDenseDataset(images, size=S, seed=1, length=4)
    again = RealDenseDataset(None, size=S, seed=1, length=4, faces=real.faces)
    assert again.faces == real.faces
    a, b = real.sample(3), again.sample(3)
    assert all(np.array_equal(np.asarray(a[k]), np.asarray(b[k])) for k in SAMPLE_KEYS)
    syn = SyntheticDenseDataset(None, size=S, length=3, seed=2, faces=real.faces)
    fresh = SyntheticDenseDataset(images, size=S, length=3, seed=2)
    x, y = syn.sample(2), fresh.sample(2)
    np.testing.assert_allclose(x["uv"], y["uv"], atol=1e-6)
    np.testing.assert_allclose(x["image"], y["image"], atol=1e-6)
