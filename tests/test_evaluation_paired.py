import importlib.util
from pathlib import Path

import numpy as np
import pytest

from menpo_densereg.evaluation.paired import (
    compare_methods,
    paired_table,
    person_group,
)

REPO = Path(__file__).resolve().parents[1]


def _rows(rng, shift):
    """Two DeCaFA models, each alone and + MDM, on 10 ytf68 people x 4 frames and
    6 single images; the candidate is ``shift`` better (negative) everywhere."""
    images = [f"ytf68/Person_{p}_{f:04d}.jpg" for p in range(10) for f in range(4)]
    images += [f"faces68/lfpw/image_{i}.png" for i in range(6)]
    rows = []
    for img in images:
        for chain in ("", "+MDM"):
            base = rng.uniform(0.03, 0.08)
            for tag, nme in (("decafa-face", base), ("_cand", base + shift)):
                for boxes in ("detector", "gt"):
                    rows.append(
                        dict(
                            set="ytf68" if "ytf68" in img else "faces68",
                            image=img,
                            boxes=boxes,
                            method=f"decafa-face[{tag}]{chain}",
                            nme=str(nme + rng.normal(0, 0.001)),
                        )
                    )
    return rows


def test_compare_methods_pairs_every_chain_and_groups_frames_by_person():
    rows = _rows(np.random.default_rng(0), shift=-0.01)
    paired = compare_methods(rows, "[decafa-face]", "[_cand]")
    # two sets x (alone, + MDM)
    assert sorted((p.set, p.method) for p in paired) == [
        ("faces68", "decafa-face[decafa-face]"),
        ("faces68", "decafa-face[decafa-face]+MDM"),
        ("ytf68", "decafa-face[decafa-face]"),
        ("ytf68", "decafa-face[decafa-face]+MDM"),
    ]
    for p in paired:
        assert p.mean == pytest.approx(-1.0, abs=0.1)  # points of %
        assert p.verdict == "better" and p.hi < 0
    ytf = next(p for p in paired if p.set == "ytf68")
    assert (ytf.n_images, ytf.n_groups) == (40, 10)
    f68 = next(p for p in paired if p.set == "faces68")
    assert (f68.n_images, f68.n_groups) == (6, 6)
    # the other way round it is worse
    worse = compare_methods(rows, "[_cand]", "[decafa-face]")
    assert all(p.verdict == "worse" for p in worse)


def test_compare_methods_leaves_failed_fits_out_and_ties_equal_models():
    rng = np.random.default_rng(1)
    rows = _rows(rng, shift=0.0)
    rows[0]["nme"] = "nan"  # one failed fit: its image leaves the pair
    paired = compare_methods(rows, "[decafa-face]", "[_cand]", boxes="detector")
    first = rows[0]
    p = next(p for p in paired if p.set == first["set"] and p.method == first["method"])
    assert p.n_images == 39
    assert all(p.verdict == "tie" for p in paired)
    assert compare_methods(rows, "[decafa-face]", "[nobody]") == []
    with pytest.raises(ValueError, match="two different tags"):
        compare_methods(rows, "[x]", "[x]")


def test_paired_table_escapes_pipes_and_states_the_verdict():
    rows = _rows(np.random.default_rng(2), shift=0.01)
    for r in rows:
        r["set"] = "large pose |yaw| 45-90"
    paired = compare_methods(rows, "[decafa-face]", "[_cand]")
    text = paired_table(paired, "[decafa-face]", "[_cand]")
    body = [line for line in text.splitlines() if line.startswith("| large")]
    assert len(body) == 2
    for line in body:
        assert line.count(" | ") == 6  # 7 cells: the set's pipes are escaped
        assert line.endswith("| worse |")
    assert str(paired[0]).endswith(
        f"{paired[0].mean:+.3f} [{paired[0].lo:+.3f}, {paired[0].hi:+.3f}] "
        "over 46 images of 16 people: worse"
    )


def test_person_group_joins_ytf68_frames_only():
    assert person_group("x/ytf68/Ann_Lee_0012.jpg") == "Ann_Lee"
    assert person_group("x/ytf68/Ann_Lee_0012_t.jpg") == "Ann_Lee"
    assert person_group("x/faces68/lfpw/Ann_Lee_0012.jpg").endswith("0012.jpg")


def test_heldout_people_pairs_each_candidate_with_the_first_model():
    spec = importlib.util.spec_from_file_location(
        "heldout_people", REPO / "benchmarks" / "heldout_people.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.candidate_pairs(["mdm-face"], None, None) == []
    assert mod.candidate_pairs(
        ["mdm-face", "fitters/_mdm8"], None, ["decafa-face", "fitters/_d7", "/x/_d8"]
    ) == [
        ("MDM[mdm-face]", "MDM[_mdm8]"),
        ("decafa-face[decafa-face]", "decafa-face[_d7]"),
        ("decafa-face[decafa-face]", "decafa-face[_d8]"),
    ]
    assert mod.candidate_pairs(["mdm-face"], ["densereg-face", "runs/_dr7"]) == [
        ("densereg-face[densereg-face]", "densereg-face[_dr7]")
    ]
    with pytest.raises(ValueError, match="named alike"):
        mod.candidate_pairs(["mdm-face", "other/mdm-face"])
