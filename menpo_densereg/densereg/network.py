"""DenseReg network: a fully convolutional net with quantised regression heads.

DenseReg (Güler et al., CVPR 2017) regresses, for every pixel of a face crop, the
template coordinates ``(u, v)`` in [0, 1]. Each axis is split into ``K`` bins of width
``d = 1 / K``; the network predicts, per axis,

- a ``(K + 1)``-way classification: class 0 is *background*, class ``q + 1`` is bin ``q``;
- ``K`` residual regressors (one 1x1 conv output per bin).

**Residual convention** (centred, in UV units): bin ``q`` (0-based) covers
``[q d, (q + 1) d)`` and has centre ``c_q = (q + 1/2) d``. The residual target of a pixel
with coordinate ``u`` in bin ``q = min(floor(u / d), K - 1)`` is ``r = u - c_q`` in
``[-d/2, d/2]``. The residual heads output ``d * x`` (``x`` the raw 1x1 conv), so at
initialisation the residuals are of the order of a bin. Decoding:

    û = c_q̂ + r̂_q̂,   q̂ = argmax over the K bin classes (background excluded),

clipped to [0, 1]. The baselines of the paper's Fig. 5 are configurations of the same
net: ``head="plain"`` (K = 1: one bin, so û = 1/2 + r̂ is plain regression) and
``head="quantised_only"`` (no residual heads: û = c_q̂, the bin centre).

An optional depth head (1x1 branch, sigmoid, [0, 1]) predicts the template depth.

Backbones (selected by ``DenseRegConfig.backbone``):

- ``"mobile"`` (default, CPU-fast): a depthwise-separable encoder to stride 8 (with a
  dilated last stage) and a light decoder that fuses the stride-4 features; heads at
  stride 4.
- ``"resnet"``: a dilated ResNet of the paper's kind (basic blocks, output stride 8,
  dilation 2 and 4 in the last two stages), for GPU training.

All predictions are bilinearly upsampled to the input size.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

# the configuration is torch-free (numpy inference uses it without importing torch)
from menpo_densereg.densereg.numpy_net import BACKBONES, HEADS, DenseRegConfig

__all__ = [
    "DenseRegConfig",
    "DenseRegNet",
    "build_densereg",
    "decode_uv",
    "DecodedDenseReg",
    "bin_targets",
    "HEADS",
    "BACKBONES",
]


# --------------------------------------------------------------------------- blocks
def _conv_bn_relu(cin, cout, k=3, stride=1, dilation=1, groups=1):
    pad = dilation * (k - 1) // 2
    return nn.Sequential(
        nn.Conv2d(
            cin, cout, k, stride, pad, dilation=dilation, groups=groups, bias=False
        ),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class _DepthwiseSeparable(nn.Module):
    """3x3 depthwise + 1x1 pointwise, with a residual connection when shapes match."""

    def __init__(self, cin, cout, stride=1, dilation=1):
        super().__init__()
        self.dw = _conv_bn_relu(cin, cin, 3, stride, dilation, groups=cin)
        self.pw = nn.Sequential(
            nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout)
        )
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.pw(self.dw(x))
        if self.residual:
            y = y + x
        return F.relu(y, inplace=True)


class MobileBackbone(nn.Module):
    """Depthwise-separable encoder (stride 8, dilated last stage) + light decoder.

    Channels: ``w/2`` at stride 2, ``w`` at stride 4, ``3w`` at stride 8 (five blocks,
    dilations 1, 2, 4, 2, 1: a receptive field covering the whole crop); the decoder
    fuses the upsampled stride-8 features with the stride-4 ones and returns ``2w``
    channels at stride 4. Narrow where the maps are large, wide where they are small,
    so it trains and runs fast on a CPU.
    """

    def __init__(self, width=32):
        super().__init__()
        w = width
        c1, c2, c3 = max(w // 2, 4), w, 3 * w
        self.stem = _conv_bn_relu(3, c1, 3, stride=2)  # /2
        self.stage1 = nn.Sequential(
            _DepthwiseSeparable(c1, c2, stride=2),  # /4
            _DepthwiseSeparable(c2, c2),
        )
        self.stage2 = nn.Sequential(
            _DepthwiseSeparable(c2, c3, stride=2),  # /8
            _DepthwiseSeparable(c3, c3, dilation=2),
            _DepthwiseSeparable(c3, c3, dilation=4),
            _DepthwiseSeparable(c3, c3, dilation=2),
            _DepthwiseSeparable(c3, c3),
        )
        self.fuse = nn.Sequential(
            _conv_bn_relu(c3 + c2, 2 * w, 1),
            _DepthwiseSeparable(2 * w, 2 * w),
        )
        self.out_channels = 2 * w
        self.stride = 4

    def forward(self, x):
        x = self.stem(x)
        s4 = self.stage1(x)
        s8 = self.stage2(s4)
        up = F.interpolate(s8, size=s4.shape[-2:], mode="bilinear", align_corners=False)
        return self.fuse(torch.cat([up, s4], dim=1))


class _BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride=1, dilation=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, dilation, dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, dilation, dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)), inplace=True)
        y = self.bn2(self.conv2(y))
        return F.relu(y + (x if self.down is None else self.down(x)), inplace=True)


class DilatedResNet(nn.Module):
    """ResNet with basic blocks and output stride 8 (dilations 2, 4 in stages 3, 4).

    The DenseReg paper uses a dilated ResNet so the dense heads see stride-8 features.
    ``width=64, layers=(2, 2, 2, 2)`` is ResNet-18's size.
    """

    def __init__(self, width=64, layers=(2, 2, 2, 2)):
        super().__init__()
        w = width
        self.stem = nn.Sequential(
            _conv_bn_relu(3, w, 7, stride=2), nn.MaxPool2d(3, 2, 1)
        )  # /4
        chans = [w, 2 * w, 4 * w, 8 * w]
        strides = [1, 2, 1, 1]
        dilations = [1, 1, 2, 4]
        stages = []
        cin = w
        for c, s, dil, n in zip(chans, strides, dilations, layers):
            blocks = [_BasicBlock(cin, c, s, dil)]
            blocks += [_BasicBlock(c, c, 1, dil) for _ in range(int(n) - 1)]
            stages.append(nn.Sequential(*blocks))
            cin = c
        self.stages = nn.Sequential(*stages)
        self.out_channels = cin
        self.stride = 8

    def forward(self, x):
        return self.stages(self.stem(x))


# --------------------------------------------------------------------------- network
class DenseRegNet(nn.Module):
    """The DenseReg FCN. ``forward(x)`` returns a dict of full-resolution tensors.

    Outputs (B batch, S input side, K bins):

    - ``"cls_u"``, ``"cls_v"``: ``(B, K+1, S, S)`` logits (class 0 = background).
    - ``"res_u"``, ``"res_v"``: ``(B, K, S, S)`` residuals in UV units (absent for
      ``head="quantised_only"``).
    - ``"depth"``: ``(B, 1, S, S)`` in [0, 1] (when ``depth_head``).

    Input: ``(B, 3, S, S)`` float in [0, 1] (normalised internally). ``forward(x,
    size)`` upsamples the heads to ``size`` ``(h, w)`` instead of the input's size (a
    coarser field for a faster read-out; the stride-4 heads carry no finer detail).
    """

    def __init__(self, config):
        super().__init__()
        self.config = config
        if config.backbone == "mobile":
            self.backbone = MobileBackbone(config.width)
        else:
            self.backbone = DilatedResNet(config.width, config.resnet_layers)
        c = self.backbone.out_channels
        k = config.n_bins
        self.cls_head = nn.Conv2d(c, 2 * (k + 1), 1)
        self.res_head = nn.Conv2d(c, 2 * k, 1) if config.has_residual else None
        self.depth_head = nn.Conv2d(c, 1, 1) if config.depth_head else None
        self.register_buffer(
            "pixel_mean",
            torch.tensor([0.5, 0.45, 0.4]).view(1, 3, 1, 1),
            persistent=False,
        )
        self.register_buffer(
            "pixel_std",
            torch.tensor([0.25, 0.25, 0.25]).view(1, 3, 1, 1),
            persistent=False,
        )

    def forward(self, x, size=None):
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(
                f"DenseRegNet: expected (B, 3, H, W) input, got {tuple(x.shape)}"
            )
        size = x.shape[-2:] if size is None else (int(size[0]), int(size[1]))
        f = self.backbone((x - self.pixel_mean) / self.pixel_std)
        k = self.config.n_bins
        heads = [self.cls_head(f)]
        if self.res_head is not None:
            heads.append(self.res_head(f))
        if self.depth_head is not None:
            heads.append(self.depth_head(f))
        # one upsampling call for all heads
        out = F.interpolate(
            torch.cat(heads, 1), size=size, mode="bilinear", align_corners=False
        )
        result = {"cls_u": out[:, : k + 1], "cls_v": out[:, k + 1 : 2 * k + 2]}
        i = 2 * k + 2
        if self.res_head is not None:
            d = self.config.bin_width
            result["res_u"] = out[:, i : i + k] * d
            result["res_v"] = out[:, i + k : i + 2 * k] * d
            i += 2 * k
        if self.depth_head is not None:
            result["depth"] = torch.sigmoid(out[:, i : i + 1])
        return result

    def n_parameters(self):
        return sum(p.numel() for p in self.parameters())

    def __str__(self):
        c = self.config
        return (
            f"DenseRegNet({c.backbone} backbone, head={c.head}, K={c.n_bins}, "
            f"input {c.input_size}px, depth={'yes' if c.depth_head else 'no'}, "
            f"{self.n_parameters() / 1e6:.2f} M parameters)"
        )


def build_densereg(config=None, **overrides):
    """Build a :class:`DenseRegNet` from a config (dataclass or dict) plus overrides."""
    if config is None:
        config = DenseRegConfig(**overrides)
    elif isinstance(config, dict):
        config = DenseRegConfig.from_dict({**config, **overrides})
    elif overrides:
        config = DenseRegConfig.from_dict({**config.to_dict(), **overrides})
    return DenseRegNet(config)


# --------------------------------------------------------------------------- coding
def bin_targets(coord, mask, n_bins):
    """Classification and residual targets of one axis.

    Parameters
    ----------
    coord : ``(B, H, W)`` tensor in [0, 1]
    mask : ``(B, H, W)`` tensor, 1 on face
    n_bins : `int`

    Returns
    -------
    cls : ``(B, H, W)`` int64: 0 background, ``q + 1`` for bin ``q``.
    q : ``(B, H, W)`` int64 bin index (clamped to [0, K-1], meaningless on background).
    residual : ``(B, H, W)`` float, ``coord - (q + 1/2) / K`` (centred convention).
    """
    d = 1.0 / n_bins
    q = torch.clamp(torch.floor(coord / d), 0, n_bins - 1).long()
    residual = coord - (q.to(coord.dtype) + 0.5) * d
    cls = torch.where(mask > 0.5, q + 1, torch.zeros_like(q))
    return cls, q, residual


def decode_uv(outputs, residual=True):
    """Decode network outputs into ``u``, ``v``, face probability and depth.

    Parameters
    ----------
    outputs : `dict`
        As returned by :class:`DenseRegNet` (``cls_u``, ``cls_v`` and optionally
        ``res_u``, ``res_v``, ``depth``).
    residual : `bool`
        Add the residual of the chosen bin (``False``: bin centre only). Ignored when the
        outputs have no residuals.

    Returns
    -------
    `dict` with ``"u"``, ``"v"`` ``(B, H, W)`` in [0, 1], ``"face_prob"`` ``(B, H, W)``
    (1 - mean of the two axes' background probabilities), ``"bin_u"``, ``"bin_v"``
    (``(B, H, W)`` int64, chosen bin), ``"bin_conf"`` (``(B, H, W)``, product of the
    chosen bins' probabilities given face) and ``"depth"`` ``(B, H, W)`` when present.
    """
    result = {}
    k = outputs["cls_u"].shape[1] - 1
    d = 1.0 / k
    bg = []
    conf = 1.0
    for axis in ("u", "v"):
        logits = outputs["cls_" + axis]
        best, q = logits[:, 1:].max(dim=1)
        # sum over the bins of exp(logit - best logit) >= 1: the chosen bin's
        # probability given face is its inverse, and the background probability is
        # sigmoid(l_0 - logsumexp(bins)) (no 1 - p cancellation on the background)
        bins_sum = torch.exp(logits[:, 1:] - best[:, None]).sum(dim=1)
        bg.append(torch.sigmoid(logits[:, 0] - best - torch.log(bins_sum)))
        conf = conf / bins_sum
        coord = (q.to(logits.dtype) + 0.5) * d
        res = outputs.get("res_" + axis)
        if residual and res is not None:
            coord = coord + torch.gather(res, 1, q[:, None])[:, 0]
        result[axis] = coord.clamp(0.0, 1.0)
        result["bin_" + axis] = q
    result["face_prob"] = 1.0 - 0.5 * (bg[0] + bg[1])
    result["bin_conf"] = conf
    if "depth" in outputs:
        result["depth"] = outputs["depth"][:, 0]
    return result


class DecodedDenseReg(nn.Module):
    """A :class:`DenseRegNet` followed by :func:`decode_uv`, for inference graphs.

    ``forward(x)`` returns the decoded maps as a `tuple` in the order of :attr:`keys`
    (what :class:`menpo_densereg.fitting.inference.FrozenGraphs` traces), at ``size``
    ``(h, w)`` (default: the input's size).
    """

    def __init__(self, net, residual=True, size=None):
        super().__init__()
        self.net = net
        self.residual = bool(residual)
        self.size = size  # DenseRegNet.forward checks it
        self.keys = self.output_keys(net.config)

    @staticmethod
    def output_keys(config):
        """The names of the decoded maps, in output order, for a network config."""
        keys = ("u", "v", "bin_u", "bin_v", "face_prob", "bin_conf")
        return keys + ("depth",) if config.depth_head else keys

    def forward(self, x):
        dec = decode_uv(self.net(x, self.size), residual=self.residual)
        return tuple(dec[k] for k in self.keys)
