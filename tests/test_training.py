import pytest
import torch

from menpo_densereg.fitting.recipes import load_recipe
from menpo_densereg.training import (
    TrainConfig,
    load_checkpoint,
    select_device,
    train_loop,
)


class _Line(torch.utils.data.Dataset):
    def __init__(self, n=64):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 3, generator=g)
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5]) + 0.3

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "y": self.y[i]}


def _loss(model, batch, device):
    pred = model(batch["x"]).squeeze(-1)
    loss = torch.nn.functional.mse_loss(pred, batch["y"])
    return loss, {"mse": float(loss.detach())}


def _config(tmp_path, steps, **kw):
    return TrainConfig(
        steps=steps,
        batch_size=8,
        lr=0.05,
        warmup=2,
        log_every=5,
        ckpt_every=10,
        out_dir=str(tmp_path),
        progress=False,
        **kw
    )


def test_train_loop_lowers_loss_and_checkpoints(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    data = _Line()
    before = _loss(model, {"x": data.x, "y": data.y}, "cpu")[0].item()
    hist = train_loop(
        model,
        data,
        _loss,
        _config(tmp_path, 60),
        val_fn=lambda m, d: {
            "val_mse": _loss(m, {"x": data.x, "y": data.y}, d)[0].item()
        },
    )
    after = _loss(model, {"x": data.x, "y": data.y}, "cpu")[0].item()
    assert after < 0.1 * before
    assert hist["steps"] == 60
    assert hist["val"][-1]["step"] == 60
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["step"] == 60
    assert not list(tmp_path.glob("*.tmp*"))


def test_train_loop_resumes_from_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    train_loop(model, _Line(), _loss, _config(tmp_path, 20))
    model2 = torch.nn.Linear(3, 1)
    hist = train_loop(model2, _Line(), _loss, _config(tmp_path, 30))
    assert hist["steps"] == 30
    # resumed: training history continues instead of restarting at step 5
    steps = [h["step"] for h in hist["train"]]
    assert steps == sorted(steps) and steps[0] == 5 and steps[-1] == 30


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    p = tmp_path / "checkpoint.pt"
    p.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="checkpoint.pt"):
        load_checkpoint(p)


def test_select_device_cpu_and_missing_cuda():
    assert select_device("cpu").type == "cpu"
    assert select_device("auto").type in ("cpu", "cuda")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            select_device("cuda")


def test_train_config_from_recipe_table():
    c = TrainConfig.from_dict({"steps": 7, "lr": 0.1, "K": 10}, steps=3)
    assert c.steps == 3 and c.lr == 0.1 and c.extra == {"K": 10}


def test_load_recipe_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_recipe(tmp_path)
    (tmp_path / "recipe.toml").write_text("[fitter]\nname = 'x'\n")
    with pytest.raises(ValueError, match="kind"):
        load_recipe(tmp_path)
    (tmp_path / "recipe.toml").write_text("[fitter\n")
    with pytest.raises(ValueError, match="invalid TOML"):
        load_recipe(tmp_path)
    (tmp_path / "recipe.toml").write_text("[fitter]\nkind = 'densereg'\n")
    assert load_recipe(tmp_path)["fitter"]["kind"] == "densereg"
