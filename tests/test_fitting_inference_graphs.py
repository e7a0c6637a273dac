"""Frozen TorchScript graphs of the networks at inference (fitting.inference)."""

import gc

import numpy as np
import pytest
import torch

from menpo_densereg.densereg.network import DecodedDenseReg, build_densereg, decode_uv
from menpo_densereg.fitting import inference
from menpo_densereg.fitting.inference import FrozenGraphs, frozen_graphs


def _decoder(seed=0):
    torch.manual_seed(seed)
    net = build_densereg(n_bins=5, input_size=32, width=8).eval()
    # batch-norm statistics away from the identity, so folding them changes numbers
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    return net, FrozenGraphs(net, lambda n: DecodedDenseReg(n), "DenseReg")


def _x(b=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, 32, 32, generator=g)


def test_graph_matches_the_eager_network_and_is_built_once_per_signature(monkeypatch):
    monkeypatch.delenv(inference.GRAPHS_ENV, raising=False)
    net, run = _decoder()
    x = _x()
    with torch.inference_mode():
        out = run(x)
        ref = DecodedDenseReg(net)(x)
    assert len(run) == 1
    keys = DecodedDenseReg.output_keys(net.config)
    assert len(out) == len(keys)
    for k, a, b in zip(keys, out, ref):
        assert a.shape == b.shape and a.dtype == b.dtype, k
        if a.is_floating_point():
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-5), k
    with torch.inference_mode():
        run(_x(seed=2))  # same signature: no new graph
        run(_x(b=1))  # another batch size: a second graph
    assert len(run) == 2
    assert "2 graph(s)" in str(run)


def _face_prob(net, run, x):
    """The face probability through the graphs, asserted equal to the eager network's."""
    i = DecodedDenseReg.output_keys(net.config).index("face_prob")
    with torch.inference_mode():
        out = run(x)[i]
        ref = DecodedDenseReg(net)(x)[i]
    assert torch.allclose(out, ref, rtol=1e-4, atol=1e-5)
    return out


def test_graphs_are_rebuilt_when_the_weights_change(monkeypatch):
    monkeypatch.delenv(inference.GRAPHS_ENV, raising=False)
    net, run = _decoder()
    x = _x()
    before = _face_prob(net, run, x)
    with torch.no_grad():
        net.cls_head.bias[0] += 3.0  # in place, as an optimiser step: more background
    assert not torch.allclose(before, _face_prob(net, run, x))


def test_graphs_are_rebuilt_when_a_submodule_or_parameter_is_replaced(monkeypatch):
    monkeypatch.delenv(inference.GRAPHS_ENV, raising=False)
    net, run = _decoder()
    x = _x()
    before = _face_prob(net, run, x)
    head = net.cls_head
    torch.manual_seed(5)
    net.cls_head = torch.nn.Conv2d(head.in_channels, head.out_channels, 1).eval()
    replaced = _face_prob(net, run, x)
    assert not torch.allclose(before, replaced)
    # a parameter of a deeper module swapped for a new tensor (load_state_dict(assign))
    conv = net.backbone.stem[0]
    conv.weight = torch.nn.Parameter(torch.zeros_like(conv.weight))
    assert not torch.allclose(replaced, _face_prob(net, run, x))
    # a hook on a module added after the first call is still seen
    seen = []
    net.cls_head.register_forward_hook(lambda *a: seen.append(1))
    with torch.inference_mode():
        run(x)
    assert seen == [1]


def test_eager_in_training_mode_with_hooks_or_when_switched_off(monkeypatch):
    monkeypatch.delenv(inference.GRAPHS_ENV, raising=False)
    net, run = _decoder()
    net.train()
    with torch.no_grad():
        run(_x())
    assert len(run) == 0
    net.eval()
    seen = []
    handle = net.register_forward_hook(lambda *a: seen.append(1))
    with torch.inference_mode():
        run(_x())
    assert seen == [1] and len(run) == 0
    handle.remove()
    monkeypatch.setenv(inference.GRAPHS_ENV, "0")
    assert not inference.graphs_enabled()
    with torch.inference_mode():
        run(_x())
    assert len(run) == 0
    monkeypatch.setenv(inference.GRAPHS_ENV, "1")
    with torch.inference_mode():
        run(_x())
    assert len(run) == 1


class _NotTraceable(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 2)

    def forward(self, x):
        return (self.lin(x), "label")  # a string output cannot be traced


def test_untraceable_module_warns_once_and_runs_eagerly(monkeypatch):
    monkeypatch.delenv(inference.GRAPHS_ENV, raising=False)
    net = torch.nn.Linear(3, 2).eval()
    run = FrozenGraphs(net, lambda n: _NotTraceable(), "toy")
    x = torch.rand(4, 3)
    with pytest.warns(
        RuntimeWarning, match="toy: no TorchScript graph.*running eagerly"
    ):
        out = run(x)
    assert out[1] == "label" and out[0].shape == (4, 2)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run(x)  # the failure is remembered: no second trace, no second warning
    assert len(run) == 0


def test_graphs_are_kept_per_network_and_key_and_go_with_the_network():
    net, _ = _decoder()
    a = frozen_graphs(net, "k", lambda n: DecodedDenseReg(n))
    assert frozen_graphs(net, "k", lambda n: None) is a
    assert frozen_graphs(net, "other", lambda n: DecodedDenseReg(n)) is not a
    n_before = len(inference._GRAPHS)
    del net, a
    gc.collect()
    assert len(inference._GRAPHS) == n_before - 1


def test_graphs_speed_benchmark_fits_the_same_landmarks_both_ways(monkeypatch, capsys):
    # a shipped chain (DenseReg+PCA -> MDM) with and without graphs: same landmarks
    import importlib.util
    from pathlib import Path

    monkeypatch.setenv(inference.GRAPHS_ENV, "1")
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "graphs_speed.py"
    spec = importlib.util.spec_from_file_location("graphs_speed", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.main(["densereg-mdm-face", "--repeats", "1", "--threads", "1"])
    row = [l for l in capsys.readouterr().out.splitlines() if l.startswith("densereg")]
    assert len(row) == 1
    eager, graphs, ratio, diff = (float(v) for v in row[0].split()[1:])
    assert eager > 0 and graphs > 0 and ratio > 0
    assert diff < 1e-3  # pixels
    assert inference.graphs_enabled()  # the caller's setting is restored
