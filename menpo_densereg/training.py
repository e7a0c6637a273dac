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
  ``torch.load(weights_only=True)``);
- runs that cannot mix: a recipe's run has its own folder and key (fitter folder +
  hash of the resolved recipe, :func:`recipe_train_config`), a checkpoint of another
  run or architecture is refused (:class:`CheckpointMismatch`), and a killed run
  resumes bit-identically on CPU (RNG states and the data position are checkpointed).

Recipes (``fitters/<name>/recipe.toml``) are read with
:func:`menpo_densereg.fitting.recipes.load_recipe` (no torch needed).
"""

import hashlib
import json
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

__all__ = [
    "TrainConfig",
    "train_loop",
    "select_device",
    "seed_everything",
    "distributed_context",
    "load_checkpoint",
    "cli_overrides",
    "recipe_fingerprint",
    "run_dir",
    "run_key",
    "recipe_train_config",
    "CheckpointMismatch",
]

#: TrainConfig fields that do not change the trained weights (left out of the
#: configuration a checkpoint is compared with; ``steps`` may grow on resume).
_NON_MATH = (
    "steps",
    "device",
    "progress",
    "resume",
    "out_dir",
    "log_every",
    "val_every",
    "ckpt_every",
    "num_workers",
    "run_key",
)


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
    run_key : `str`, optional
        Identity of the run (the hash of the resolved recipe, see
        :func:`recipe_train_config`); a checkpoint with another key is refused.
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
    run_key: str = None
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


class CheckpointMismatch(ValueError):
    """A checkpoint that belongs to another run (configuration or architecture)."""


def _sha(obj):
    text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def recipe_fingerprint(recipe, overrides=None):
    """Hash of the resolved recipe: what decides the trained weights.

    The recipe's tables with the command-line ``overrides`` applied to ``[train]``,
    leaving out the settings that do not change the weights (``steps``, ``device``,
    ``resume``, ``out_dir``, logging periods, ``num_workers``) and the recipe's own path.

    Returns
    -------
    key : `str`
        64 hex digits.
    """
    resolved = {k: v for k, v in recipe.items() if not str(k).startswith("_")}
    train = dict(resolved.get("train", {}))
    train.update({k: v for k, v in (overrides or {}).items() if v is not None})
    resolved["train"] = {k: v for k, v in train.items() if k not in _NON_MATH}
    return _sha(resolved)


def run_key(fitter_dir, recipe, overrides=None):
    """Identity of a training run: its fitter folder and resolved recipe (hex digest).

    Stored in the run's checkpoint; a checkpoint with another key is not resumed.
    """
    where = str(Path(fitter_dir).resolve())
    return _sha({"fitter_dir": where, "recipe": recipe_fingerprint(recipe, overrides)})


def run_dir(fitter_dir, recipe, overrides=None, root=None):
    """The default checkpoint folder of a training run.

    ``root`` (default ``$CACHE/train``) / ``<fitter folder name>-<run key>``, the key
    hashing the fitter folder's absolute path and the resolved recipe
    (:func:`run_key`): two fitter folders, or two configurations of one folder, never
    share a checkpoint.
    """
    if root is None:
        from menpo_densereg.cache import cache_dir

        root = cache_dir() / "train"
    key = run_key(fitter_dir, recipe, overrides)[:16]
    return Path(root) / f"{Path(fitter_dir).resolve().name}-{key}"


def recipe_train_config(recipe, fitter_dir, args=None, root=None, out_dir=None):
    """The :class:`TrainConfig` of a recipe's run, seeded before anything is built.

    ``[train]`` table + command-line overrides (:func:`cli_overrides`). The checkpoint
    folder is ``out_dir`` when given, else the table's ``out_dir``, else the run's own
    folder (:func:`run_dir` under ``root``); ``run_key`` identifies the run (fitter
    folder + resolved recipe), so a checkpoint of another run found there is refused
    rather than resumed. Python, numpy and torch are seeded with the run's seed: call
    this before building models or data.
    """
    table = dict(recipe.get("train", {}))
    overrides = cli_overrides(args)
    explicit = out_dir or table.get("out_dir")
    if explicit:
        table["out_dir"] = str(explicit)
    else:
        table["out_dir"] = str(run_dir(fitter_dir, recipe, overrides, root=root))
    table["run_key"] = run_key(fitter_dir, recipe, overrides)
    config = TrainConfig.from_dict(table, **overrides)
    seed_everything(config.seed)
    return config


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


def _math_config(config):
    return {
        k: v for k, v in asdict(config).items() if k not in _NON_MATH and k != "extra"
    } | {"extra": config.extra}


def _rng_state():
    """Python, numpy and torch RNG states as tensors and plain numbers."""
    keys, pos, has_gauss, gauss = np.random.get_state()[1:]
    version, internal, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
        "numpy_pos": int(pos),
        "numpy_has_gauss": int(has_gauss),
        "numpy_gauss": float(gauss),
        "python_version": int(version),
        "python_state": torch.tensor(internal, dtype=torch.int64),
        "python_gauss": py_gauss,
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state):
    torch.set_rng_state(state["torch"])
    np.random.set_state(
        (
            "MT19937",
            state["numpy_keys"].numpy().astype(np.uint32),
            state["numpy_pos"],
            state["numpy_has_gauss"],
            state["numpy_gauss"],
        )
    )
    random.setstate(
        (
            state["python_version"],
            tuple(int(v) for v in state["python_state"].tolist()),
            state["python_gauss"],
        )
    )
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _architecture_diff(model, saved):
    """A short description of how a saved state dict differs from ``model``'s."""
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    other = {k: tuple(v.shape) for k, v in saved.items()}
    missing = sorted(set(own) - set(other))
    unexpected = sorted(set(other) - set(own))
    shapes = [k for k in own if k in other and own[k] != other[k]]
    parts = []
    if missing:
        parts.append(f"{len(missing)} tensors missing (e.g. {missing[0]!r})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]!r})")
    if shapes:
        k = shapes[0]
        parts.append(
            f"{len(shapes)} of another shape (e.g. {k!r}: {other[k]} vs {own[k]})"
        )
    return "; ".join(parts)


