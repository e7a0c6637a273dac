"""Torch-free DenseReg: the network configuration and a numpy forward pass.

Fitting one photo should not pay for importing torch (about 2 s of CPU on a 2-core
machine) to run a 62 k-parameter network. This module holds what inference needs
without torch:

- :class:`DenseRegConfig`, the network configuration (also exported by
  :mod:`menpo_densereg.densereg.network`, which builds the torch network from it);
- :class:`NumpyDenseRegNet`, the same network evaluated with numpy: batch norm is
  folded into the preceding convolution at load time, 3x3 depthwise convolutions are
  sums of shifted slices, dense convolutions are ``im2col`` + one matrix product,
  bilinear upsampling (``align_corners=False``, as ``torch.nn.functional.interpolate``)
  is two small interpolation matrices;
- :func:`decode_uv_numpy`, the read-out of :func:`menpo_densereg.densereg.network.decode_uv`.

Both backbones (``"mobile"`` and ``"resnet"``) are supported. The outputs match the
torch network to float32 rounding (the tests check 1e-4 on the logits and UV maps).
Weights come from the same safetensors files (:mod:`menpo_densereg.fitting.weights`,
read with ``safetensors.numpy``), so no code runs at load.
"""

import contextlib
import functools
import json
from dataclasses import asdict, dataclass, fields

import numpy as np

__all__ = [
    "DenseRegConfig",
    "NumpyDenseRegNet",
    "decode_uv_numpy",
    "blas_threads",
    "HEADS",
    "BACKBONES",
]

HEADS = ("quantised", "quantised_only", "plain")
BACKBONES = ("mobile", "resnet")

_BN_EPS = 1e-5  # torch.nn.BatchNorm2d's default
_PIXEL_MEAN = np.array([0.5, 0.45, 0.4], dtype=np.float32).reshape(1, 3, 1, 1)
_PIXEL_STD = np.array([0.25, 0.25, 0.25], dtype=np.float32).reshape(1, 3, 1, 1)


@dataclass
class DenseRegConfig:
    """Configuration of a DenseReg network (JSON-serialisable).

    Parameters
    ----------
    n_bins : `int`
        ``K``, bins per axis (``d = 1 / K``). Must be 1 for ``head="plain"``.
    head : `str`
        ``"quantised"`` (classification + residual, the paper's method),
        ``"quantised_only"`` (bin centre) or ``"plain"`` (regression, K = 1).
    backbone : `str`
        ``"mobile"`` (CPU-fast default) or ``"resnet"`` (dilated ResNet, stride 8).
    input_size : `int`
        Side of the square face crop the network sees.
    width : `int`
        Base channel width (mobile: channels of the first stage; resnet: of the first
        residual stage).
    depth_head : `bool`
        Predict template depth.
    resnet_layers : `list` of `int`
        Blocks per stage of the ResNet backbone.
    margin : `float`
        Crop margin used with :func:`menpo_densereg.data.crop.crop_face`.
    """

    n_bins: int = 10
    head: str = "quantised"
    backbone: str = "mobile"
    input_size: int = 112
    width: int = 32
    depth_head: bool = True
    resnet_layers: tuple = (2, 2, 2, 2)
    margin: float = 0.25

    def __post_init__(self):
        self.resnet_layers = tuple(int(n) for n in self.resnet_layers)
        if self.head not in HEADS:
            raise ValueError(f"head: {self.head!r} is not one of {HEADS}")
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone: {self.backbone!r} is not one of {BACKBONES}")
        if int(self.n_bins) < 1:
            raise ValueError(f"n_bins: must be >= 1, got {self.n_bins}")
        if self.head == "plain" and self.n_bins != 1:
            raise ValueError(f"n_bins: head='plain' needs n_bins=1, got {self.n_bins}")
        if self.input_size < 32 or self.input_size % 8:
            raise ValueError(
                f"input_size: must be a multiple of 8 and >= 32, got {self.input_size}"
            )
        if self.width < 4:
            raise ValueError(f"width: must be >= 4, got {self.width}")

    @property
    def bin_width(self):
        """``d = 1 / K``."""
        return 1.0 / self.n_bins

    @property
    def has_residual(self):
        return self.head != "quantised_only"

    def to_dict(self):
        d = asdict(self)
        d["resnet_layers"] = list(self.resnet_layers)
        return d

    @classmethod
    def from_dict(cls, d):
        """Build from a dict (unknown keys raise a clear `ValueError`)."""
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"DenseRegConfig: unknown keys {sorted(unknown)}")
        return cls(**d)

    def __str__(self):
        return "DenseRegConfig(" + json.dumps(self.to_dict()) + ")"


