"""``menpo-densereg track``: outputs on a synthetic clip, and a truncated video."""

import csv

import pytest

pytest.importorskip("av")
pytest.importorskip("dlib")

from menpo_densereg.cli import main  # noqa: E402
from menpo_densereg.tracking import VideoWriter  # noqa: E402


@pytest.fixture(scope="module")
def clip_file(tmp_path_factory):
    from menpo_densereg.tracking.evaluate import synthetic_clip
    from menpo_densereg.tracking.video import image_to_rgb8

    frames, _ = synthetic_clip(n_frames=6)
    path = tmp_path_factory.mktemp("clip") / "face.mp4"
    with VideoWriter(path, fps=25) as w:
        for f in frames:
            w.write(image_to_rgb8(f))
    return path


def _track(video, out, *extra):
    """Run ``menpo-densereg track`` with densereg-face and the HOG detector."""
    return main(
        [
            "track",
            str(video),
            "--fitter",
            "densereg-face",
            "--out",
            str(out),
            "--detector",
            "hog",
            *extra,
        ]
    )


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_track_writes_csv_pts_and_overlay(clip_file, tmp_path, capsys):
    out = tmp_path / "out"
    code = _track(clip_file, out)
    assert code == 0
    rows = _rows(out / "frames.csv")
    assert [r["frame"] for r in rows] == [str(i) for i in range(6)]
    assert rows[0]["state"] == "detected"
    assert {r["state"] for r in rows[1:]} == {"tracked"}
    assert all(0 < float(r["confidence"]) <= 1 and float(r["ms"]) > 0 for r in rows)
    pts = sorted(p.name for p in (out / "annot").glob("*.pts"))
    assert pts[0] == "000001.pts" and len(pts) == 6
    from menpo_densereg.tracking import video_info

    assert video_info(out / "overlay.mp4")["n_frames"] == 6
    text = capsys.readouterr().out
    assert "6 frames tracked" in text and "frames/s" in text


def test_track_truncated_video_keeps_what_was_tracked(clip_file, tmp_path, capsys):
    data = clip_file.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.75)])
    out = tmp_path / "out"
    code = _track(cut, out, "--no-video")
    assert code == 2
    assert "cut.mp4" in capsys.readouterr().err
    rows = _rows(out / "frames.csv")
    assert 0 < len(rows) < 6
    assert "stopped early" in (out / "summary.txt").read_text()
    assert not (out / "overlay.mp4").exists()


def test_track_missing_video(tmp_path, capsys):
    assert main(["track", str(tmp_path / "no.mp4"), "--out", str(tmp_path)]) == 2
    assert "no.mp4" in capsys.readouterr().err


def test_track_scores_a_300vw_folder(tmp_path, capsys):
    import menpo.io as mio

    from menpo_densereg.data.readers import write_pts
    from menpo_densereg.tracking.evaluate import synthetic_clip

    frames, truth = synthetic_clip(n_frames=4)
    clip = tmp_path / "vw" / "007"
    (clip / "imgs").mkdir(parents=True)
    for i, (f, g) in enumerate(zip(frames, truth), start=1):
        mio.export_image(f, clip / "imgs" / f"{i:06d}.png", overwrite=True)
        write_pts(clip / "annot" / f"{i:06d}.pts", g)
    out = tmp_path / "out"
    code = _track(tmp_path / "vw", out)
    assert code == 0
    text = (out / "scores.txt").read_text()
    overall = next(line for line in text.splitlines() if line.startswith("overall"))
    cells = overall.split()
    assert cells[1] == "4"  # frames scored
    assert float(cells[2]) < 15.0  # mean NME %, outer eye corners
    assert len(list((out / "007" / "annot").glob("*.pts"))) == 4
    assert "FR@0.08%" in capsys.readouterr().out
