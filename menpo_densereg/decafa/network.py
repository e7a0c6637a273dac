"""DeCaFA: a deep convolutional cascade of full-resolution U-nets (Dapogny et al., ICCV 2019).

The network is a cascade of ``S`` stages. Each stage is a fully convolutional U-net that
keeps the input's full spatial resolution at its output (paper: 12 3x3 convolutions with
64, 64, 128, 128, 256, 256 filters down and back up, batch norm + ReLU, bilinear
upsampling followed by a 3x3 convolution, no transposed convolutions, 128x128 grey
input). A ``width`` multiplier scales every filter count, so a CPU-sized model exists
beside the paper-sized one (``width=1``), and ``input_size`` may be any multiple of 32.

After each stage, *transfer layers* turn the stage's feature maps into landmark-wise
attention maps, one set per markup (eqs. 1-3 of the paper):

- a 1x1 convolution with ``L_k`` filters gives one logit map per landmark,
- a spatial softmax turns each into an attention map ``M_k^l`` (sums to 1 over pixels),
- a soft-argmax (the attention-weighted mean of the pixel coordinates) gives the
  landmark's ``(y, x)`` position in pixels of the input (pixel centres at integers).

Markups are processed in decreasing number of landmarks (e.g. 98 -> 68 -> 29 -> 5). When
``chained`` (the paper's design), the transfer layer of each coarser markup takes the
attention maps of the previous, finer markup as input (rescaled so that every map peaks
at 1); otherwise every transfer layer reads the stage features (*independent*).

Between stages a fusion ``F1``-``F5`` builds the next stage's input from the input
image ``I``, the attention summary ``M`` (the sum of the attention maps of the chosen
markup, rescaled to peak at 1 per sample) and the previous stage's feature maps ``H``
(our reading of eqs. 4-8):

==== ================================== ==========================================
F1   ``I * M``                          attention-weighted image only
F2   ``[I, M]``                         image and attention side by side
F3   ``[I, I * M]``                     image and attention-weighted image
F4   ``[I * M, H]``                     attention-weighted image and features
F5   ``[I, I * M, H]`` (default)        image, weighted image and features
==== ================================== ==========================================

(``[.]`` is channel concatenation, ``*`` the pixel-wise product broadcast over the image
channels.)
"""

import json
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from menpo_densereg.data.markups import can_convert, conversion_matrix, get_markup

__all__ = [
    "DecafaConfig",
    "DecafaNet",
    "DecafaLastStage",
    "attention_peak_mass",
    "build_decafa",
    "UNetStage",
    "TransferLayers",
    "spatial_softmax",
    "soft_argmax",
    "fuse",
    "FUSIONS",
]

FUSIONS = ("F1", "F2", "F3", "F4", "F5")
#: Initial weight between corresponding landmarks of chained transfer layers.
TRANSFER_GAIN = 20.0
#: Approximate correspondences used only to initialise chained transfer layers where
#: :func:`markups.conversion_matrix` has none (29 -> 5: pupils, nose tip, mouth corners).
INIT_CORRESPONDENCES = {("lfpw29", "five"): ((16,), (17,), (20,), (22,), (23,))}


def _init_matrix(src, dst):
    """0/1 ``(n_dst, n_src)`` matrix of corresponding landmarks, or `None`."""
    if can_convert(src, dst):
        return (conversion_matrix(src, dst) > 0).astype(float)
    rows = INIT_CORRESPONDENCES.get((src, dst))
    if rows is None:
        return None
    M = torch.zeros(len(rows), get_markup(src).n_points).numpy()
    for i, r in enumerate(rows):
        M[i, list(r)] = 1.0
    return M


_PAPER_WIDTHS = (64, 64, 128, 128, 256, 256)


