import json

import numpy as np
import pytest
from PIL import Image as PILImage

from menpo_densereg.data.readers import (
    DatasetError,
    read_300vw,
    read_celeba,
    read_coco_keypoints,
    read_image,
    read_pts,
    read_pts_folder,
    read_wflw,
    write_pts,
)


def _img(path, size=(40, 30), mode="RGB"):
    rng = np.random.default_rng(0)
    if mode == "I;16":
        arr = rng.integers(0, 65535, size=(size[1], size[0]), dtype=np.uint16)
        PILImage.fromarray(arr).save(path)
    else:
        arr = rng.integers(0, 255, size=(size[1], size[0], 4), dtype=np.uint8)
        im = PILImage.fromarray(arr, "RGBA").convert(mode)
        im.save(path)
    return path


def _pts_text(xy):
    return "version: 1\nn_points: %d\n{\n%s\n}\n" % (
        len(xy),
        "\n".join(f"{x} {y}" for x, y in xy),
    )


def test_pts_is_one_based_xy_to_zero_based_yx(tmp_path):
    p = tmp_path / "a.pts"
    p.write_text(_pts_text([(11, 21), (31, 41)]))
    np.testing.assert_allclose(read_pts(p).points, [[20, 10], [40, 30]])
    write_pts(tmp_path / "b.pts", read_pts(p))
    np.testing.assert_allclose(
        read_pts(tmp_path / "b.pts").points, [[20, 10], [40, 30]]
    )


@pytest.mark.parametrize(
    "text,match",
    [
        ("version: 1\nn_points: 3\n{\n1 2\n3 4\n}\n", "header says n_points: 3"),
        ("version: 1\nn_points: 2\n{\n1 2\nnan 4\n}\n", "NaN"),
        ("version: 1\nn_points: 2\n{\n1 2\nfoo 4\n}\n", "not numeric"),
        ("garbage", "no '{ ... }' block"),
        ("{\n1 2 3\n}", "expected 'x y'"),
        ("{\n}", "no points"),
    ],
)
def test_bad_pts_files(tmp_path, text, match):
    p = tmp_path / "bad.pts"
    p.write_text(text)
    with pytest.raises(DatasetError, match=match) as e:
        read_pts(p)
    assert "bad.pts" in str(e.value)


def test_pts_wrong_count(tmp_path):
    p = tmp_path / "x.pts"
    p.write_text(_pts_text([(1, 1)] * 5))
    with pytest.raises(DatasetError, match="5 points, expected 68"):
        read_pts(p, n_points=68)


@pytest.mark.parametrize(
    "mode,channels", [("RGB", 3), ("L", 1), ("RGBA", 3), ("P", 3), ("I;16", 1)]
)
def test_read_image_modes(tmp_path, mode, channels):
    im = read_image(_img(tmp_path / f"x_{mode.replace(';', '')}.png", mode=mode))
    assert im.n_channels == channels and im.shape == (30, 40)
    assert im.pixels.dtype == np.float32
    assert 0 <= im.pixels.min() and im.pixels.max() <= 1
    if mode == "I;16":
        assert im.pixels.max() > 0.5  # scaled by 65535, not clipped at 255


