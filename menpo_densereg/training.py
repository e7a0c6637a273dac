"""The torch training engine shared by every learned model of the project.

One loop serves DenseReg, DeCaFA and MDM: the model-specific code is a dataset and a
``loss_fn(model, batch, device) -> (loss, logs)``. The engine does the rest:

- device auto-selection (CUDA when present, else CPU) and mixed precision on CUDA
  (bfloat16 where supported, else float16 with a gradient scaler);
- several GPUs through ``torchrun`` (DistributedDataParallel, one process per GPU;
  the engine reads ``WORLD_SIZE``/``RANK``/``LOCAL_RANK`` set by torchrun);
- AdamW with linear warm-up and cosine decay, gradient clipping;
- a tqdm progress bar, periodic validation, and atomic, resumable checkpoints
  (``checkpoint.pt`` holds only tensors and plain numbers and loads with
  ``torch.load(weights_only=True)``).

Recipes (``fitters/<name>/recipe.toml``) are read with :func:`load_recipe`.
"""

import math
import os
import random
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from menpo_densereg.atomic import atomic_path
from menpo_densereg.fitting.recipes import load_recipe  # noqa: F401  (re-export)

__all__ = [
    "TrainConfig",
    "train_loop",
    "select_device",
    "load_recipe",
    "seed_everything",
    "distributed_context",
    "load_checkpoint",
    "cli_overrides",
]


@dataclass
class TrainConfig:
    """Settings of :func:`train_loop` (recipes' ``[train]`` table maps onto it).

    Parameters
    ----------
    steps : `int`
        Number of optimiser steps.
    batch_size : `int`
        Per-process batch size.
    lr, weight_decay : `float`
        AdamW settings (peak learning rate).
    warmup : `int`
        Linear warm-up steps, then cosine decay to ``lr * min_lr_ratio``.
    grad_clip : `float`
        Max gradient norm (0 disables).
    amp : `bool`
        Mixed precision on CUDA.
    seed : `int`
    num_workers : `int`
        DataLoader workers.
    val_every, ckpt_every, log_every : `int`
        Periods in steps (0 disables).
    out_dir : `str`
        Where ``checkpoint.pt`` goes; `None` disables checkpoints.
    resume : `bool`
        Continue from ``out_dir/checkpoint.pt`` when it exists.
    device : `str`
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
    progress : `bool`
        Show a tqdm bar (rank 0 only).
    """

    steps: int = 1000
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup: int = 50
    min_lr_ratio: float = 0.05
    grad_clip: float = 5.0
    amp: bool = True
    seed: int = 0
    num_workers: int = 0
    val_every: int = 0
    ckpt_every: int = 200
    log_every: int = 10
    out_dir: str = None
    resume: bool = True
    device: str = "auto"
    progress: bool = True
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d, **overrides):
        """Build from a recipe's ``[train]`` table; unknown keys go to ``extra``."""
        names = {f.name for f in fields(cls)}
        known = {k: v for k, v in d.items() if k in names and k != "extra"}
        extra = {k: v for k, v in d.items() if k not in names}
        known.update({k: v for k, v in overrides.items() if v is not None})
        return cls(extra=extra, **known)

    def __str__(self):
        items = ", ".join(f"{k}={v}" for k, v in asdict(self).items() if k != "extra")
        return f"TrainConfig({items})"


def cli_overrides(args):
    """:class:`TrainConfig` overrides from ``menpo-densereg train`` arguments.

    ``args`` may be `None` or lack attributes (Python callers); unset values are left
    out, so the recipe's ``[train]`` table keeps them.
    """
    if args is None:
        return {}
    out = {
        "steps": getattr(args, "steps", None),
        "device": getattr(args, "device", None),
    }
    if getattr(args, "resume", None) is not None:
        out["resume"] = bool(args.resume)
    return {k: v for k, v in out.items() if v is not None}


