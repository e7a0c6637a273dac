"""DenseReg losses: bin classification, responsible-bin residual, depth.

For each axis (``u``, ``v``) with ``K`` bins (see :mod:`menpo_densereg.densereg.network` for
the centred residual convention):

- **classification**: cross-entropy over ``K + 1`` classes (background = class 0),
  averaged over *all* pixels;
- **residual**: smooth-L1 between the residual head of the *ground-truth* (responsible)
  bin and the residual target, summed over face pixels and divided by the number of
  face pixels (background pixels contribute nothing), times ``residual_weight`` (the
  paper used 40 for ``d = 0.1``);
- **depth**: L1 on face pixels, normalised the same way, times ``depth_weight``.
"""

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from menpo_densereg.densereg.network import bin_targets

__all__ = ["DenseRegLossConfig", "densereg_loss"]


@dataclass
class DenseRegLossConfig:
    """Weights of the DenseReg loss terms.

    Parameters
    ----------
    residual_weight : `float`
        Weight of the residual term (paper: 40 for d = 0.1).
    depth_weight : `float`
        Weight of the depth term.
    smooth_l1_beta : `float`
        Transition point of the smooth-L1 (in UV units).
    background_weight : `float`
        Cross-entropy weight of the background class relative to the bins.
    """

    residual_weight: float = 40.0
    depth_weight: float = 1.0
    smooth_l1_beta: float = 0.05
    background_weight: float = 1.0

    def to_dict(self):
        return asdict(self)


def densereg_loss(outputs, batch, config=None):
    """The DenseReg training loss.

    Parameters
    ----------
    outputs : `dict`
        Network outputs (``cls_u``, ``cls_v``, optional ``res_u``, ``res_v``, ``depth``).
    batch : `dict`
        ``"uv"`` ``(B, 2, H, W)`` in [0, 1], ``"mask"`` ``(B, H, W)`` (1 on face),
        optional ``"depth"`` ``(B, H, W)``.
    config : :class:`DenseRegLossConfig`, optional

    Returns
    -------
    loss : scalar tensor
    parts : `dict` of `float` (``ce_u``, ``ce_v``, ``res_u``, ``res_v``, ``depth``,
        ``face_px``) for logging.
    """
    config = config or DenseRegLossConfig()
    uv = batch["uv"].float()
    mask = batch["mask"].float()
    if uv.ndim != 4 or uv.shape[1] != 2:
        raise ValueError(f"batch['uv']: expected (B, 2, H, W), got {tuple(uv.shape)}")
    if mask.shape != uv[:, 0].shape:
        raise ValueError(
            f"batch['mask']: shape {tuple(mask.shape)} does not match uv {tuple(uv.shape)}"
        )
    k = outputs["cls_u"].shape[1] - 1
    face = (mask > 0.5).float()
    n_face = face.sum().clamp_min(1.0)
    weight = None
    if config.background_weight != 1.0:
        weight = torch.ones(k + 1, device=uv.device)
        weight[0] = config.background_weight
    total = 0.0
    parts = {}
    for i, axis in enumerate(("u", "v")):
        cls, q, res_t = bin_targets(uv[:, i], face, k)
        logits = outputs["cls_" + axis].float()
        ce = F.cross_entropy(logits, cls, weight=weight)
        total = total + ce
        parts["ce_" + axis] = float(ce.detach())
        res = outputs.get("res_" + axis)
        if res is not None:
            r = torch.gather(res.float(), 1, q[:, None])[:, 0]
            sl1 = F.smooth_l1_loss(
                r, res_t, reduction="none", beta=config.smooth_l1_beta
            )
            rl = (sl1 * face).sum() / n_face
            total = total + config.residual_weight * rl
            parts["res_" + axis] = float(rl.detach())
    if "depth" in outputs and "depth" in batch and config.depth_weight > 0:
        dl = (
            (outputs["depth"][:, 0].float() - batch["depth"].float()).abs() * face
        ).sum()
        dl = dl / n_face
        total = total + config.depth_weight * dl
        parts["depth"] = float(dl.detach())
    parts["face_px"] = float(face.sum())
    parts["loss"] = float(total.detach())
    return total, parts