@dataclass
class DecafaConfig:
    """Everything needed to rebuild a :class:`DecafaNet` (JSON-serialisable).

    Parameters
    ----------
    input_size : `int`
        Side of the square input crop (a multiple of 32; paper: 128).
    in_channels : `int`
        1 (grey, as the paper) or 3 (RGB).
    width : `float`
        Multiplier of the paper's filter counts (64, 64, 128, 128, 256, 256).
    n_stages : `int`
        Number of cascade stages, 1-4.
    markups : `list` of `str`
        Markups with a transfer layer; sorted into decreasing landmark count.
    chained : `bool`
        Chain the transfer layers (each coarser markup reads the finer one's attention
        maps) or make them independent (each reads the stage features).
    fusion : `str`
        ``"F1"``...``"F5"`` (see the module docstring).
    fusion_markup : `str` or `None`
        Markup whose attention maps form ``M``; `None` = the finest markup.
    transfer_init : `str`
        ``"random"`` (default): torch's default initialisation (the paper).
        ``"correspondence"`` (our addition): a chained transfer layer whose
        markup pair has a known correspondence (:func:`markups.conversion_matrix`) starts
        with weight ``TRANSFER_GAIN`` from each corresponding finer landmark, so that a
        coarse landmark's attention peaks where its finer counterparts peak and coarse
        annotations supervise the finer maps from the first step (in short ablations it
        learned slower than ``"random"``; see fitters/decafa-face/CARD.md).
    logit_gain : `float`
        Fixed factor on the logits of the transfer layers that read the stage features
        (sharper initial attention maps, so soft-argmax coordinates leave the crop centre
        sooner; 1 = the paper).
    margin : `float`
        Crop margin used with :func:`menpo_densereg.data.crop.crop_face`.
    """

    input_size: int = 128
    in_channels: int = 1
    width: float = 1.0
    n_stages: int = 4
    markups: list = field(
        default_factory=lambda: ["wflw98", "ibug68", "lfpw29", "five"]
    )
    chained: bool = True
    fusion: str = "F5"
    fusion_markup: str = None
    transfer_init: str = "random"
    logit_gain: float = 1.0
    margin: float = 0.25

    def __post_init__(self):
        if int(self.input_size) != self.input_size or self.input_size < 32:
            raise ValueError(
                f"input_size: expected an int >= 32, got {self.input_size}"
            )
        if self.input_size % 32:
            raise ValueError(
                f"input_size: {self.input_size} is not a multiple of 32 "
                "(the U-net halves the resolution five times)"
            )
        if self.in_channels not in (1, 3):
            raise ValueError(f"in_channels: expected 1 or 3, got {self.in_channels}")
        if not (0 < float(self.width) <= 4):
            raise ValueError(
                f"width: expected a multiplier in (0, 4], got {self.width}"
            )
        if self.n_stages not in (1, 2, 3, 4):
            raise ValueError(f"n_stages: expected 1-4, got {self.n_stages}")
        if self.fusion not in FUSIONS:
            raise ValueError(f"fusion: expected one of {FUSIONS}, got {self.fusion!r}")
        if not float(self.logit_gain) > 0:
            raise ValueError(f"logit_gain: expected > 0, got {self.logit_gain}")
        self.logit_gain = float(self.logit_gain)
        if self.transfer_init not in ("correspondence", "random"):
            raise ValueError(
                "transfer_init: expected 'correspondence' or 'random', got "
                f"{self.transfer_init!r}"
            )
        if not self.markups:
            raise ValueError("markups: at least one markup is needed")
        names = [get_markup(m).name for m in self.markups]
        if len(set(names)) != len(names):
            raise ValueError(f"markups: duplicated markup in {self.markups}")
        # decreasing landmark count; stable for equal counts
        self.markups = sorted(names, key=lambda n: -get_markup(n).n_points)
        if self.fusion_markup is None:
            self.fusion_markup = self.markups[0]
        else:
            self.fusion_markup = get_markup(self.fusion_markup).name
            if self.fusion_markup not in self.markups:
                raise ValueError(
                    f"fusion_markup: {self.fusion_markup} is not one of {self.markups}"
                )
        self.input_size = int(self.input_size)
        self.width = float(self.width)

    @property
    def channels(self):
        """Filter counts of the six U-net levels at this width."""
        return tuple(max(4, int(round(c * self.width))) for c in _PAPER_WIDTHS)

    def to_dict(self):
        """Plain JSON-serialisable dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        """Inverse of :meth:`to_dict`; unknown keys raise `ValueError`."""
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"DecafaConfig: unknown keys {sorted(unknown)}")
        return cls(**d)

    def __str__(self):
        return (
            f"DeCaFA {self.n_stages} stage(s), {self.input_size}px "
            f"{'grey' if self.in_channels == 1 else 'RGB'}, width x{self.width:g} "
            f"{self.channels}, markups {'->'.join(self.markups)} "
            f"({'chained' if self.chained else 'independent'}), fusion {self.fusion} "
            f"on {self.fusion_markup}"
        )


def _conv_bn_relu(c_in, c_out):
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class UNetStage(nn.Module):
    """One cascade stage: a 12-convolution U-net with a full-resolution output.

    Six 3x3 conv+BN+ReLU layers go down (one per resolution level, 2x2 max-pooling
    between levels), six come back up: five "bilinear upsampling + 3x3 conv" layers that
    also read the encoder's skip connection of that level, and a last 3x3 conv at full
    resolution. The output has ``channels[0]`` feature maps at the input's resolution.
    """

    def __init__(self, in_channels, channels):
        super().__init__()
        c = list(channels)
        self.down = nn.ModuleList()
        prev = in_channels
        for ci in c:
            self.down.append(_conv_bn_relu(prev, ci))
            prev = ci
        self.up = nn.ModuleList()
        for level in range(len(c) - 2, -1, -1):
            self.up.append(_conv_bn_relu(prev + c[level], c[level]))
            prev = c[level]
        self.last = _conv_bn_relu(prev, c[0])
        self.out_channels = c[0]

    def forward(self, x):
        skips = []
        for i, layer in enumerate(self.down):
            if i:
                x = F.max_pool2d(x, 2)
            x = layer(x)
            if i == 0 and not self.training:
                # channels-last from the first features on (the input may have one
                # channel, which sets no layout): pooling, upsampling and most
                # convolutions run faster in it on a CPU (the graph 17.0 -> 15.0 ms,
                # same values to 2e-5)
                x = x.contiguous(memory_format=torch.channels_last)
            skips.append(x)
        skips.pop()
        for layer in self.up:
            skip = skips.pop()
            x = F.interpolate(
                x, size=skip.shape[-2:], mode="bilinear", align_corners=False
            )
            x = layer(torch.cat([x, skip], dim=1))
        return self.last(x)


def spatial_softmax(logits):
    """Softmax over the pixels of each map: ``(B, L, H, W)`` -> maps summing to 1."""
    b, l, h, w = logits.shape
    return torch.softmax(logits.reshape(b, l, h * w).float(), dim=-1).reshape(
        b, l, h, w
    )


def soft_argmax(maps):
    """Expected ``(y, x)`` pixel position of each attention map (eq. 3).

    Parameters
    ----------
    maps : ``(B, L, H, W)`` tensor of non-negative maps that sum to 1 over pixels.

    Returns
    -------
    coords : ``(B, L, 2)`` tensor, ``(y, x)`` with pixel centres at integer coordinates.
    """
    h, w = maps.shape[-2:]
    ys = torch.arange(h, dtype=maps.dtype, device=maps.device)
    xs = torch.arange(w, dtype=maps.dtype, device=maps.device)
    y = (maps.sum(dim=-1) * ys).sum(dim=-1)
    x = (maps.sum(dim=-2) * xs).sum(dim=-1)
    return torch.stack([y, x], dim=-1)


def _peak_normalise(maps, eps=1e-12):
    peak = maps.flatten(2).amax(dim=-1)[..., None, None]
    return maps / (peak + eps)


class TransferLayers(nn.Module):
    """Per-markup 1x1 transfer convolutions, chained or independent.

    Parameters
    ----------
    feature_channels : `int`
        Channels of the stage's output features.
    markups : `list` of `str`
        In decreasing landmark count.
    chained : `bool`
        Markup ``k > 0`` reads the attention maps of markup ``k - 1`` (peak-normalised)
        instead of the features.
    init : ``"correspondence"`` or ``"random"``
        See :class:`DecafaConfig` ``transfer_init``.
    """

    def __init__(
        self, feature_channels, markups, chained=True, init="random", gain=1.0
    ):
        super().__init__()
        self.markups = list(markups)
        self.chained = chained
        self.gain = float(gain)
        self.convs = nn.ModuleDict()
        prev, prev_name = None, None
        for m in self.markups:
            n = get_markup(m).n_points
            c_in = prev if (chained and prev is not None) else feature_channels
            conv = nn.Conv2d(c_in, n, 1)
            M = (
                _init_matrix(prev_name, m)
                if (init == "correspondence" and chained and prev_name is not None)
                else None
            )
            if M is not None:
                with torch.no_grad():
                    conv.weight.copy_(
                        torch.as_tensor(TRANSFER_GAIN * M, dtype=torch.float32)[
                            ..., None, None
                        ]
                    )
                    conv.bias.zero_()
            self.convs[m] = conv
            prev, prev_name = n, m

    def input_channels(self, markup):
        """Input channels of ``markup``'s transfer layer (shows the wiring)."""
        return self.convs[get_markup(markup).name].in_channels

    def needed(self, wanted):
        """The markups that must be computed to obtain ``wanted``."""
        wanted = {get_markup(m).name for m in wanted}
        if not self.chained:
            return [m for m in self.markups if m in wanted]
        last = max(self.markups.index(m) for m in wanted)
        return self.markups[: last + 1]

    def forward(self, features, wanted=None):
        """``{markup: (coords (B, L, 2), attention (B, L, H, W))}``."""
        todo = self.markups if wanted is None else self.needed(wanted)
        out = {}
        prev = None
        for m in todo:
            if not self.chained or prev is None:
                logits = self.convs[m](features)
                if self.gain != 1.0:
                    logits = logits * self.gain
            else:
                logits = self.convs[m](_peak_normalise(prev))
            att = spatial_softmax(logits)
            out[m] = (soft_argmax(att), att)
            prev = att
        return out


