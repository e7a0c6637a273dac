"""The training engine under torchrun: 2 CPU processes (gloo) train one model in DDP."""

import json
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import json, os, sys
    import torch
    from menpo_densereg.training import TrainConfig, train_loop

    class Line(torch.utils.data.Dataset):
        def __init__(self):
            g = torch.Generator().manual_seed(0)
            self.x = torch.randn(64, 3, generator=g)
            self.y = self.x @ torch.tensor([1.0, -2.0, 0.5])
        def __len__(self):
            return 64
        def __getitem__(self, i):
            return {"x": self.x[i], "y": self.y[i]}

    def loss_fn(model, batch, device):
        loss = torch.nn.functional.mse_loss(model(batch["x"]).squeeze(-1), batch["y"])
        return loss, {}

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1, bias=False)
    out = sys.argv[1]
    cfg = TrainConfig(steps=200, batch_size=8, lr=0.1, warmup=1, out_dir=out,
                      progress=False, device="cpu", ckpt_every=0, log_every=10)
    hist = train_loop(model, Line(), loss_fn, cfg)
    rank = int(os.environ["RANK"])
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump({"w": model.weight.detach().flatten().tolist(),
                   "world": int(os.environ["WORLD_SIZE"])}, f)
    """)


def test_torchrun_ddp_two_cpu_processes(tmp_path):
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(script),
        str(tmp_path),
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    if run.returncode != 0 and "Address" in run.stderr and "in use" in run.stderr:
        pytest.skip("no free local port for torchrun")
    assert run.returncode == 0, run.stderr[-2000:]
    r0 = json.loads((tmp_path / "rank0.json").read_text())
    r1 = json.loads((tmp_path / "rank1.json").read_text())
    assert r0["world"] == r1["world"] == 2
    # DDP keeps the replicas identical, and they learned the line
    assert r0["w"] == pytest.approx(r1["w"], abs=1e-6)
    assert r0["w"] == pytest.approx([1.0, -2.0, 0.5], abs=0.1)
    assert (tmp_path / "checkpoint.pt").is_file()  # written by rank 0 only