def test_read_image_corrupt_and_missing(tmp_path):
    (tmp_path / "c.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(DatasetError, match="c.jpg: unreadable image"):
        read_image(tmp_path / "c.jpg")
    (tmp_path / "e.png").write_bytes(b"")
    with pytest.raises(DatasetError, match="e.png"):
        read_image(tmp_path / "e.png")
    with pytest.raises(DatasetError, match="not found"):
        read_image(tmp_path / "missing.png")


def test_pts_folder_skips_bad_items(tmp_path):
    for i in range(3):
        _img(tmp_path / f"f{i}.png")
        (tmp_path / f"f{i}.pts").write_text(_pts_text([(5 + i, 6)] * 7))
    (tmp_path / "f1.pts").write_text(_pts_text([(5, "nan")] * 7))
    (tmp_path / "lonely.pts").write_text(_pts_text([(5, 6)] * 7))
    with pytest.raises(DatasetError):
        read_pts_folder(tmp_path)
    r = read_pts_folder(tmp_path, on_error="skip")
    assert len(r) == 2 and len(r.bad) == 2
    assert {b[0].split("/")[-1] for b in r.bad} == {"f1.png", "lonely.pts"}
    assert r[0].landmarks["pts"].n_points == 7  # no known markup has 7 points
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no .pts"):
        read_pts_folder(tmp_path / "empty")
    with pytest.raises(DatasetError, match="folder not found"):
        read_pts_folder(tmp_path / "nope")


def test_landmarks_far_outside_image_are_rejected(tmp_path):
    _img(tmp_path / "a.png")
    (tmp_path / "a.pts").write_text(_pts_text([(500, 500)] * 5))
    with pytest.raises(DatasetError, match="far outside"):
        read_pts_folder(tmp_path)


def test_300vw_documented_layout(tmp_path):
    clip = tmp_path / "001"
    (clip / "annot").mkdir(parents=True)
    (clip / "imgs").mkdir()
    for k in (1, 2):
        _img(clip / "imgs" / f"{k:06d}.jpg")
        (clip / "annot" / f"{k:06d}.pts").write_text(_pts_text([(5, 6)] * 68))
    out = read_300vw(tmp_path)
    assert list(out) == ["001"] and [f.frame for f in out["001"]] == [1, 2]
    assert out["001"][0].landmarks["ibug68"].n_points == 68


def test_wflw_list(tmp_path):
    _img(tmp_path / "a.jpg", size=(100, 80))
    xy = np.stack([np.linspace(20, 60, 98), np.linspace(15, 50, 98)], 1)
    line = " ".join(f"{v:.2f}" for v in xy.ravel()) + " 20 15 60 50 1 0 0 0 1 0 a.jpg"
    (tmp_path / "list.txt").write_text(line + "\n" + "1 2 3 a.jpg\n")
    with pytest.raises(DatasetError, match="list.txt:2: 4 fields"):
        read_wflw(tmp_path / "list.txt", tmp_path)
    r = read_wflw(tmp_path / "list.txt", tmp_path, on_error="skip", crop=False)
    assert len(r) == 1 and len(r.bad) == 1
    im = r[0]
    np.testing.assert_allclose(im.landmarks["wflw98"].points[0], [15, 20])
    assert im.attributes == {
        "pose": 1,
        "expression": 0,
        "illumination": 0,
        "make_up": 0,
        "occlusion": 1,
        "blur": 0,
    }


def test_celeba_list(tmp_path):
    _img(tmp_path / "000001.jpg", size=(60, 70))
    (tmp_path / "lm.txt").write_text(
        "1\nlefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x "
        "leftmouth_y rightmouth_x rightmouth_y\n000001.jpg 20 30 40 30 30 40 22 50 38 50\n"
    )
    r = read_celeba(tmp_path / "lm.txt", tmp_path)
    np.testing.assert_allclose(r[0].landmarks["five"].points[0], [30, 20])
    (tmp_path / "bad.txt").write_text("hello\n")
    with pytest.raises(DatasetError, match="not a CelebA"):
        read_celeba(tmp_path / "bad.txt", tmp_path)


def test_coco_keypoints(tmp_path):
    _img(tmp_path / "a.png", size=(50, 50))
    kp = []
    for i in range(5):
        kp += [10 + i, 20, 2 if i != 3 else 0]
    data = {
        "images": [{"id": 7, "file_name": "a.png"}],
        "annotations": [
            {"id": 1, "image_id": 7, "keypoints": kp, "bbox": [5, 10, 30, 20]}
        ],
    }
    (tmp_path / "k.json").write_text(json.dumps(data))
    im = read_coco_keypoints(tmp_path / "k.json", tmp_path)[0]
    pts = im.landmarks["five"].points
    np.testing.assert_allclose(pts[0], [20, 10])
    assert np.isnan(pts[3]).all() and list(im.visibility) == [
        True,
        True,
        True,
        False,
        True,
    ]
    np.testing.assert_allclose(im.landmarks["box"].points.min(0), [10, 5])
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(DatasetError, match="not COCO"):
        read_coco_keypoints(tmp_path / "bad.json", tmp_path)


def test_shared_samples_every_folder(shared_data):
    r = read_pts_folder(shared_data / "faces68", n_points=68)
    assert len(r) >= 10 and all(im.landmarks["ibug68"].n_points == 68 for im in r)
    assert len(read_pts_folder(shared_data / "wflw98")) == 5
    assert all(
        im.landmarks["lfpw29"].n_points == 29
        for im in read_pts_folder(shared_data / "helen29")[:20]
    )
    ears = read_pts_folder(shared_data / "ears55", on_error="skip")
    assert len(ears) > 10  # the ear with a point at x = -1 is read, empty files skipped
    assert any(im.landmarks["ear55"].points[:, 1].min() < 0 for im in ears)
    assert all("ear" in p for p, _ in ears.bad)
    other = read_pts_folder(shared_data / "other_markups")
    assert {g for im in other for g in im.landmarks.group_labels} == {"lfpw29", "pts"}
    vw = read_300vw(shared_data / "video68")
    assert set(vw) == {"001", "401"} and all(len(v) == 2 for v in vw.values())
