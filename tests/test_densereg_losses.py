"""DenseReg losses: masking, normalisation, weights, and a tiny training run."""

import torch

from menpo_densereg.densereg.losses import DenseRegLossConfig, densereg_loss
from menpo_densereg.densereg.network import build_densereg


def _batch(b=2, s=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(b, s, s)
    mask[:, 2:6, 2:6] = 1
    uv = torch.rand(b, 2, s, s, generator=g) * mask[:, None]
    depth = torch.rand(b, s, s, generator=g) * mask
    return {"uv": uv, "mask": mask, "depth": depth}


def _outputs(b=2, s=8, k=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    return {
        "cls_u": torch.randn(b, k + 1, s, s, generator=g, requires_grad=True),
        "cls_v": torch.randn(b, k + 1, s, s, generator=g, requires_grad=True),
        "res_u": (0.1 * torch.randn(b, k, s, s, generator=g)).requires_grad_(),
        "res_v": (0.1 * torch.randn(b, k, s, s, generator=g)).requires_grad_(),
        "depth": torch.rand(b, 1, s, s, generator=g).requires_grad_(),
    }


def test_background_pixel_gives_no_residual_or_depth_loss():
    batch = _batch()
    out = _outputs()
    cfg = DenseRegLossConfig(residual_weight=40.0, depth_weight=1.0)
    loss, parts = densereg_loss(out, batch, cfg)
    loss.backward()
    bg = batch["mask"] == 0
    # residual and depth gradients vanish on background pixels...
    assert torch.all(out["res_u"].grad.permute(1, 0, 2, 3)[:, bg] == 0)
    assert torch.all(out["depth"].grad[:, 0][bg] == 0)
    # ...and on the non-responsible bins of face pixels
    face = ~bg
    nz = (out["res_u"].grad.permute(1, 0, 2, 3)[:, face] != 0).sum(0)
    assert torch.all(nz <= 1)
    # classification does see background pixels
    assert torch.all(out["cls_u"].grad.abs().sum(1)[bg] > 0)
    assert parts["face_px"] == 32


def test_changing_background_residual_changes_nothing():
    batch = _batch()
    out = _outputs()
    l1, p1 = densereg_loss(out, batch)
    out2 = {k: v.detach().clone() for k, v in out.items()}
    bg = batch["mask"] == 0
    out2["res_u"].permute(1, 0, 2, 3)[:, bg] = 5.0
    out2["depth"][:, 0][bg] = 0.9
    l2, p2 = densereg_loss(out2, batch)
    assert abs(float(l1.detach()) - float(l2)) < 1e-6
    assert abs(p1["res_u"] - p2["res_u"]) < 1e-9


def test_residual_normalised_by_face_pixels_and_weighted():
    batch = _batch()
    k = 4
    # perfect classification; residuals all off by 0.2 (linear smooth-L1 region)
    from menpo_densereg.densereg.network import bin_targets

    out = _outputs(k=k)
    for i, axis in enumerate("uv"):
        cls, q, res = bin_targets(batch["uv"][:, i], batch["mask"], k)
        out["res_" + axis] = (res[:, None] + 0.2).expand(-1, k, -1, -1).clone()
    cfg = DenseRegLossConfig(residual_weight=10.0, smooth_l1_beta=0.05, depth_weight=0)
    _, parts = densereg_loss(out, batch, cfg)
    expected = 0.2 - 0.5 * 0.05
    assert abs(parts["res_u"] - expected) < 1e-5
    # doubling the face area leaves the normalised residual term unchanged
    big = _batch()
    big["mask"][:, 1:7, 1:7] = 1
    for i, axis in enumerate("uv"):
        cls, q, res = bin_targets(big["uv"][:, i], big["mask"], k)
        out["res_" + axis] = (res[:, None] + 0.2).expand(-1, k, -1, -1).clone()
    _, parts2 = densereg_loss(out, big, cfg)
    assert abs(parts2["res_u"] - expected) < 1e-5


def test_tiny_training_run_lowers_loss():
    torch.manual_seed(0)
    s = 32
    yy, xx = torch.meshgrid(torch.arange(s), torch.arange(s), indexing="ij")
    mask = (((yy - 16) ** 2 + (xx - 16) ** 2) < 100).float()
    uv = torch.stack([(xx - 6) / 20.0, (yy - 6) / 20.0]).clamp(0, 1) * mask
    img = torch.stack([mask * 0.8, (xx / s) * mask, (yy / s) * mask])
    batch = {
        "image": img[None].repeat(4, 1, 1, 1),
        "uv": uv[None].repeat(4, 1, 1, 1),
        "mask": mask[None].repeat(4, 1, 1),
        "depth": (mask * 0.5)[None].repeat(4, 1, 1),
    }
    net = build_densereg(n_bins=4, input_size=32, width=8)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        loss, _ = densereg_loss(net(batch["image"]), batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.6 * losses[0]
