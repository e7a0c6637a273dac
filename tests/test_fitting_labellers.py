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
