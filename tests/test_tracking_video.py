"""Video input/output: PyAV files, frame folders, errors that keep the frames read."""

import numpy as np
import pytest

pytest.importorskip("av")

from menpo.shape import PointCloud, bounding_box  # noqa: E402

from menpo_densereg.data.readers import read_pts  # noqa: E402
from menpo_densereg.tracking.video import (  # noqa: E402
    VideoError,
    VideoWriter,
    draw_overlay,
    iter_frames,
    read_video,
    video_info,
    write_300vw,
)


def _frame(i, h=48, w=64):
    a = np.full((h, w, 3), 20 + (7 * i) % 200, dtype=np.uint8)
    a[10:20, i : i + 10] = 255
    return a


def _write(path, n=12, noise=False, **kw):
    rng = np.random.default_rng(0)
    with VideoWriter(path, fps=25, **kw) as w:
        for i in range(n):
            a = _frame(i)
            if noise:  # every frame its own texture: packets of similar size
                a = rng.integers(0, 256, a.shape, dtype=np.uint8)
            w.write(a)
    return path


def test_write_then_read_video(tmp_path):
    path = _write(tmp_path / "clip.mp4")
    info = video_info(path)
    assert (info["n_frames"], info["width"], info["height"]) == (12, 64, 48)
    assert info["fps"] == pytest.approx(25.0)
    frames = read_video(path)
    assert len(frames) == 12
    assert frames[0].shape == (48, 64) and frames[0].n_channels == 3
    assert frames[0].pixels.dtype == np.float32
    assert [f.frame for f in frames] == list(range(12))
    # brightness rises frame by frame as written (lossy codec: approximately)
    means = [float(f.pixels[:, 30:, :].mean()) for f in frames]
    assert np.all(np.diff(means) > 0)
    assert means[0] == pytest.approx(20 / 255, abs=0.03)


def test_read_range_and_resize(tmp_path):
    path = _write(tmp_path / "clip.avi", codec="mpeg4")
    frames = read_video(path, start=2, stop=9, step=3, size=(32, 24))
    assert [f.frame for f in frames] == [2, 5, 8]
    assert frames[0].shape == (24, 32)


def test_odd_size_is_padded_and_size_change_refused(tmp_path):
    with pytest.raises(ValueError, match="frame 1 is"):
        with VideoWriter(tmp_path / "odd.mp4") as w:
            w.write(np.zeros((31, 45, 3), np.uint8))
            w.write(np.zeros((40, 40, 3), np.uint8))
    # the failed write raised inside the block: no file is left behind
    assert not (tmp_path / "odd.mp4").exists()
    with VideoWriter(tmp_path / "odd.mp4") as w:
        w.write(np.zeros((31, 45, 3), np.uint8))
    assert read_video(tmp_path / "odd.mp4")[0].shape == (32, 46)
    with VideoWriter(tmp_path / "empty.mp4"):
        pass
    assert not (tmp_path / "empty.mp4").exists()  # no frame, no file


def test_truncated_video_raises_and_keeps_frames(tmp_path):
    data = _write(tmp_path / "clip.mp4", n=30, noise=True).read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    with pytest.raises(VideoError, match="cut.mp4") as e:
        read_video(cut)
    assert 0 < e.value.frames_read < 30
    assert len(e.value.frames) > 0
    assert e.value.frames[0].shape == (48, 64)


def test_corrupt_and_missing_video(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(np.random.default_rng(0).bytes(4000))
    with pytest.raises(VideoError, match="bad.mp4.*unreadable") as e:
        read_video(bad)
    assert e.value.frames_read == 0 and e.value.frames == []
    with pytest.raises(FileNotFoundError, match="nope.mp4"):
        read_video(tmp_path / "nope.mp4")


def test_frame_folder_in_numeric_order_and_bad_frame(tmp_path):
    import PIL.Image

    imgs = tmp_path / "clip" / "imgs"
    imgs.mkdir(parents=True)
    for i in (1, 2, 10):
        PIL.Image.fromarray(_frame(i)).save(imgs / f"{i:06d}.png")
    frames = read_video(tmp_path / "clip")
    assert len(frames) == 3
    assert [f.path.name for f in frames] == ["000001.png", "000002.png", "000010.png"]
    assert video_info(tmp_path / "clip")["n_frames"] == 3
    (imgs / "000011.png").write_bytes(b"not a png")
    with pytest.raises(VideoError, match="000011.png") as e:
        read_video(tmp_path / "clip")
    assert len(e.value.frames) == 3
    with pytest.raises(VideoError, match="no frames"):
        list(iter_frames(tmp_path))


def test_write_300vw_layout(tmp_path):
    a = PointCloud(np.array([[10.0, 20.0], [30.5, 40.25]]))
    paths = write_300vw(tmp_path, [a, None, a])
    assert [p.name for p in paths] == ["000001.pts", "000003.pts"]
    assert (tmp_path / "annot").is_dir()
    np.testing.assert_allclose(read_pts(paths[1]).points, a.points, atol=1e-3)


def test_draw_overlay_marks_pixels():
    rgb = np.zeros((40, 50, 3), np.uint8)
    shape = PointCloud(np.array([[20.0, 25.0]]))
    out = draw_overlay(rgb, shape, bounding_box((5, 5), (35, 45)), "x", "lost")
    assert out.shape == (40, 50, 3)
    assert out[20, 25, 1] == 255  # a green landmark dot
    assert tuple(out[5, 20]) == (230, 0, 0)  # the box, red for a lost frame
