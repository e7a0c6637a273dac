import argparse
import json

import numpy as np
import pytest

from menpo_densereg.decafa.initialiser import load_decafa
from menpo_densereg.decafa.train import (
    build_sources,
    model_config_from_recipe,
    resolve_data_root,
    train_from_recipe,
)
from menpo_densereg.data.readers import write_pts


def _write_faces(folder, n, n_points, seed):
    import PIL.Image

    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        img = (rng.random((80, 72, 3)) * 60).astype(np.uint8)
        img[20:65, 15:60] += 120
        PIL.Image.fromarray(img).save(folder / f"face{i}.png")
        pts = np.stack(
            [rng.uniform(22, 62, n_points), rng.uniform(17, 57, n_points)], axis=1
        )
        write_pts(folder / f"face{i}.pts", pts)


def _recipe(root):
    return {
        "_path": str(root / "recipe.toml"),
        "fitter": {"kind": "decafa", "name": "tiny"},
        "model": {
            "input_size": 32,
            "width": 0.0625,
            "n_stages": 2,
            "markups": ["68", "29", "5"],
        },
        "loss": {"schedule": "increasing"},
        "data": {
            "root": str(root / "data"),
            "repeats": 4,
            "sources": [
                {"name": "f29", "folders": ["f29"], "exclude_slice": [0, 1]},
                {"name": "f68", "folders": ["f68"]},
                {"name": "synth", "synthetic": str(root / "nothing"), "optional": True},
            ],
        },
        "validation": [{"name": "v29", "folders": ["f29"], "slice": [0, 1]}],
        "train": {
            "steps": 6,
            "batch_size": 4,
            "lr": 1e-3,
            "warmup": 2,
            "log_every": 2,
            "ckpt_every": 3,
            "val_every": 0,
        },
    }


def test_train_from_recipe_writes_loadable_weights(tmp_path):
    _write_faces(tmp_path / "data" / "f29", 3, 29, 0)
    _write_faces(tmp_path / "data" / "f68", 2, 68, 1)
    recipe = _recipe(tmp_path)
    out = tmp_path / "fitter"
    args = argparse.Namespace(
        steps=None,
        device="cpu",
        resume=False,
        progress=False,
        out_dir=str(tmp_path / "ckpt"),
    )
    summary = train_from_recipe(recipe, out, args)
    assert summary["steps"] == 6
    assert summary["sources"] == {"f29": 2, "f68": 2}
    assert "nme_v29_lfpw29" in summary["final_val"]
    net, header = load_decafa(out / "weights.safetensors")
    assert net.config.markups == ["ibug68", "lfpw29", "five"]
    assert header["extra"]["training"]["steps"] == 6
    log = json.loads((out / "training_log.json").read_text())
    assert log["history"]["train"]
    assert (tmp_path / "ckpt" / "checkpoint.pt").is_file()


def test_sources_alternate_and_missing_data_is_reported(tmp_path):
    _write_faces(tmp_path / "data" / "f29", 3, 29, 0)
    _write_faces(tmp_path / "data" / "f68", 2, 68, 1)
    recipe = _recipe(tmp_path)
    config = model_config_from_recipe(recipe)
    mixed, turns = build_sources(recipe, config)
    assert mixed.source_sizes == [8, 8] and turns == [1, 1]
    item = mixed[8]
    assert item["has_ibug68"] == 1 and item["has_lfpw29"] == 1  # derived from 68
    assert mixed[0]["has_ibug68"] == 0
    recipe["data"]["sources"][2]["optional"] = False
    with pytest.raises(FileNotFoundError, match="nothing"):
        build_sources(recipe, config)
    with pytest.raises(FileNotFoundError, match="not found"):
        resolve_data_root(tmp_path / "nowhere")


def test_fine_tuning_starts_from_init_weights_and_checks_them(tmp_path):
    import torch

    from menpo_densereg.decafa.initialiser import save_decafa
    from menpo_densereg.decafa.network import build_decafa
    from menpo_densereg.decafa.train import _init_weights

    recipe = _recipe(tmp_path)
    config = model_config_from_recipe(recipe)
    assert _init_weights(recipe, tmp_path, config) is None
    recipe["model"]["init_weights"] = "start.safetensors"
    with pytest.raises(ValueError, match="start.safetensors.*not found"):
        _init_weights(recipe, tmp_path, config)
    torch.manual_seed(3)
    start = build_decafa(config)
    save_decafa(tmp_path / "start.safetensors", start)
    assert model_config_from_recipe(recipe) == config  # init_weights is no field
    net = _init_weights(recipe, tmp_path, config)
    for k, v in start.state_dict().items():
        assert torch.equal(net.state_dict()[k], v), k
    other = dict(recipe, model=dict(recipe["model"], width=0.125))
    with pytest.raises(ValueError, match="another configuration"):
        _init_weights(other, tmp_path, model_config_from_recipe(other))
