"""Tests of menpo_densereg.data.splits (split by person, stable)."""

import pytest

from menpo_densereg.data.splits import (
    heldout_ytf68_frames,
    is_held_out_person,
    person_of,
    split_files,
    split_of,
)


def test_person_of_strips_frame_number_and_t_suffix():
    assert person_of("a/ytf68/Tom_Hanks_41_t.jpg") == "Tom_Hanks"
    assert person_of("Terje_Roed-Larsen_02.pts") == "Terje_Roed-Larsen"
    assert person_of("unlabelled_lfw/AJ_Lamas_0001.jpg") == "AJ_Lamas"
    with pytest.raises(ValueError, match="noname.jpg"):
        person_of("noname.jpg")


def test_split_is_stable_and_near_the_fraction():
    names = [f"Person_{i}" for i in range(2000)]
    held = [is_held_out_person(n) for n in names]
    # fixed values: the split never moves (a changed hash or salt fails here)
    assert held == [is_held_out_person(n) for n in names]
    assert 0.12 < sum(held) / len(held) < 0.18
    assert is_held_out_person("x", fraction=1.0)
    assert not is_held_out_person("x", fraction=0.0)
    with pytest.raises(ValueError, match="fraction"):
        is_held_out_person("x", fraction=1.5)


def test_split_rules_by_folder():
    assert split_of("d/faces68/lfpw/image_0001.png") == "heldout"
    assert split_of("d/faces68/helen/221458225_1.jpg") == "heldout"
    assert split_of("d/faces68/afw/18489332_4.jpg") == "train"
    assert split_of("d/unlabelled_utk/10_0_0_2017.jpg") == "train"
    # one person, same side in ytf68 and LFW; two faces of one Helen photo together
    for name in ["Tom_Hanks", "Zhang_Ziyi", "Adam_Sandler", "Wes_Craven"]:
        assert split_of(f"d/ytf68/{name}_10.jpg") == split_of(
            f"d/unlabelled_lfw/{name}_0001.jpg"
        )
    for photo in range(100, 400):
        assert split_of(f"d/helen29/{photo}_1.jpg") == split_of(
            f"d/helen29/{photo}_2.jpg"
        )


def test_ytf68_no_person_straddles_the_split(shared_data):
    train, held = split_files(shared_data / "ytf68")
    assert len(train) + len(held) == 3549
    people_train = {person_of(p) for p in train}
    people_held = {person_of(p) for p in held}
    assert not people_train & people_held
    assert 0.08 < len(people_held) / (len(people_train) + len(people_held)) < 0.22
    # LFW images of held-out ytf68 people are held out too
    lfw_train, _ = split_files(shared_data / "unlabelled_lfw")
    assert not {person_of(p) for p in lfw_train} & people_held
    # stable: the same split again
    assert split_files(shared_data / "ytf68") == (train, held)
    frames = heldout_ytf68_frames(shared_data / "ytf68", per_person=5)
    assert {person_of(p) for p in frames} == people_held
    assert all(not p.stem.endswith("_t") for p in frames)
    assert set(frames) <= set(held)
