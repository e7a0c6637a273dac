"""Tests of the consensus labellers' cache lookup (no model is loaded)."""

import json

import pytest

from menpo_densereg.fitting.labellers import (
    DEFAULT_LABELLERS,
    cached_consensus_versions,
    consensus_sources,
)


def _cache(root, pool, digest, labellers, versions, n):
    d = root / "consensus68" / f"{pool}-{digest}"
    d.mkdir(parents=True)
    prov = {"pool": pool, "labellers": list(labellers), "versions": versions}
    (d / "provenance.json").write_text(json.dumps(prov))
    for i in range(n):
        (d / f"face_{i}.json").write_text("{}")


def test_cached_versions_pick_the_largest_cache_of_these_labellers(tmp_path):
    names = ("dlib-ert", "ours")
    assert cached_consensus_versions("/x/pool", names, cache_dir=tmp_path) is None
    _cache(tmp_path, "pool", "aaaa", names, {"dlib-ert": "1", "ours": "old"}, 5)
    _cache(tmp_path, "pool", "bbbb", names, {"dlib-ert": "1", "ours": "new"}, 2)
    _cache(tmp_path, "pool", "cccc", ("dlib-ert", "other"), {"x": "y"}, 9)
    _cache(tmp_path, "otherpool", "dddd", names, {"dlib-ert": "1", "ours": "z"}, 9)
    got = cached_consensus_versions("/data/pool", names, cache_dir=tmp_path)
    assert got == {"dlib-ert": "1", "ours": "old"}
    # a corrupt provenance file is skipped, not fatal
    (tmp_path / "consensus68" / "pool-aaaa" / "provenance.json").write_text("{")
    got = cached_consensus_versions("/data/pool", names, cache_dir=tmp_path)
    assert got == {"dlib-ert": "1", "ours": "new"}


def test_consensus_sources_rejects_unknown_choice():
    with pytest.raises(ValueError, match="consensus_labels"):
        consensus_sources("/x/pool", DEFAULT_LABELLERS, which="latest")


def test_pool_images_rejects_unknown_kind(tmp_path):
    from menpo_densereg.fitting.labellers import pool_images

    with pytest.raises(ValueError, match="pool kind 'pseudo68'"):
        pool_images("pseudo68", tmp_path)


def test_pool_images_reads_the_cache_of_the_named_labellers(tmp_path, monkeypatch):
    """``[data] consensus_labellers`` picks whose labels a recipe trains on: the cached
    records of exactly those labellers, the first one's shape as the label."""
    import numpy as np
    import PIL.Image

    from menpo_densereg.data.pseudolabels import consensus_cache
    from menpo_densereg.data.splits import split_files
    from menpo_densereg.fitting.labellers import pool_images

    pool = tmp_path / "pool"
    pool.mkdir()
    for i in range(6):
        PIL.Image.new("RGB", (40, 40), (90, 90, 90)).save(
            pool / f"Some_One{i}_0001.jpg"
        )
    train = split_files(pool)[0]
    assert train
    cache = tmp_path / "cache"
    named = ("dlib-ert", "densereg-decafa-mdm-face")
    label = np.tile(np.arange(68.0)[:, None] * 0.4 + 5, (1, 2))
    # one cache per labeller pair (folder = pool + digest of the versions, as written
    # by consensus_pseudo_labels); the default pair's labels are 3 px off
    for names, shift in ((named, 0.0), (DEFAULT_LABELLERS, 3.0)):
        versions = {n: "v1" for n in names}
        folder = consensus_cache(pool, versions, cache)
        digest = folder.name.split("-")[-1]
        _cache(cache, "pool", digest, names, versions, 0)
        for f in train:
            shapes = {
                n: (label + shift + 0.2 * k).tolist() for k, n in enumerate(names)
            }
            rec = {"status": "ok", "nme": 0.01, "shapes": shapes}
            path = folder / f"{f.stem}.json"
            path.write_text(json.dumps(rec))
    monkeypatch.setenv("MENPO_DENSEREG_CACHE", str(cache))
    options = {"consensus_labels": "cached", "consensus_labellers": list(named)}
    images, summary = pool_images("consensus68", pool, options)
    assert summary["labellers"] == list(named) and len(images) == len(train)
    np.testing.assert_allclose(images[0].landmarks["PTS"].points, label)
    fused, _ = pool_images("consensus68", pool, dict(options, consensus_label="mean"))
    np.testing.assert_allclose(fused[0].landmarks["PTS"].points, label + 0.1)
    default, _ = pool_images("consensus68", pool, {"consensus_labels": "cached"})
    np.testing.assert_allclose(default[0].landmarks["PTS"].points, label + 3)
    for bad in (["dlib-ert"], "dlib-ert"):
        with pytest.raises(ValueError, match="consensus_labellers"):
            pool_images("consensus68", pool, dict(options, consensus_labellers=bad))


def test_version_matches_the_whole_string_or_its_digest():
    from menpo_densereg.fitting.labellers import version_matches

    v = "menpo-densereg 0.1.0, a3e2bcbe7baf"
    assert version_matches(v, v)
    assert version_matches(v, "a3e2bcbe7baf")
    assert not version_matches(v, "bcbe7baf")  # a digest is matched whole
    assert not version_matches(v, "")
    assert not version_matches(None, "a3e2bcbe7baf")


def test_pinned_versions_pick_that_cache_not_the_largest(tmp_path):
    names = ("dlib-ert", "ours")
    _cache(tmp_path, "pool", "aaaa", names, {"dlib-ert": "d, 1", "ours": "p, old"}, 2)
    _cache(tmp_path, "pool", "bbbb", names, {"dlib-ert": "d, 1", "ours": "p, new"}, 9)
    got = cached_consensus_versions(
        "/data/pool", names, cache_dir=tmp_path, pins={"ours": "old"}
    )
    assert got == {"dlib-ert": "d, 1", "ours": "p, old"}
    none = cached_consensus_versions(
        "/data/pool", names, cache_dir=tmp_path, pins={"ours": "gone"}
    )
    assert none is None


def test_consensus_sources_with_a_pin_nothing_matches_raises(tmp_path, monkeypatch):
    from menpo_densereg.fitting import labellers

    names = ("dlib-ert", "ours")
    monkeypatch.setattr(
        labellers,
        "consensus_labellers",
        lambda n: (["L1", "L2"], {"dlib-ert": "d, 1", "ours": "p, now"}),
    )
    monkeypatch.setattr(labellers, "cached_consensus_versions", lambda *a, **k: None)
    # the current labellers have the pinned version: they are used
    got = consensus_sources("/x/pool", names, which="cached", pins={"ours": "now"})
    assert got == (["L1", "L2"], {"dlib-ert": "d, 1", "ours": "p, now"}, True)
    with pytest.raises(
        ValueError, match="consensus_versions.*no consensus-label cache"
    ):
        consensus_sources("/x/pool", names, which="cached", pins={"ours": "old"})
    with pytest.raises(ValueError, match="consensus_versions"):
        consensus_sources("/x/pool", names, which="current", pins={"ours": "old"})
    with pytest.raises(ValueError, match="not among consensus_labellers"):
        consensus_sources("/x/pool", names, which="cached", pins={"other": "old"})
    with pytest.raises(ValueError, match="expected a table"):
        consensus_sources("/x/pool", names, which="cached", pins=["old"])
    with pytest.raises(ValueError, match="version string or digest"):
        consensus_sources("/x/pool", names, which="cached", pins={"ours": 3})