def select_device(name="auto"):
    """``"auto"`` picks CUDA when available (the local rank's GPU under torchrun)."""
    if name in (None, "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    return device


def seed_everything(seed):
    """Seed python, numpy and torch."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


class distributed_context:
    """Initialise/tear down ``torch.distributed`` when launched by torchrun.

    Outside torchrun (``WORLD_SIZE`` unset or 1) it does nothing.
    """

    def __init__(self, device):
        self.device = device
        self.world_size = int(os.environ.get("WORLD_SIZE", 1))
        self.rank = int(os.environ.get("RANK", 0))
        self._owned = False

    @property
    def enabled(self):
        return self.world_size > 1

    def __enter__(self):
        import torch.distributed as dist

        if self.enabled and not dist.is_initialized():
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            if self.device.type == "cuda":
                torch.cuda.set_device(self.device)
            dist.init_process_group(backend=backend)
            self._owned = True
        return self

    def __exit__(self, *exc):
        import torch.distributed as dist

        if self._owned and dist.is_initialized():
            dist.destroy_process_group()
        return False


def _lr_at(step, config):
    if config.warmup and step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    span = max(1, config.steps - config.warmup)
    t = min(1.0, (step - config.warmup) / span)
    lo = config.lr * config.min_lr_ratio
    return lo + 0.5 * (config.lr - lo) * (1 + math.cos(math.pi * t))


def _amp_settings(device, enabled):
    if not enabled or device.type != "cuda":
        return False, None
    if torch.cuda.is_bf16_supported():
        return True, torch.bfloat16
    return True, torch.float16


def load_checkpoint(path):
    """Load a training checkpoint safely (``weights_only=True``)."""
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt, truncated or foreign
        raise ValueError(f"{path}: unreadable checkpoint ({e})") from None


def _to_device(batch, device):
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device) for v in batch)
    if torch.is_tensor(batch):
        return batch.to(device, non_blocking=True)
    return batch


def train_loop(
    model,
    dataset,
    loss_fn,
    config,
    val_fn=None,
    collate_fn=None,
    sampler=None,
):
    """Train ``model`` on ``dataset`` with ``loss_fn``.

    Parameters
    ----------
    model : `torch.nn.Module`
    dataset : `torch.utils.data.Dataset` or `IterableDataset`
    loss_fn : callable ``(model, batch, device) -> (loss, logs)``
        ``batch`` is already on ``device``; ``logs`` a dict of floats.
    config : `TrainConfig`
    val_fn : callable ``(model, device) -> dict``, optional
        Runs on rank 0 every ``config.val_every`` steps and at the end, with the model
        in eval mode (unwrapped from DDP).
    collate_fn, sampler : optional
        Passed to the DataLoader (a DistributedSampler is used under torchrun when no
        sampler is given and the dataset is map-style).

    Returns
    -------
    history : `dict`
        ``{"train": [...], "val": [...], "seconds": float, "steps": int,
        "device": str}``; the trained weights are in ``model``.
    """
    device = select_device(config.device)
    seed_everything(config.seed)
    history = {
        "train": [],
        "val": [],
        "seconds": 0.0,
        "steps": 0,
        "device": str(device),
    }
    with distributed_context(device) as dist_ctx:
        rank0 = dist_ctx.rank == 0
        model.to(device)
        net = model
        if dist_ctx.enabled:
            from torch.nn.parallel import DistributedDataParallel

            net = DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None
            )
            if sampler is None and hasattr(dataset, "__getitem__"):
                from torch.utils.data.distributed import DistributedSampler

                sampler = DistributedSampler(dataset, seed=config.seed)
        is_iterable = isinstance(dataset, torch.utils.data.IterableDataset)
        generator = torch.Generator().manual_seed(config.seed)
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_size=config.batch_size,
            shuffle=(sampler is None and not is_iterable),
            sampler=sampler,
            num_workers=config.num_workers,
            collate_fn=collate_fn,
            drop_last=not is_iterable and len(dataset) > config.batch_size,
            pin_memory=device.type == "cuda",
            generator=generator,
            persistent_workers=config.num_workers > 0,
        )
        optimiser = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad],
            lr=config.lr,
            weight_decay=config.weight_decay,
        )
        use_amp, amp_dtype = _amp_settings(device, config.amp)
        scaler = torch.amp.GradScaler(
            "cuda", enabled=use_amp and amp_dtype == torch.float16
        )
        step = 0
        ckpt_path = Path(config.out_dir) / "checkpoint.pt" if config.out_dir else None
        if ckpt_path is not None and config.resume and ckpt_path.is_file():
            state = load_checkpoint(ckpt_path)
            model.load_state_dict(state["model"])
            optimiser.load_state_dict(state["optimiser"])
            if "scaler" in state and scaler.is_enabled():
                scaler.load_state_dict(state["scaler"])
            step = int(state["step"])
            history["train"] = list(state.get("train_history", []))
            history["val"] = list(state.get("val_history", []))
            if rank0:
                print(f"resumed from {ckpt_path} at step {step}")

        def save_checkpoint():
            if ckpt_path is None or not rank0:
                return
            state = {
                "model": model.state_dict(),
                "optimiser": optimiser.state_dict(),
                "step": step,
                "train_history": history["train"],
                "val_history": history["val"],
            }
            if scaler.is_enabled():
                state["scaler"] = scaler.state_dict()
            with atomic_path(ckpt_path) as tmp:
                torch.save(state, tmp)

        def validate():
            if val_fn is None or not rank0:
                return
            model.eval()
            with torch.no_grad():
                logs = dict(val_fn(model, device))
            model.train()
            logs["step"] = step
            history["val"].append(logs)
            tqdm.write(
                f"[val step {step}] "
                + ", ".join(f"{k}={v:.4g}" for k, v in logs.items() if k != "step")
            )

        bar = tqdm(
            total=config.steps,
            initial=step,
            disable=not (config.progress and rank0),
            desc="train",
            dynamic_ncols=True,
        )
        t0 = time.perf_counter()
        model.train()
        epoch = 0
        running = {}
        while step < config.steps:
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(epoch)
            for batch in loader:
                if step >= config.steps:
                    break
                for group in optimiser.param_groups:
                    group["lr"] = _lr_at(step, config)
                batch = _to_device(batch, device)
                with torch.autocast(
                    device.type, dtype=amp_dtype or torch.float32, enabled=use_amp
                ):
                    loss, logs = loss_fn(net, batch, device)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"non-finite loss at step {step}: {logs}")
                optimiser.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if config.grad_clip:
                    scaler.unscale_(optimiser)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                scaler.step(optimiser)
                scaler.update()
                step += 1
                logs = {"loss": float(loss.detach()), **logs}
                for k, v in logs.items():
                    running[k] = running.get(k, 0.0) + float(v)
                bar.update(1)
                if config.log_every and step % config.log_every == 0:
                    mean = {k: v / config.log_every for k, v in running.items()}
                    mean["step"] = step
                    history["train"].append(mean)
                    bar.set_postfix(loss=f"{mean['loss']:.4g}")
                    running = {}
                if config.val_every and step % config.val_every == 0:
                    validate()
                if config.ckpt_every and step % config.ckpt_every == 0:
                    save_checkpoint()
            epoch += 1
        bar.close()
        if val_fn is not None and (
            not history["val"] or history["val"][-1].get("step") != step
        ):
            validate()
        save_checkpoint()
        history["seconds"] = time.perf_counter() - t0
        history["steps"] = step
    model.eval()
    return history