def _check_checkpoint(path, state, model, config):
    """Refuse a checkpoint of another run; the message says how to start afresh."""
    hint = "train with --no-resume (resume=False) to start afresh, or delete it"
    saved = state.get("run_key")
    if "config" not in state:
        print(
            f"warning: {path} predates run identities (no configuration stored); "
            "resuming it unchecked"
        )
    if config.run_key and saved and saved != config.run_key:
        raise CheckpointMismatch(
            f"{path}: checkpoint of another recipe configuration "
            f"({saved[:16]} != {config.run_key[:16]}); {hint}"
        )
    if "config" in state:
        theirs = json.loads(state["config"])
        ours = json.loads(json.dumps(_math_config(config), default=str))
        diff = sorted(
            k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k)
        )
        if diff:
            shown = ", ".join(
                f"{k}: {theirs.get(k)!r} -> {ours.get(k)!r}" for k in diff[:4]
            )
            raise CheckpointMismatch(
                f"{path}: checkpoint was trained with other settings ({shown}); {hint}"
            )
    arch = _architecture_diff(model, state.get("model", {}))
    if arch:
        raise CheckpointMismatch(
            f"{path}: checkpoint holds another network architecture ({arch}); {hint}"
        )
    if int(state.get("step", 0)) > config.steps:
        raise CheckpointMismatch(
            f"{path}: checkpoint is at step {int(state['step'])}, past the requested "
            f"{config.steps} steps; {hint}"
        )


def _clean_stale_temporaries(folder):
    """Remove temporary files left by interrupted checkpoint writes."""
    removed = []
    for p in Path(folder).glob(".checkpoint.pt.*.tmp*"):
        try:
            p.unlink()
            removed.append(p)
        except FileNotFoundError:
            pass
    return removed