def fuse(kind, image, attention_sum, features):
    """Next stage input from image ``I``, attention summary ``M`` and features ``H``.

    Parameters
    ----------
    kind : ``"F1"`` ... ``"F5"``
    image : ``(B, C, H, W)``
    attention_sum : ``(B, 1, H, W)`` in [0, 1]
    features : ``(B, K, H, W)``
    """
    weighted = image * attention_sum
    if kind == "F1":
        return weighted
    if kind == "F2":
        return torch.cat([image, attention_sum], dim=1)
    if kind == "F3":
        return torch.cat([image, weighted], dim=1)
    if kind == "F4":
        return torch.cat([weighted, features], dim=1)
    if kind == "F5":
        return torch.cat([image, weighted, features], dim=1)
    raise ValueError(f"fusion: expected one of {FUSIONS}, got {kind!r}")


def fused_channels(kind, image_channels, feature_channels):
    """Channels of :func:`fuse`'s output."""
    return {
        "F1": image_channels,
        "F2": image_channels + 1,
        "F3": 2 * image_channels,
        "F4": image_channels + feature_channels,
        "F5": 2 * image_channels + feature_channels,
    }[kind]


class DecafaNet(nn.Module):
    """The DeCaFA cascade (see the module docstring).

    ``forward(x)`` returns a list with one dict per stage, ``markup -> (coords, maps)``:
    coords ``(B, L, 2)`` ``(y, x)`` in pixels of the input, maps ``(B, L, H, W)`` the
    attention maps.
    """

    def __init__(self, config):
        super().__init__()
        if isinstance(config, dict):
            config = DecafaConfig.from_dict(config)
        self.config = config
        ch = config.channels
        self.stages = nn.ModuleList()
        self.transfers = nn.ModuleList()
        for s in range(config.n_stages):
            c_in = (
                config.in_channels
                if s == 0
                else fused_channels(config.fusion, config.in_channels, ch[0])
            )
            self.stages.append(UNetStage(c_in, ch))
            self.transfers.append(
                TransferLayers(
                    ch[0],
                    config.markups,
                    config.chained,
                    config.transfer_init,
                    config.logit_gain,
                )
            )

    @property
    def markups(self):
        return list(self.config.markups)

    def forward(self, x, markups=None, all_stages=True):
        """Run the cascade.

        Parameters
        ----------
        x : ``(B, in_channels, S, S)`` tensor in [0, 1]
        markups : iterable of `str`, optional
            Markups wanted at the outputs (default: all). Fewer markups compute less.
        all_stages : `bool`
            Return every stage's outputs (training, display) or only the last stage's
            (a list of one dict; inference).

        Returns
        -------
        outputs : `list` of `dict` ``markup -> (coords, attention maps)``
        """
        cfg = self.config
        if x.ndim != 4 or x.shape[1] != cfg.in_channels:
            raise ValueError(
                f"input: expected (B, {cfg.in_channels}, H, W), got {tuple(x.shape)}"
            )
        if x.shape[-2] % 32 or x.shape[-1] % 32:
            raise ValueError(
                f"input: spatial size {tuple(x.shape[-2:])} not a multiple of 32"
            )
        wanted = (
            list(cfg.markups)
            if markups is None
            else [get_markup(m).name for m in markups]
        )
        for m in wanted:
            if m not in cfg.markups:
                raise ValueError(
                    f"markup {m!r} not trained; this model has {cfg.markups}"
                )
        outputs = []
        inp = x
        last = cfg.n_stages - 1
        for s, (stage, transfer) in enumerate(zip(self.stages, self.transfers)):
            feats = stage(inp)
            need = set(wanted if (all_stages or s == last) else [])
            if s < last:
                need.add(cfg.fusion_markup)
            out = transfer(feats, need)
            if all_stages or s == last:
                outputs.append({m: out[m] for m in wanted})
            if s < last:
                att = out[cfg.fusion_markup][1].sum(dim=1, keepdim=True)
                att = _peak_normalise(att).to(x.dtype)
                inp = fuse(cfg.fusion, x, att, feats)
        return outputs

    def __str__(self):
        n = sum(p.numel() for p in self.parameters())
        return f"DecafaNet({self.config}; {n / 1e6:.2f} M parameters)"