# --------------------------------------------------------------------------- threads
@functools.lru_cache(maxsize=1)
def _blas_controller():
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - a declared dependency
        return None
    return ThreadpoolController()


@contextlib.contextmanager
def blas_threads(n):
    """Use ``n`` BLAS threads inside the block, restoring the caller's setting.

    The network's matrix products are small: with 2 OpenBLAS threads on a busy 2-core
    machine they run some 20x slower (the threads spin-wait on each other) than with
    one. `None` or 0 leaves the setting alone.
    """
    controller = _blas_controller() if n else None
    if controller is None:
        yield
        return
    with controller.limit(limits=int(n), user_api="blas"):
        yield


# --------------------------------------------------------------------------- layers
def _taps(x, k, stride=1, dilation=1, pad=0, fill=0.0):
    """The ``k * k`` shifted, strided views of ``x`` padded by ``pad`` (with ``fill``),
    in (row, column) order, and the output size ``(ho, wo)``."""
    b, c, h, w = x.shape
    p, s, d = pad, stride, dilation
    ho = (h + 2 * p - d * (k - 1) - 1) // s + 1
    wo = (w + 2 * p - d * (k - 1) - 1) // s + 1
    if p:
        xp = np.full((b, c, h + 2 * p, w + 2 * p), fill, dtype=x.dtype)
        xp[:, :, p : p + h, p : p + w] = x
    else:
        xp = x
    views = [
        xp[
            :,
            :,
            i * d : i * d + s * (ho - 1) + 1 : s,
            j * d : j * d + s * (wo - 1) + 1 : s,
        ]
        for i in range(k)
        for j in range(k)
    ]
    return views, (ho, wo)


class _Conv:
    """A convolution with batch norm folded in (``y = W * x + b``), optional ReLU.

    ``weight`` is ``(O, C/groups, k, k)``; depthwise when ``groups == O == C``.
    """

    def __init__(self, weight, bias, stride=1, dilation=1, groups=1, relu=False):
        self.k = weight.shape[-1]
        self.stride, self.dilation, self.relu = stride, dilation, relu
        self.pad = dilation * (self.k - 1) // 2
        self.depthwise = groups > 1
        if self.depthwise:
            # (k*k, C, 1, 1): one per-channel weight per tap
            w = weight[:, 0].reshape(weight.shape[0], -1).T
            self.weight = np.ascontiguousarray(w[:, :, None, None], dtype=np.float32)
        else:
            self.weight = np.ascontiguousarray(
                weight.reshape(weight.shape[0], -1), dtype=np.float32
            )
        self.bias = np.asarray(bias, dtype=np.float32).reshape(1, -1, 1)
        self.n_out = weight.shape[0]

    def __call__(self, x):
        b = x.shape[0]
        if self.k == 1 and self.stride == 1:
            h, w = x.shape[-2:]
            y = np.matmul(self.weight, x.reshape(b, x.shape[1], h * w))
        else:
            taps, (h, w) = _taps(x, self.k, self.stride, self.dilation, self.pad)
            if self.depthwise:
                y = taps[0] * self.weight[0]
                for t, wt in zip(taps[1:], self.weight[1:]):
                    y += t * wt
                y = y.reshape(b, self.n_out, h * w)
            else:  # im2col, rows ordered (channel, tap) like the weight
                cols = np.stack(taps, axis=2).reshape(b, -1, h * w)
                y = np.matmul(self.weight, cols)
        y += self.bias
        if self.relu:
            np.maximum(y, 0.0, out=y)
        return y.reshape(b, self.n_out, h, w)


def _max_pool_3x3_s2(x):
    """``MaxPool2d(3, 2, 1)``: padding never wins the max."""
    taps, _ = _taps(x, 3, stride=2, pad=1, fill=-np.inf)
    y = taps[0].copy()
    for t in taps[1:]:
        np.maximum(y, t, out=y)
    return y