class _EpochSampler(torch.utils.data.Sampler):
    """Indices of one epoch, a function of (seed, epoch) only, from a given position.

    Shuffles map-style datasets like ``RandomSampler`` but reproducibly, splits them
    between DDP ranks, and can skip the items already consumed before a checkpoint;
    a caller's sampler (with ``set_epoch``) is wrapped the same way.
    """

    def __init__(self, n, seed, shuffle=True, num_replicas=1, rank=0, base=None):
        self.n, self.seed, self.shuffle = int(n), int(seed), bool(shuffle)
        self.num_replicas, self.rank = int(num_replicas), int(rank)
        self.base = base
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch, skip=0):
        self.epoch, self.skip = int(epoch), int(skip)
        if self.base is not None and hasattr(self.base, "set_epoch"):
            self.base.set_epoch(self.epoch)

    def _indices(self):
        if self.base is not None:
            return list(self.base)
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1000003 + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        per = self.n // self.num_replicas if self.num_replicas > 1 else self.n
        return order[self.rank : per * self.num_replicas : self.num_replicas]

    def __iter__(self):
        return iter(self._indices()[self.skip :])

    def __len__(self):
        if self.base is not None:
            return max(0, len(self.base) - self.skip)
        per = self.n // self.num_replicas if self.num_replicas > 1 else self.n
        return max(0, per - self.skip)


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
        Passed to the DataLoader. Without a sampler, map-style datasets are shuffled
        by (seed, epoch) and split between DDP ranks; a given sampler should be a
        function of ``set_epoch`` (then a resumed run sees the same items).

    Notes
    -----
    ``config.seed`` seeds python, numpy and torch at the start; checkpoints also hold
    the RNG states, the epoch and the position in it, so that a run killed and resumed
    gives the same weights, bit for bit on CPU, as an uninterrupted one (with
    ``num_workers=0``, or datasets whose items depend only on their index). A
    checkpoint of another configuration (``run_key``, the settings that change the
    weights, the architecture, or a step past ``config.steps``) raises
    :class:`CheckpointMismatch`; ``resume=False`` starts afresh. Temporary files of
    interrupted checkpoint writes are removed.

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
        is_iterable = isinstance(dataset, torch.utils.data.IterableDataset)
        epoch_sampler = None
        if not is_iterable:
            # a reproducible, resumable order: a function of (seed, epoch) only
            epoch_sampler = _EpochSampler(
                len(dataset),
                config.seed,
                shuffle=sampler is None,
                num_replicas=dist_ctx.world_size if sampler is None else 1,
                rank=dist_ctx.rank if sampler is None else 0,
                base=sampler,
            )
        n_items = len(epoch_sampler) if epoch_sampler is not None else None
        generator = torch.Generator()
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_size=config.batch_size,
            shuffle=False,
            sampler=epoch_sampler,
            num_workers=config.num_workers,
            collate_fn=collate_fn,
            drop_last=not is_iterable and n_items > config.batch_size,
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
        epoch, batch_in_epoch = 0, 0
        rng_state = None
        ckpt_path = Path(config.out_dir) / "checkpoint.pt" if config.out_dir else None
        if ckpt_path is not None and rank0:
            _clean_stale_temporaries(ckpt_path.parent)
        if ckpt_path is not None and config.resume and ckpt_path.is_file():
            state = load_checkpoint(ckpt_path)
            _check_checkpoint(ckpt_path, state, model, config)
            model.load_state_dict(state["model"])
            optimiser.load_state_dict(state["optimiser"])
            if "scaler" in state and scaler.is_enabled():
                scaler.load_state_dict(state["scaler"])
            step = int(state["step"])
            epoch = int(state.get("epoch", 0))
            batch_in_epoch = int(state.get("batch_in_epoch", 0))
            rng_state = state.get("rng")
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
                "epoch": epoch,
                "batch_in_epoch": batch_in_epoch,
                "rng": _rng_state(),
                "config": json.dumps(_math_config(config), default=str),
                "train_history": history["train"],
                "val_history": history["val"],
            }
            if config.run_key:
                state["run_key"] = config.run_key
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
        running = {}
        if rng_state is not None:
            _set_rng_state(rng_state)
        while step < config.steps:
            skip = batch_in_epoch * config.batch_size
            if epoch_sampler is not None:
                epoch_sampler.set_epoch(epoch, skip)
            # the loader's own seed (worker seeds) is a function of the epoch too
            generator.manual_seed(config.seed * 7919 + epoch)
            batches = iter(loader)
            if epoch_sampler is None:  # iterable dataset: replay up to the position
                saved = _rng_state()
                for _ in range(batch_in_epoch):
                    next(batches, None)
                _set_rng_state(saved)
            fresh_epoch = skip == 0
            for batch in batches:
                fresh_epoch = False
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
                batch_in_epoch += 1
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
            else:
                if fresh_epoch:
                    raise ValueError(
                        f"the training data gives no batch of {config.batch_size}"
                    )
                epoch += 1
                batch_in_epoch = 0
                continue
            break
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
