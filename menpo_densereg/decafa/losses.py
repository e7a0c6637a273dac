"""DeCaFA's training loss: masked multi-markup L1 with weighted intermediate supervision.

For stage ``s`` and markup ``k`` with ``L_k`` landmarks the per-sample loss is the L1
distance between predicted and ground-truth coordinates summed over the visible
landmarks and divided by ``L_k`` (so a 98-point markup does not outweigh a 5-point one).
Coordinates are measured in units of the input side, so the loss does not depend on the
crop resolution. A sample only supervises the markups it has (``has_<m>`` = 1) and only
its visible points (``vis_<m>``); a markup that no sample of the batch has contributes
exactly zero (and no gradient). Each markup's loss is averaged over the samples that
have it, and stages are weighted by ``lambda_s``:

- ``"increasing"`` (the paper): ``lambda_s = 2^(s - S)``, i.e. 1/8, 1/4, 1/2, 1 for 4
  stages, so the last stage matters most;
- ``"constant"``: 1 for every stage;
- ``"decreasing"``: the increasing weights reversed.
"""

import torch

from menpo_densereg.data.markups import get_markup

__all__ = ["stage_weights", "decafa_loss", "SCHEDULES", "markup_l1"]

SCHEDULES = ("increasing", "constant", "decreasing")


def stage_weights(n_stages, schedule="increasing"):
    """The intermediate-supervision weights ``lambda_1 ... lambda_S``.

    Parameters
    ----------
    n_stages : `int`
    schedule : ``"increasing"``, ``"constant"`` or ``"decreasing"``

    Returns
    -------
    weights : `list` of `float`
    """
    if n_stages < 1:
        raise ValueError(f"n_stages: expected >= 1, got {n_stages}")
    if schedule == "increasing":
        return [2.0 ** (s - n_stages + 1) for s in range(n_stages)]
    if schedule == "constant":
        return [1.0] * n_stages
    if schedule == "decreasing":
        return [2.0 ** (-s) for s in range(n_stages)]
    raise ValueError(f"schedule: expected one of {SCHEDULES}, got {schedule!r}")


def markup_l1(pred, target, has, vis, n_points, scale):
    """Masked L1 of one markup, averaged over the samples that have it.

    Parameters
    ----------
    pred, target : ``(B, L, 2)``
    has : ``(B,)`` 0/1
    vis : ``(B, L)`` 0/1
    n_points : `int`
        ``L_k``, the normaliser of the per-sample sum.
    scale : `float`
        Coordinates are divided by it (the input side).

    Returns
    -------
    loss : scalar tensor (0 with no gradient path when no sample has the markup)
    n : `int` number of samples that have the markup
    """
    has = has.reshape(-1).to(pred.dtype)
    weight = vis.to(pred.dtype) * has[:, None]
    # zero the targets where they are not used so that garbage (NaN) cannot leak
    target = torch.where(weight[..., None] > 0, target.to(pred.dtype), pred.detach())
    err = (pred - target).abs().sum(dim=-1) / scale  # (B, L)
    per_sample = (err * weight).sum(dim=-1) / float(n_points)
    n = int((has > 0).sum())
    return per_sample.sum() / max(n, 1), n


def decafa_loss(outputs, batch, schedule="increasing", markups=None, input_size=None):
    """Weighted multi-stage, multi-markup loss.

    Parameters
    ----------
    outputs : `list` of `dict`
        :class:`~menpo_densereg.decafa.network.DecafaNet` outputs (every stage),
        ``markup -> (coords, maps)``.
    batch : `dict`
        Dense-sample-format batch with ``lm_<m>``, ``has_<m>``, ``vis_<m>``.
    schedule : `str`
        Stage weights (see :func:`stage_weights`).
    markups : iterable of `str`, optional
        Markups to supervise (default: every markup in the outputs that the batch
        carries).
    input_size : `float`, optional
        Side of the input in pixels (default: the attention maps' width).

    Returns
    -------
    loss : scalar tensor
    logs : `dict` of floats: ``loss_<markup>`` (last stage, in units of the input side)
        and ``loss_stage<s>``.
    """
    weights = stage_weights(len(outputs), schedule)
    names = (
        list(outputs[-1]) if markups is None else [get_markup(m).name for m in markups]
    )
    total = None
    logs = {}
    for s, (lam, out) in enumerate(zip(weights, outputs)):
        stage_total = None
        for m in names:
            if m not in out or f"lm_{m}" not in batch:
                continue
            coords, maps = out[m]
            size = float(input_size or maps.shape[-1])
            target = batch[f"lm_{m}"]
            has = batch.get(
                f"has_{m}", torch.ones(target.shape[0], device=target.device)
            )
            vis = batch.get(
                f"vis_{m}", torch.ones(target.shape[:2], device=target.device)
            )
            l, n = markup_l1(coords, target, has, vis, get_markup(m).n_points, size)
            stage_total = l if stage_total is None else stage_total + l
            if s == len(outputs) - 1 and n:
                logs[f"loss_{m}"] = float(l.detach())
        if stage_total is None:
            continue
        logs[f"loss_stage{s + 1}"] = float(stage_total.detach())
        total = lam * stage_total if total is None else total + lam * stage_total
    if total is None:
        # nothing to supervise: a zero that still depends on the outputs
        any_coords = next(iter(outputs[-1].values()))[0]
        total = any_coords.sum() * 0.0
    return total, logs
