"""DenseReg network: head shapes, value ranges, û decoding, configs."""

import json

import numpy as np

import pytest
import torch

from menpo_densereg.densereg.network import (
    DenseRegConfig,
    bin_targets,
    build_densereg,
    decode_uv,
)


@pytest.mark.parametrize("backbone", ["mobile", "resnet"])
def test_heads_shapes_and_ranges(backbone):
    torch.manual_seed(0)
    kw = dict(width=8, resnet_layers=(1, 1, 1, 1)) if backbone == "resnet" else {}
    net = build_densereg(backbone=backbone, n_bins=5, input_size=64, **kw).eval()
    with torch.no_grad():
        out = net(torch.rand(2, 3, 64, 64))
    assert out["cls_u"].shape == (2, 6, 64, 64)
    assert out["cls_v"].shape == (2, 6, 64, 64)
    assert out["res_u"].shape == (2, 5, 64, 64)
    assert out["res_v"].shape == (2, 5, 64, 64)
    assert out["depth"].shape == (2, 1, 64, 64)
    assert out["depth"].min() >= 0 and out["depth"].max() <= 1
    dec = decode_uv(out)
    for key in ("u", "v", "face_prob", "bin_conf", "depth"):
        assert dec[key].shape == (2, 64, 64)
        assert dec[key].min() >= 0 and dec[key].max() <= 1
    assert dec["bin_u"].dtype == torch.int64
    assert 0 <= int(dec["bin_u"].min()) and int(dec["bin_u"].max()) <= 4


def test_baseline_configs():
    plain = build_densereg(head="plain", n_bins=1, input_size=32)
    out = plain(torch.rand(1, 3, 32, 32))
    assert out["cls_u"].shape[1] == 2 and out["res_u"].shape[1] == 1
    qo = build_densereg(
        head="quantised_only", n_bins=4, input_size=32, depth_head=False
    )
    out = qo(torch.rand(1, 3, 32, 32))
    assert "res_u" not in out and "depth" not in out
    with pytest.raises(ValueError, match="n_bins"):
        DenseRegConfig(head="plain", n_bins=10)
    with pytest.raises(ValueError, match="backbone"):
        DenseRegConfig(backbone="vgg")
    with pytest.raises(ValueError, match="input_size"):
        DenseRegConfig(input_size=100)


def test_config_json_round_trip():
    c = DenseRegConfig(n_bins=7, backbone="resnet", resnet_layers=[1, 2, 2, 1])
    d = json.loads(json.dumps(c.to_dict()))
    assert DenseRegConfig.from_dict(d) == c
    with pytest.raises(ValueError, match="unknown"):
        DenseRegConfig.from_dict({"bogus": 1})
    assert "K=7" in str(build_densereg(c))


def _outputs_for(coord_u, coord_v, mask, k, residual=True):
    """Ideal network outputs for a given field (one-hot logits + exact residuals)."""
    outs = {}
    for axis, coord in (("u", coord_u), ("v", coord_v)):
        cls, q, res = bin_targets(coord, mask, k)
        outs["cls_" + axis] = (
            20.0 * torch.nn.functional.one_hot(cls, k + 1).permute(0, 3, 1, 2).float()
        )
        if residual:
            r = torch.zeros(coord.shape[0], k, *coord.shape[1:])
            r.scatter_(1, q[:, None], res[:, None])
            outs["res_" + axis] = r
    return outs


def test_decoding_recovers_uv():
    torch.manual_seed(1)
    u = torch.rand(2, 16, 16)
    v = torch.rand(2, 16, 16)
    mask = (torch.rand(2, 16, 16) > 0.3).float()
    k = 10
    dec = decode_uv(_outputs_for(u, v, mask, k))
    face = mask > 0.5
    assert torch.allclose(dec["u"][face], u[face], atol=1e-6)
    assert torch.allclose(dec["v"][face], v[face], atol=1e-6)
    assert torch.all(dec["face_prob"][face] > 0.99)
    assert torch.all(dec["face_prob"][~face] < 0.01)
    # quantised only: the bin centre, error <= d/2
    dec0 = decode_uv(_outputs_for(u, v, mask, k), residual=False)
    centre = (torch.clamp(torch.floor(u * k), 0, k - 1) + 0.5) / k
    assert torch.allclose(dec0["u"][face], centre[face], atol=1e-6)
    assert (dec0["u"][face] - u[face]).abs().max() <= 0.5 / k + 1e-6


def test_bin_targets_convention():
    u = torch.tensor([[[0.0, 0.05, 0.1, 0.999, 1.0]]])
    cls, q, res = bin_targets(u, torch.ones_like(u), 10)
    assert q.tolist() == [[[0, 0, 1, 9, 9]]]
    assert cls.tolist() == [[[1, 1, 2, 10, 10]]]
    assert torch.allclose(
        res, torch.tensor([[[-0.05, 0.0, -0.05, 0.049, 0.05]]]), atol=1e-6
    )
    cls, _, _ = bin_targets(u, torch.zeros_like(u), 10)
    assert cls.sum() == 0


def test_decoded_probabilities_match_a_float64_softmax_also_on_background():
    # the chosen bin's probability given face, p_bin / (1 - p_bg), and the background
    # probability, from float32 logits where the background wins by far: no 1 - p
    # cancellation (the old decoder lost 2e-3 there to rounding)
    from menpo_densereg.densereg.numpy_net import decode_uv_numpy

    g = torch.Generator().manual_seed(0)
    k = 6
    logits = {a: torch.randn(2, k + 1, 9, 9, generator=g) * 3 for a in "uv"}
    logits["u"][:, 0, :4] += 25.0  # background by e^25 on four rows
    dec = decode_uv({"cls_u": logits["u"], "cls_v": logits["v"]})
    conf, bg = 1.0, []
    for a in "uv":
        p = torch.softmax(logits[a].double(), dim=1)
        pbin = p[:, 1:].max(dim=1).values
        conf = conf * pbin / p[:, 1:].sum(dim=1)
        bg.append(p[:, 0])
    assert torch.allclose(dec["bin_conf"].double(), conf, rtol=1e-5, atol=0)
    face = 1.0 - 0.5 * (bg[0] + bg[1])
    assert torch.allclose(dec["face_prob"].double(), face, rtol=0, atol=1e-6)
    assert float(dec["face_prob"][:, :4].max()) < 0.5 + 1e-6
    npdec = decode_uv_numpy(
        {"cls_u": logits["u"].numpy(), "cls_v": logits["v"].numpy()}
    )
    for key in ("bin_conf", "face_prob"):
        assert np.allclose(npdec[key], dec[key].numpy(), rtol=1e-5, atol=1e-6), key
