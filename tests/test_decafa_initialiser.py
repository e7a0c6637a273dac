import numpy as np
import pytest
import torch
from menpo.image import Image
from menpo.shape import bounding_box

from menpo_densereg.decafa.initialiser import (
    DecafaInitialiser,
    from_fitter_dir,
    load_decafa,
    save_decafa,
)
from menpo_densereg.decafa.network import build_decafa
from menpo_densereg.fitting.weights import WeightsError, save_weights


def _net():
    torch.manual_seed(0)
    return build_decafa(
        input_size=32, width=0.0625, n_stages=2, markups=["68", "29", "5"]
    ).eval()


def _image():
    rng = np.random.default_rng(0)
    return Image(rng.random((1, 96, 80)).astype(np.float32))


def test_save_load_round_trip_gives_the_same_predictions(tmp_path):
    net = _net()
    path = tmp_path / "w.safetensors"
    save_decafa(path, net, extra={"note": "test"})
    again, header = load_decafa(path)
    assert header["kind"] == "decafa" and header["extra"]["note"] == "test"
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        a = net(x)[-1]["ibug68"][0]
        b = again(x)[-1]["ibug68"][0]
    assert torch.allclose(a, b)


def test_bad_weights_files_raise_weights_error(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a model at all")
    with pytest.raises(WeightsError, match="bad.safetensors"):
        load_decafa(bad)
    with pytest.raises(WeightsError, match="not found"):
        load_decafa(tmp_path / "missing.safetensors")
    foreign = tmp_path / "foreign.safetensors"
    save_weights(foreign, {"a": torch.zeros(2)}, kind="densereg")
    with pytest.raises(WeightsError, match="expected 'decafa'"):
        load_decafa(foreign)
    mismatch = tmp_path / "mismatch.safetensors"
    net = _net()
    save_weights(
        mismatch,
        {"net.bogus": torch.zeros(2)},
        kind="decafa",
        config={"net": net.config.to_dict()},
    )
    with pytest.raises(WeightsError, match="do not match"):
        load_decafa(mismatch)
    badcfg = tmp_path / "badcfg.safetensors"
    save_weights(
        badcfg, {"a": torch.zeros(2)}, kind="decafa", config={"net": {"n_stages": 9}}
    )
    with pytest.raises(WeightsError, match="configuration"):
        load_decafa(badcfg)


def test_initialiser_returns_any_trained_markup_in_the_image_frame():
    init = DecafaInitialiser(_net())
    assert init.markup == "ibug68" and init.markups == ["ibug68", "lfpw29", "five"]
    image = _image()
    box = bounding_box((20.0, 15.0), (70.0, 60.0))
    result = init.fit_from_bb(image, box)
    shape = result.final_shape
    assert shape.n_points == 68
    # predictions lie inside the crop around the box (side 1.5x the box side)
    assert np.all(shape.points.min(axis=0) >= np.array([20, 15]) - 0.25 * 50 - 1)
    assert np.all(shape.points.max(axis=0) <= np.array([70, 60]) + 0.25 * 50 + 1)
    assert result.confidence.shape == (68,)
    assert np.all((result.confidence >= 0) & (result.confidence <= 1))
    five = init.for_markup("5").fit_from_bb(image, box).final_shape
    assert five.n_points == 5
    allm = init.initialise_all(image, box)
    assert set(allm) == {"ibug68", "lfpw29", "five"}
    assert np.allclose(allm["ibug68"].points, shape.points, atol=1e-4)
    with pytest.raises(ValueError, match="not trained"):
        init.with_markup("98")
    fs = init.fit_from_shape(image, box).final_shape
    assert fs.n_points == 68


def test_attention_maps_per_stage():
    init = DecafaInitialiser(_net())
    stages = init.attention_maps(
        _image(), bounding_box((20.0, 15.0), (70.0, 60.0)), markup="5"
    )
    assert len(stages) == 2
    for s in stages:
        assert s["maps"].shape == (5, 32, 32)
        assert np.allclose(s["maps"].sum(axis=(1, 2)), 1, atol=1e-4)
        assert s["summary"].max() == pytest.approx(1.0)
        assert s["landmarks"].n_points == 5


def test_from_fitter_dir(tmp_path):
    save_decafa(tmp_path / "weights.safetensors", _net())
    (tmp_path / "recipe.toml").write_text(
        '[fitter]\nkind = "decafa"\nname = "tiny"\nmarkup = "29"\n'
    )
    init = from_fitter_dir(tmp_path)
    assert init.name == "tiny" and init.markup == "lfpw29"
    (tmp_path / "recipe.toml").write_text('[fitter]\nkind = "densereg"\nname = "x"\n')
    with pytest.raises(ValueError, match="not 'decafa'"):
        from_fitter_dir(tmp_path)


def test_rejects_bad_images():
    init = DecafaInitialiser(_net())
    with pytest.raises(ValueError, match="channels"):
        init.fit_from_bb(
            Image(np.zeros((4, 64, 64))), bounding_box((5.0, 5.0), (50.0, 50.0))
        )


def test_shipped_fitter_beats_a_loose_bound_on_unseen_faces():
    from pathlib import Path

    import menpo.io as mio

    from menpo_densereg.fitting.base import box_from_shape
    from menpo_densereg.data.markups import get_markup
    from menpo_densereg.fitting.registry import load_fitter

    d = Path(__file__).resolve().parents[1] / "fitters" / "decafa-face"
    if not (d / "weights.safetensors").is_file():
        pytest.skip("shipped DeCaFA weights not present")
    fitter = load_fitter(d, cache=False)
    assert fitter.markup == "ibug68"
    errors = []
    for asset in ("takeo_ppm", "lenna_png"):
        image = getattr(mio.import_builtin_asset, asset)()
        gt = image.landmarks[image.landmarks.group_labels[0]]
        shape = fitter.fit_from_bb(image, box_from_shape(gt)).final_shape
        d68 = get_markup("68").normalising_distance(gt)
        errors.append(np.linalg.norm(shape.points - gt.points, axis=1).mean() / d68)
    # measured 7.45 % (takeo) and 8.62 % (lenna) with the shipped weights
    assert max(errors) < 0.12


def test_network_and_confidence_run_on_one_thread_by_default():
    # DeCaFA used torch's default thread count (one per core); under load the threads
    # spin-wait on each other. Every torch op of a fit must run inside the 1-thread guard.
    net = _net()
    init = DecafaInitialiser(net)
    seen = []
    net.register_forward_hook(lambda *a: seen.append(torch.get_num_threads()))
    original = torch.get_num_threads()
    torch.set_num_threads(2)  # the caller's setting, which the fit must restore
    before = torch.get_num_threads()
    calls = []
    real = torch.nn.functional.pad  # the confidence's padding (DeCaFA's net has none)

    def spy(*args, **kwargs):
        calls.append(torch.get_num_threads())
        return real(*args, **kwargs)

    im = _image()
    box = bounding_box((8.0, 8.0), (56.0, 56.0))
    torch.nn.functional.pad = spy
    try:
        init.initialise(im, box)
    finally:
        torch.nn.functional.pad = real
        after = torch.get_num_threads()
        torch.set_num_threads(original)
    assert seen == [1]
    assert calls and set(calls) == {1}
    assert after == before


def test_confidence_is_the_peak_3x3_mass_of_each_map():
    from menpo_densereg.decafa.network import attention_peak_mass

    rng = np.random.default_rng(3)
    maps = torch.from_numpy(rng.random((2, 5, 9, 7)).astype(np.float32))
    maps = maps / maps.sum(dim=(-2, -1), keepdim=True)
    maps[0, 0] = 0.0
    maps[0, 0, 0, 0] = 0.6  # a peak in the corner: the zero padding counts
    maps[0, 0, 1, 1] = 0.3
    ref = torch.nn.functional.avg_pool2d(maps, 3, stride=1, padding=1) * 9.0
    expected = ref.flatten(-2).amax(-1).clamp(0, 1)
    got = attention_peak_mass(maps)
    assert got.shape == (2, 5)
    np.testing.assert_allclose(got.numpy(), expected.numpy(), atol=1e-6)
    assert abs(float(got[0, 0]) - 0.9) < 1e-6


def test_flip_averaging_is_mirror_equivariant_for_every_markup():
    from menpo_densereg.data.markups import flip_permutation, mirror_points

    image = _image()
    mirrored = Image(np.ascontiguousarray(image.pixels[..., ::-1]))
    box = bounding_box((20.0, 15.0), (70.0, 60.0))
    mbox = bounding_box((20.0, 80 - 1 - 60.0), (70.0, 80 - 1 - 15.0))
    plain = DecafaInitialiser(_net())
    flip = DecafaInitialiser(_net(), flip=True)
    assert flip.with_markup("5").flip and "flip-averaged" in str(flip)
    gaps = {}
    for init in (plain, flip):
        a = init.initialise_all(image, box)
        b = init.initialise_all(mirrored, mbox)
        gaps[init.flip] = {
            m: np.abs(
                a[m].points - mirror_points(b[m].points, 80, flip_permutation(m))
            ).max()
            for m in a
        }
    # an untrained network is not symmetric; the flip-averaged one is, in every markup
    assert max(gaps[False].values()) > 0.05
    assert max(gaps[True].values()) < 1e-4 and len(gaps[True]) == 3
    r = flip.fit_from_bb(image, box)
    assert np.allclose(
        r.final_shape.points, flip.initialise_all(image, box)["ibug68"].points
    )
    assert r.confidence.shape == (68,) and np.all(
        (r.confidence >= 0) & (r.confidence <= 1)
    )
