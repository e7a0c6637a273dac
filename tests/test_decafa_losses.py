import pytest
import torch

from menpo_densereg.decafa.losses import decafa_loss, markup_l1, stage_weights
from menpo_densereg.decafa.network import build_decafa


def test_stage_weights_schedules():
    assert stage_weights(4) == [1 / 8, 1 / 4, 1 / 2, 1]
    assert stage_weights(1) == [1.0]
    assert stage_weights(3, "constant") == [1.0, 1.0, 1.0]
    assert stage_weights(4, "decreasing") == [1, 1 / 2, 1 / 4, 1 / 8]
    with pytest.raises(ValueError, match="schedule"):
        stage_weights(2, "random")


def test_markup_l1_value_normalised_by_landmark_count():
    pred = torch.zeros(2, 4, 2)
    target = torch.zeros(2, 4, 2)
    target[0, 0] = torch.tensor([3.0, 4.0])  # L1 = 7
    has = torch.tensor([1.0, 1.0])
    vis = torch.ones(2, 4)
    loss, n = markup_l1(pred, target, has, vis, n_points=4, scale=1.0)
    assert n == 2
    assert loss.item() == pytest.approx(7 / 4 / 2)
    vis[0, 0] = 0  # the only error is on an invisible point
    assert markup_l1(pred, target, has, vis, 4, 1.0)[0].item() == 0.0


def _batch(b, present):
    batch = {}
    sizes = {"wflw98": 98, "ibug68": 68, "lfpw29": 29, "five": 5}
    for m, n in sizes.items():
        batch[f"lm_{m}"] = torch.rand(b, n, 2) * 31
        batch[f"has_{m}"] = torch.full((b,), 1.0 if m in present else 0.0)
        batch[f"vis_{m}"] = torch.ones(b, n)
    return batch


def test_missing_markups_contribute_nothing_and_give_no_gradient():
    torch.manual_seed(0)
    net = build_decafa(input_size=32, width=0.0625, n_stages=2, chained=False)
    x = torch.rand(2, 1, 32, 32)
    batch = _batch(2, present={"lfpw29"})
    batch["lm_ibug68"][:] = float("nan")  # absent markups may carry anything
    outs = net(x)
    loss, logs = decafa_loss(outs, batch)
    assert torch.isfinite(loss)
    assert set(k for k in logs if k.startswith("loss_") and "stage" not in k) == {
        "loss_lfpw29"
    }
    loss.backward()
    # independent transfer layers: only the 29-point layer receives gradient (and, in
    # the first stage, the 98-point layer whose attention is fused into stage 2's input)
    for s, t in enumerate(net.transfers):
        assert t.convs["lfpw29"].weight.grad.abs().sum() > 0
        absent = ("ibug68", "five") + (
            ("wflw98",) if s == len(net.transfers) - 1 else ()
        )
        for m in absent:
            g = t.convs[m].weight.grad
            assert g is None or g.abs().sum() == 0
    assert net.transfers[0].convs["wflw98"].weight.grad.abs().sum() > 0
    # equals the loss computed with only the present markup
    only = decafa_loss(outs, batch, markups=["lfpw29"])[0]
    assert loss.item() == pytest.approx(only.item())


def test_per_sample_masking_within_a_batch():
    torch.manual_seed(0)
    net = build_decafa(input_size=32, width=0.0625, n_stages=1, markups=["68"])
    outs = net(torch.rand(2, 1, 32, 32))
    batch = _batch(2, present={"ibug68"})
    batch["has_ibug68"] = torch.tensor([1.0, 0.0])
    loss_a = decafa_loss(outs, batch)[0]
    batch["lm_ibug68"][1] += 100.0  # the sample without the markup changes: no effect
    loss_b = decafa_loss(outs, batch)[0]
    assert loss_a.item() == pytest.approx(loss_b.item())


def test_stage_weighting_is_applied():
    torch.manual_seed(0)
    net = build_decafa(input_size=32, width=0.0625, n_stages=2, markups=["5"])
    outs = net(torch.rand(2, 1, 32, 32))
    batch = _batch(2, present={"five"})
    _, logs = decafa_loss(outs, batch)
    inc = decafa_loss(outs, batch, "increasing")[0].item()
    const = decafa_loss(outs, batch, "constant")[0].item()
    assert inc == pytest.approx(
        0.5 * logs["loss_stage1"] + logs["loss_stage2"], rel=1e-5
    )
    assert const == pytest.approx(logs["loss_stage1"] + logs["loss_stage2"], rel=1e-5)


def test_tiny_training_run_lowers_the_loss():
    torch.manual_seed(0)
    net = build_decafa(input_size=32, width=0.125, n_stages=2, markups=["5", "29"])
    x = torch.rand(4, 1, 32, 32)
    batch = _batch(4, present={"five", "lfpw29"})
    for m in ("five", "lfpw29"):  # the same shape in every image: learnable
        batch[f"lm_{m}"][:] = batch[f"lm_{m}"][:1]
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    first = None
    for _ in range(40):
        loss, _ = decafa_loss(net(x), batch)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        final = decafa_loss(net(x), batch)[0].item()
    assert final < 0.5 * first