def build_decafa(config=None, **overrides):
    """Build a :class:`DecafaNet` from a :class:`DecafaConfig`, a dict, or keywords."""
    if config is None:
        config = DecafaConfig(**overrides)
    elif isinstance(config, dict):
        config = DecafaConfig.from_dict({**config, **overrides})
    elif overrides:
        config = DecafaConfig.from_dict({**config.to_dict(), **overrides})
    return DecafaNet(config)


def config_to_json(config):
    """JSON text of a config (what the weights file header stores)."""
    return json.dumps(config.to_dict(), sort_keys=True)


def attention_peak_mass(maps):
    """Peak 3x3 mass of each attention map: ``(..., H, W)`` -> ``(...)`` in [0, 1].

    A landmark's confidence: how much of its spatial softmax falls on the 3 x 3 pixels
    around its best place. The box sums (zero padding) are two separable sums of
    shifted slices, the same values as ``avg_pool2d(maps, 3, 1, 1) * 9`` and about 8x
    faster on a CPU.
    """
    p = F.pad(maps, (1, 1, 1, 1))
    rows = p[..., :, :-2] + p[..., :, 1:-1] + p[..., :, 2:]
    box = rows[..., :-2, :] + rows[..., 1:-1, :] + rows[..., 2:, :]
    return box.flatten(-2).amax(dim=-1).clamp(0, 1)


class DecafaLastStage(nn.Module):
    """A :class:`DecafaNet` returning only its last stage's ``markups``, for inference
    graphs: ``forward(x)`` returns the `tuple` ``(coords_1, peak_mass_1, coords_2,
    ...)`` in the order of ``markups`` (what
    :class:`menpo_densereg.fitting.inference.FrozenGraphs` traces), where
    ``peak_mass`` is :func:`attention_peak_mass` of the attention maps, computed inside
    the graph: the maps never leave it."""

    def __init__(self, net, markups):
        super().__init__()
        self.net = net
        self.markups = tuple(markups)

    def forward(self, x):
        out = self.net(x, markups=self.markups, all_stages=False)[-1]
        return tuple(
            t for m in self.markups for t in (out[m][0], attention_peak_mass(out[m][1]))
        )
