import json

import pytest
import torch

from menpo_densereg.decafa.network import (
    FUSIONS,
    DecafaConfig,
    TransferLayers,
    UNetStage,
    build_decafa,
    fuse,
    fused_channels,
    soft_argmax,
    spatial_softmax,
)


def _tiny(**kw):
    base = dict(
        input_size=32, width=0.0625, n_stages=2, markups=["98", "68", "29", "5"]
    )
    base.update(kw)
    return build_decafa(**base)


def test_soft_argmax_is_exact_on_a_peaked_map():
    logits = torch.full((2, 3, 32, 32), -1e4)
    peaks = [(3, 7), (31, 0), (16, 25), (0, 31), (10, 10), (5, 30)]
    for i, (y, x) in enumerate(peaks):
        logits[i // 3, i % 3, y, x] = 0.0
    coords = soft_argmax(spatial_softmax(logits))
    assert torch.allclose(
        coords.reshape(-1, 2), torch.tensor(peaks, dtype=torch.float32)
    )


def test_soft_argmax_of_a_symmetric_blob_is_its_centre():
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    logits = -((yy - 20.25) ** 2 + (xx - 40.5) ** 2) / 8.0
    coords = soft_argmax(spatial_softmax(logits[None, None]))
    assert torch.allclose(coords[0, 0], torch.tensor([20.25, 40.5]), atol=1e-3)


def test_spatial_softmax_sums_to_one_per_map():
    maps = spatial_softmax(torch.randn(2, 5, 16, 16))
    assert torch.allclose(maps.sum(dim=(-1, -2)), torch.ones(2, 5))


def test_unet_stage_keeps_full_resolution_and_has_twelve_convs():
    stage = UNetStage(1, (8, 8, 16, 16, 32, 32))
    out = stage(torch.rand(2, 1, 64, 64))
    assert out.shape == (2, 8, 64, 64)
    convs = [m for m in stage.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 12
    assert all(c.kernel_size == (3, 3) for c in convs)
    assert not any(isinstance(m, torch.nn.ConvTranspose2d) for m in stage.modules())


def test_paper_width_filters():
    cfg = DecafaConfig()
    assert cfg.channels == (64, 64, 128, 128, 256, 256)
    assert cfg.input_size == 128 and cfg.in_channels == 1
    assert DecafaConfig(width=0.25).channels == (16, 16, 32, 32, 64, 64)


@pytest.mark.parametrize("kind", FUSIONS)
def test_fusion_output_shapes(kind):
    img = torch.rand(2, 1, 32, 32)
    m = torch.rand(2, 1, 32, 32)
    h = torch.rand(2, 6, 32, 32)
    out = fuse(kind, img, m, h)
    assert out.shape == (2, fused_channels(kind, 1, 6), 32, 32)
    assert out.shape[1] == {"F1": 1, "F2": 2, "F3": 2, "F4": 7, "F5": 8}[kind]
    net = _tiny(fusion=kind, n_stages=3)
    outs = net(torch.rand(2, 1, 32, 32))
    assert len(outs) == 3
    k = net.config.channels[0]
    expected = {"F1": 1, "F2": 2, "F3": 2, "F4": 1 + k, "F5": 2 + k}[kind]
    assert net.stages[1].down[0][0].in_channels == expected
    assert net.stages[2].down[0][0].in_channels == expected


def test_fusion_f1_weights_the_image_by_attention():
    img = torch.rand(1, 1, 8, 8)
    m = torch.zeros(1, 1, 8, 8)
    m[..., 2, 3] = 1.0
    out = fuse("F1", img, m, torch.zeros(1, 4, 8, 8))
    assert out.sum() == pytest.approx(float(img[0, 0, 2, 3]))
    with pytest.raises(ValueError, match="fusion"):
        fuse("F9", img, m, m)


def test_chained_and_independent_wiring():
    chained = TransferLayers(16, ["wflw98", "ibug68", "lfpw29", "five"], chained=True)
    assert chained.input_channels("ibug68") == 98
    assert chained.input_channels("lfpw29") == 68
    assert chained.input_channels("five") == 29
    assert chained.input_channels("wflw98") == 16
    assert chained.needed(["lfpw29"]) == ["wflw98", "ibug68", "lfpw29"]
    indep = TransferLayers(16, ["wflw98", "ibug68", "lfpw29", "five"], chained=False)
    assert all(indep.input_channels(m) == 16 for m in indep.markups)
    assert indep.needed(["lfpw29"]) == ["lfpw29"]


def test_markups_are_sorted_by_decreasing_landmark_count():
    cfg = DecafaConfig(markups=["5", "68", "98", "29"])
    assert cfg.markups == ["wflw98", "ibug68", "lfpw29", "five"]
    assert cfg.fusion_markup == "wflw98"


def test_forward_outputs_per_stage_and_markup():
    net = _tiny().eval()
    outs = net(torch.rand(3, 1, 32, 32))
    assert len(outs) == 2
    for out in outs:
        assert set(out) == {"wflw98", "ibug68", "lfpw29", "five"}
        coords, maps = out["ibug68"]
        assert coords.shape == (3, 68, 2) and maps.shape == (3, 68, 32, 32)
        assert coords.min() >= 0 and coords.max() <= 31
    last = net(torch.rand(1, 1, 32, 32), markups=["five"], all_stages=False)
    assert len(last) == 1 and set(last[0]) == {"five"}


def test_inference_subset_matches_full_forward():
    net = _tiny().eval()
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        full = net(x)[-1]["lfpw29"][0]
        part = net(x, markups=["lfpw29"], all_stages=False)[0]["lfpw29"][0]
    assert torch.allclose(full, part, atol=1e-5)


def test_config_round_trips_through_json_and_rejects_bad_values():
    cfg = DecafaConfig(
        input_size=64, width=0.25, n_stages=3, chained=False, fusion="F2"
    )
    again = DecafaConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    assert "F2" in str(cfg) and "independent" in str(cfg)
    with pytest.raises(ValueError, match="multiple of 32"):
        DecafaConfig(input_size=100)
    with pytest.raises(ValueError, match="n_stages"):
        DecafaConfig(n_stages=5)
    with pytest.raises(ValueError, match="fusion"):
        DecafaConfig(fusion="F7")
    with pytest.raises(ValueError, match="unknown markup"):
        DecafaConfig(markups=["42"])
    with pytest.raises(ValueError, match="unknown keys"):
        DecafaConfig.from_dict({"depth": 3})


def test_forward_rejects_wrong_input():
    net = _tiny()
    with pytest.raises(ValueError, match="input"):
        net(torch.rand(1, 3, 32, 32))
    with pytest.raises(ValueError, match="not trained"):
        build_decafa(input_size=32, width=0.0625, n_stages=1, markups=["68"])(
            torch.rand(1, 1, 32, 32), markups=["98"]
        )


def test_correspondence_initialised_chain_maps_coarse_to_fine_peaks():
    layers = TransferLayers(8, ["ibug68", "five"], chained=True, init="correspondence")
    # 68 attention maps peaked at known pixels -> the 5-point maps peak at the
    # averages of the corresponding 68 points (eye centres = mean of 6 eye points)
    rng = torch.Generator().manual_seed(0)
    pts = torch.randint(2, 62, (68, 2), generator=rng)
    logits = torch.full((1, 68, 64, 64), -1e4)
    logits[0, torch.arange(68), pts[:, 0], pts[:, 1]] = 0.0
    att68 = spatial_softmax(logits)
    from menpo_densereg.decafa.network import _peak_normalise
    from menpo_densereg.data.markups import conversion_matrix

    att5 = spatial_softmax(layers.convs["five"](_peak_normalise(att68)))
    got = soft_argmax(att5)[0]
    expected = (
        torch.as_tensor(conversion_matrix("68", "5"), dtype=torch.float32) @ pts.float()
    )
    assert torch.allclose(got, expected, atol=0.2)
    rand = TransferLayers(8, ["ibug68", "five"], chained=True, init="random")
    assert not torch.allclose(rand.convs["five"].weight, layers.convs["five"].weight)


def test_logit_gain_sharpens_the_first_transfer_layer():
    torch.manual_seed(0)
    a = _tiny(logit_gain=1.0)
    torch.manual_seed(0)
    b = _tiny(logit_gain=8.0)
    assert b.transfers[0].gain == 8.0 and b.config.logit_gain == 8.0
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        pa = a(x)[0]["wflw98"][1].flatten(2).amax(-1).mean()
        pb = b(x)[0]["wflw98"][1].flatten(2).amax(-1).mean()
    assert pb > pa