def _interp_matrix(n_in, n_out):
    """``(n_out, n_in)`` bilinear weights of ``interpolate(align_corners=False)``."""
    scale = n_in / n_out
    src = np.maximum((np.arange(n_out) + 0.5) * scale - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(int), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    lam = src - i0
    m = np.zeros((n_out, n_in), dtype=np.float64)
    np.add.at(m, (np.arange(n_out), i0), 1.0 - lam)
    np.add.at(m, (np.arange(n_out), i1), lam)
    return m.astype(np.float32)


class _Resize:
    """Bilinear resize of ``(B, C, h, w)`` maps to a fixed size (cached matrices)."""

    def __init__(self):
        self._cache = {}

    def __call__(self, x, size):
        h, w = x.shape[-2:]
        key = (h, w) + tuple(size)
        if key not in self._cache:
            self._cache[key] = (
                _interp_matrix(h, size[0]),
                np.ascontiguousarray(_interp_matrix(w, size[1]).T),
            )
        rh, rwt = self._cache[key]
        b, c = x.shape[:2]
        # two plain matrix products: along W on (B*C*h, w), then along H on (h, ...)
        y = np.matmul(x.reshape(b * c * h, w), rwt).reshape(b * c, h, size[1])
        y = np.matmul(rh, y.transpose(1, 0, 2).reshape(h, -1))
        return y.reshape(size[0], b, c, size[1]).transpose(1, 2, 0, 3)


# --------------------------------------------------------------------------- network
class NumpyDenseRegNet:
    """The DenseReg network evaluated with numpy (inference only).

    Parameters
    ----------
    config : :class:`DenseRegConfig` or `dict`
    state : `dict`
        The torch network's ``state_dict`` as arrays (names without the ``net.``
        prefix of model files; ``num_batches_tracked`` entries are ignored).

    Raises
    ------
    ValueError
        A missing, unexpected or wrongly shaped tensor (the message names it).

    Calling it on ``(B, 3, S, S)`` (or ``(3, S, S)``) float pixels in [0, 1] returns the
    dict of :class:`~menpo_densereg.densereg.network.DenseRegNet`'s ``forward`` as
    float32 arrays: ``cls_u``, ``cls_v`` (logits), ``res_u``, ``res_v`` (UV units,
    when the head has residuals) and ``depth`` (when present), all ``(B, ., S, S)``.
    """

    def __init__(self, config, state):
        if isinstance(config, dict):
            config = DenseRegConfig.from_dict(config)
        self.config = config
        self._raw = {k: np.asarray(v) for k, v in state.items()}
        self._state = {
            k: np.asarray(v)
            for k, v in state.items()
            if not k.endswith("num_batches_tracked")
        }
        self._used = set()
        self._resize = _Resize()
        self.n_params = 0
        if config.backbone == "mobile":
            self._build_mobile()
        else:
            self._build_resnet()
        self._build_heads()
        left = sorted(set(self._state) - self._used)
        if left:
            raise ValueError(f"unexpected tensors for this configuration: {left[:5]}")
        del self._state

    # ---------------------------------------------------------------- weights
    def _take(self, name, shape):
        if name not in self._state:
            raise ValueError(f"missing tensor {name!r}")
        a = self._state[name]
        if tuple(a.shape) != tuple(shape):
            raise ValueError(
                f"tensor {name!r} has shape {tuple(a.shape)}, expected {tuple(shape)}"
            )
        self._used.add(name)
        return a.astype(np.float64)

    def _conv_bn(
        self, conv, bn, cin, cout, k, stride=1, dilation=1, groups=1, relu=True
    ):
        """A bias-free conv followed by an eval-mode batch norm, folded."""
        w = self._take(f"{conv}.weight", (cout, cin // groups, k, k))
        gamma = self._take(f"{bn}.weight", (cout,))
        beta = self._take(f"{bn}.bias", (cout,))
        mean = self._take(f"{bn}.running_mean", (cout,))
        var = self._take(f"{bn}.running_var", (cout,))
        scale = gamma / np.sqrt(var + _BN_EPS)
        self.n_params += w.size + 2 * cout
        return _Conv(
            w * scale[:, None, None, None],
            beta - mean * scale,
            stride,
            dilation,
            groups,
            relu,
        )

    def _seq(self, prefix, cin, cout, k, stride=1, dilation=1, groups=1):
        """``_conv_bn_relu`` of network.py: ``prefix.0`` conv, ``prefix.1`` bn."""
        return self._conv_bn(
            f"{prefix}.0", f"{prefix}.1", cin, cout, k, stride, dilation, groups
        )

    def _ds(self, prefix, cin, cout, stride=1, dilation=1):
        """A depthwise-separable block: ``(dw, pw, residual)``."""
        dw = self._seq(f"{prefix}.dw", cin, cin, 3, stride, dilation, groups=cin)
        pw = self._conv_bn(f"{prefix}.pw.0", f"{prefix}.pw.1", cin, cout, 1, relu=False)
        return dw, pw, stride == 1 and cin == cout

    def _build_mobile(self):
        w = self.config.width
        c1, c2, c3 = max(w // 2, 4), w, 3 * w
        p = "backbone"
        self._stem = self._seq(f"{p}.stem", 3, c1, 3, stride=2)
        self._stage1 = [
            self._ds(f"{p}.stage1.0", c1, c2, stride=2),
            self._ds(f"{p}.stage1.1", c2, c2),
        ]
        self._stage2 = [self._ds(f"{p}.stage2.0", c2, c3, stride=2)] + [
            self._ds(f"{p}.stage2.{i}", c3, c3, dilation=dil)
            for i, dil in enumerate((2, 4, 2, 1), start=1)
        ]
        self._fuse = (
            self._seq(f"{p}.fuse.0", c3 + c2, 2 * w, 1),
            self._ds(f"{p}.fuse.1", 2 * w, 2 * w),
        )
        self._out_channels = 2 * w

    def _build_resnet(self):
        w = self.config.width
        p = "backbone"
        self._stem = self._seq(f"{p}.stem.0", 3, w, 7, stride=2)
        self._blocks = []
        cin = w
        chans, strides, dils = [w, 2 * w, 4 * w, 8 * w], [1, 2, 1, 1], [1, 1, 2, 4]
        for s, (c, st, dil, n) in enumerate(
            zip(chans, strides, dils, self.config.resnet_layers)
        ):
            for b in range(int(n)):
                q = f"{p}.stages.{s}.{b}"
                stride = st if b == 0 else 1
                conv1 = self._conv_bn(
                    f"{q}.conv1", f"{q}.bn1", cin, c, 3, stride, dil, relu=True
                )
                conv2 = self._conv_bn(
                    f"{q}.conv2", f"{q}.bn2", c, c, 3, 1, dil, relu=False
                )
                down = None
                if stride != 1 or cin != c:
                    down = self._conv_bn(
                        f"{q}.down.0", f"{q}.down.1", cin, c, 1, stride, relu=False
                    )
                self._blocks.append((conv1, conv2, down))
                cin = c
        self._out_channels = cin

    def _build_heads(self):
        cfg, c, k = self.config, self._out_channels, self.config.n_bins
        heads = [("cls_head", 2 * (k + 1))]
        if cfg.has_residual:
            heads.append(("res_head", 2 * k))
        if cfg.depth_head:
            heads.append(("depth_head", 1))
        ws, bs = [], []
        for name, n in heads:
            ws.append(self._take(f"{name}.weight", (n, c, 1, 1)))
            bs.append(self._take(f"{name}.bias", (n,)))
        w, b = np.concatenate(ws), np.concatenate(bs)
        self.n_params += w.size + b.size
        self._heads = _Conv(w, b)

    # ---------------------------------------------------------------- forward
    @staticmethod
    def _run_ds(block, x):
        dw, pw, residual = block
        y = pw(dw(x))
        if residual:
            y += x
        return np.maximum(y, 0.0, out=y)

    def _mobile(self, x):
        x = self._stem(x)
        for block in self._stage1:
            x = self._run_ds(block, x)
        s4 = x
        for block in self._stage2:
            x = self._run_ds(block, x)
        up = self._resize(x, s4.shape[-2:])
        f = self._fuse[0](np.concatenate([up, s4], axis=1))
        return self._run_ds(self._fuse[1], f)

    def _resnet(self, x):
        x = _max_pool_3x3_s2(self._stem(x))
        for conv1, conv2, down in self._blocks:
            y = conv2(conv1(x))
            y += x if down is None else down(x)
            x = np.maximum(y, 0.0, out=y)
        return x

    def __call__(self, x, size=None):
        x = np.asarray(x, dtype=np.float32)
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(
                f"NumpyDenseRegNet: expected (B, 3, H, W) input, got {tuple(x.shape)}"
            )
        size = x.shape[-2:] if size is None else (int(size[0]), int(size[1]))
        x = (x - _PIXEL_MEAN) / _PIXEL_STD
        f = self._mobile(x) if self.config.backbone == "mobile" else self._resnet(x)
        out = self._resize(self._heads(f), size)
        k = self.config.n_bins
        result = {"cls_u": out[:, : k + 1], "cls_v": out[:, k + 1 : 2 * k + 2]}
        i = 2 * k + 2
        if self.config.has_residual:
            d = np.float32(self.config.bin_width)
            result["res_u"] = out[:, i : i + k] * d
            result["res_v"] = out[:, i + k : i + 2 * k] * d
            i += 2 * k
        if self.config.depth_head:
            result["depth"] = 1.0 / (1.0 + np.exp(-out[:, i : i + 1]))
        return result

    def decode(self, x, residual=True, threads=None, size=None):
        """Forward pass + :func:`decode_uv_numpy` (``(B, S, S)`` maps, or ``size``
        ``(h, w)``), with ``threads`` BLAS threads (:func:`blas_threads`; `None`:
        unchanged)."""
        with blas_threads(threads):
            return decode_uv_numpy(self(x, size), residual=residual)

    # ---------------------------------------------------------------- construction
    @classmethod
    def from_torch(cls, net):
        """The numpy twin of a torch :class:`~.network.DenseRegNet` (same weights)."""
        state = {k: v.detach().cpu().numpy() for k, v in net.state_dict().items()}
        return cls(net.config, state)

    def state_dict(self):
        """The tensors it was built from (torch ``state_dict`` names, numpy arrays)."""
        return dict(self._raw)

    def n_parameters(self):
        """Parameters of the network (batch-norm scale and shift included)."""
        return int(self.n_params)

    def __str__(self):
        c = self.config
        return (
            f"NumpyDenseRegNet({c.backbone} backbone, head={c.head}, K={c.n_bins}, "
            f"input {c.input_size}px, depth={'yes' if c.depth_head else 'no'}, "
            f"{self.n_parameters() / 1e6:.2f} M parameters, numpy)"
        )


# --------------------------------------------------------------------------- decoding
def decode_uv_numpy(outputs, residual=True):
    """:func:`menpo_densereg.densereg.network.decode_uv` on numpy arrays.

    Parameters
    ----------
    outputs : `dict`
        ``cls_u``, ``cls_v`` ``(B, K+1, H, W)`` logits and optionally ``res_u``,
        ``res_v`` ``(B, K, H, W)`` and ``depth`` ``(B, 1, H, W)``.
    residual : `bool`
        Add the residual of the chosen bin (ignored without residual outputs).

    Returns
    -------
    `dict` with ``"u"``, ``"v"``, ``"face_prob"``, ``"bin_conf"`` ``(B, H, W)`` float32,
    ``"bin_u"``, ``"bin_v"`` ``(B, H, W)`` int64 and ``"depth"`` when present.
    """
    result = {}
    k = outputs["cls_u"].shape[1] - 1
    d = np.float32(1.0 / k)
    bg = []
    conf = np.float32(1.0)
    for axis in ("u", "v"):
        logits = np.asarray(outputs["cls_" + axis], dtype=np.float32)
        res = outputs.get("res_" + axis) if residual else None
        # the first maximal bin (as torch's max), its logit and residual, one pass
        # per bin over contiguous (B, H, W) planes
        best = logits[:, 1].copy()
        q = np.zeros(best.shape, dtype=np.int64)
        r = None if res is None else np.array(res[:, 0], dtype=np.float32)
        for c in range(1, k):
            plane = logits[:, c + 1]
            better = plane > best
            np.copyto(best, plane, where=better)
            np.copyto(q, c, where=better)
            if r is not None:
                np.copyto(r, res[:, c], where=better)
        # softmax, as the torch decoder: the chosen bin's probability given face is
        # 1 / sum over bins of exp(logit - best), the background's
        # sigmoid(l_0 - logsumexp(bins))
        bins_sum = np.exp(logits[:, 1:] - best[:, None]).sum(axis=1)
        z = logits[:, 0] - best - np.log(bins_sum)
        e = np.exp(-np.abs(z))  # a sigmoid that cannot overflow
        bg.append(np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(np.float32))
        conf = conf / bins_sum
        coord = (q.astype(np.float32) + np.float32(0.5)) * d
        if r is not None:
            coord += r
        result[axis] = np.clip(coord, 0.0, 1.0)
        result["bin_" + axis] = q
    result["face_prob"] = np.float32(1.0) - np.float32(0.5) * (bg[0] + bg[1])
    result["bin_conf"] = conf
    if "depth" in outputs:
        result["depth"] = outputs["depth"][:, 0]
    return result
