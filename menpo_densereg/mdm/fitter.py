"""Mnemonic Descent Method (Trigeorgis et al., CVPR 2016) in torch, for 2-core CPUs.

MDM refines a shape in a few recurrent steps. At every step it samples a small patch
around each current landmark (batched bilinear sampling with
:func:`torch.nn.functional.grid_sample`), runs a shared convolutional feature extractor
on the patches, concatenates the per-landmark features, updates a recurrent state
(a GRU cell: the "memory" that carries information across steps) and regresses a shape
increment from it.

Frame: the network sees a square grey crop of ``crop_size`` pixels around the current
shape's box (:func:`menpo_densereg.data.crop.crop_face` with ``margin``), so the refiner is
invariant to the face's position and scale in the image; predictions are mapped back to
the image frame with the crop's transform.

:class:`MDMFitter` gives it the project's fitter API: ``fit_from_bb`` (the stored mean
shape aligned to the box, menpofit style, or an initialiser's output) and
``fit_from_shape``, returning a menpofit result with the shape of every step.
Weights are saved with :mod:`menpo_densereg.fitting.weights` (``kind="mdm"``).
"""

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from menpo.shape import PointCloud

from menpo_densereg.data.crop import crop_face
from menpo_densereg.fitting.base import (
    attach_image,
    box_from_shape,
    check_image,
    checked_image,
)
from menpo_densereg.data.markups import (
    check_shape,
    flip_permutation,
    get_markup,
    mirror_points,
)
from menpo_densereg.fitting.inference import frozen_graphs, torch_threads
from menpo_densereg.fitting.weights import WeightsError, load_weights, save_weights

__all__ = [
    "MDM_DEFAULTS",
    "MDMNet",
    "MDMFitter",
    "extract_patches",
    "save_mdm",
    "load_mdm",
    "from_fitter_dir",
    "prepare_crop",
]

KIND = "mdm"

#: Architecture / frame configuration (stored in the weights file).
MDM_DEFAULTS = {
    "markup": "ibug68",
    "crop_size": 112,
    "margin": 0.25,
    "patch_size": 12,
    "patch_scale": [2.0, 1.6, 1.25, 1.0],
    "channels": [8, 16, 32],
    "feature_pool": 2,
    "hidden": 256,
    "steps": 4,
}


def _config(**kwargs):
    cfg = dict(MDM_DEFAULTS)
    for k, v in kwargs.items():
        if k not in MDM_DEFAULTS:
            raise ValueError(f"unknown MDM option {k!r}; known: {sorted(MDM_DEFAULTS)}")
        if v is not None:
            cfg[k] = v
    cfg["channels"] = [int(c) for c in cfg["channels"]]
    for k in ("crop_size", "patch_size", "feature_pool", "hidden", "steps"):
        cfg[k] = int(cfg[k])
        if cfg[k] < 1:
            raise ValueError(f"{k}: must be >= 1, got {cfg[k]}")
    cfg["margin"] = float(cfg["margin"])
    scales = np.atleast_1d(np.asarray(cfg["patch_scale"], dtype=float)).tolist()
    if len(scales) == 1:
        scales = scales * cfg["steps"]
    if len(scales) != cfg["steps"] or min(scales) <= 0:
        raise ValueError(
            f"patch_scale: expected one positive value or one per step "
            f"({cfg['steps']}), got {cfg['patch_scale']}"
        )
    cfg["patch_scale"] = scales
    cfg["markup"] = get_markup(cfg["markup"]).name
    return cfg


def extract_patches(images, shapes, patch_size, patch_scale=1.0):
    """Bilinear patches of ``patch_size`` pixels centred on every landmark.

    Parameters
    ----------
    images : ``(B, C, H, W)`` tensor
    shapes : ``(B, N, 2)`` tensor of (y, x) pixel coordinates
    patch_size : `int`
    patch_scale : `float`
        Spacing of the patch samples in image pixels.

    Returns
    -------
    patches : ``(B, N, C, patch_size, patch_size)`` tensor (zeros outside the image)
    """
    B, C, H, W = images.shape
    N = shapes.shape[1]
    r = (
        torch.arange(patch_size, dtype=images.dtype, device=images.device)
        - (patch_size - 1) / 2
    ) * patch_scale
    dy, dx = torch.meshgrid(r, r, indexing="ij")
    ys = shapes[:, :, 0, None, None] + dy  # (B, N, P, P)
    xs = shapes[:, :, 1, None, None] + dx
    # align_corners=True: -1 is the centre of pixel 0, +1 of pixel W-1
    gx = xs / max(W - 1, 1) * 2 - 1
    gy = ys / max(H - 1, 1) * 2 - 1
    grid = torch.stack([gx, gy], dim=-1).reshape(B, N * patch_size, patch_size, 2)
    out = F.grid_sample(
        images, grid, mode="bilinear", padding_mode="zeros", align_corners=True
    )
    # (B, C, N*P, P) -> (B, N, C, P, P)
    return out.reshape(B, C, N, patch_size, patch_size).permute(0, 2, 1, 3, 4)


class MDMNet(nn.Module):
    """Patches -> shared CNN -> concatenation -> GRU state -> shape increment.

    Shapes are (y, x) pixel coordinates in the ``crop_size`` crop; ``forward`` returns
    the shape after every step. Patches have ``patch_size`` samples spaced
    ``patch_scale[step]`` pixels apart: coarse and wide at the first steps, fine at the
    last (one shared CNN; small patches keep a step at a few M multiply-adds).
    """

    def __init__(self, **config):
        super().__init__()
        cfg = _config(**config)
        self.config = cfg
        self.n_points = get_markup(cfg["markup"]).n_points
        layers, c_in = [], 1
        for k, c in enumerate(cfg["channels"]):
            # first conv at full patch resolution, then stride-2 convs (cheaper on CPU
            # than max-pooling)
            stride = 1 if k == 0 else 2
            layers += [
                nn.Conv2d(c_in, c, 3, stride=stride, padding=1),
                nn.ReLU(inplace=True),
            ]
            c_in = c
        layers.append(nn.AdaptiveAvgPool2d(cfg["feature_pool"]))
        self.cnn = nn.Sequential(*layers)
        feat = c_in * cfg["feature_pool"] ** 2
        self.proj = nn.Linear(self.n_points * feat, cfg["hidden"])
        self.gru = nn.GRUCell(cfg["hidden"], cfg["hidden"])
        self.head = nn.Linear(cfg["hidden"], self.n_points * 2)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        # increments are predicted in units of crop_size / 8 pixels
        self.delta_scale = cfg["crop_size"] / 8.0

    def step_features(self, images, shapes, step=0):
        cfg = self.config
        scale = cfg["patch_scale"][min(step, len(cfg["patch_scale"]) - 1)]
        p = extract_patches(images, shapes, cfg["patch_size"], scale)
        B, N = p.shape[:2]
        p = p.reshape(B * N, 1, cfg["patch_size"], cfg["patch_size"])
        mean = p.mean(dim=(2, 3), keepdim=True)
        std = p.std(dim=(2, 3), keepdim=True)
        p = (p - mean) / (std + 0.05)
        f = self.cnn(p).reshape(B, -1)
        return F.relu(self.proj(f))

    def forward(self, images, init_shapes, steps=None):
        """Refine ``init_shapes`` ``(B, N, 2)`` on grey crops ``(B, 1, S, S)``.

        Returns
        -------
        shapes : `list` of ``(B, N, 2)`` tensors, one per step.
        """
        if images.dim() != 4 or images.shape[1] != 1:
            raise ValueError(
                f"images: expected (B, 1, S, S), got {tuple(images.shape)}"
            )
        if init_shapes.shape[1:] != (self.n_points, 2):
            raise ValueError(
                f"init_shapes: expected (B, {self.n_points}, 2), got {tuple(init_shapes.shape)}"
            )
        steps = self.config["steps"] if steps is None else int(steps)
        shape = init_shapes
        h = images.new_zeros(images.shape[0], self.config["hidden"])
        out = []
        for t in range(steps):
            x = self.step_features(images, shape, t)
            h = self.gru(x, h)
            delta = self.head(h).reshape(-1, self.n_points, 2) * self.delta_scale
            shape = shape + delta
            out.append(shape)
        return out

    def __str__(self):
        n = sum(p.numel() for p in self.parameters())
        c = self.config
        return (
            f"MDMNet: {self.n_points} points, {c['steps']} steps, {c['crop_size']}px grey "
            f"crop, {c['patch_size']}px patches, CNN {c['channels']}, GRU {c['hidden']}, "
            f"{n / 1e6:.2f} M parameters"
        )


class MDMSteps(nn.Module):
    """An :class:`MDMNet` run for a fixed number of steps, for inference graphs:
    ``forward(images, init_shapes)`` returns the `tuple` of every step's shapes (what
    :class:`menpo_densereg.fitting.inference.FrozenGraphs` traces)."""

    def __init__(self, net, steps):
        super().__init__()
        self.net = net
        self.steps = int(steps)

    def forward(self, images, init_shapes):
        return tuple(self.net(images, init_shapes, steps=self.steps))


def prepare_crop(image, shape, crop_size, margin):
    """Grey crop around ``shape``'s box and the shape in crop pixels.

    Returns
    -------
    crop : ``(1, S, S)`` float32 array
    crop_shape : ``(N, 2)`` float32 array
    crop_to_image : menpo transform
    """
    crop, crop_to_image = crop_face(
        image, box_from_shape(shape), crop_size, margin=margin
    )
    px = crop.pixels
    if px.shape[0] == 3:
        px = 0.2989 * px[0] + 0.5870 * px[1] + 0.1140 * px[2]
    else:
        px = px[0]
    pts = crop_to_image.pseudoinverse().apply(np.asarray(shape.points, dtype=float))
    return px[None].astype(np.float32), pts.astype(np.float32), crop_to_image


def save_mdm(net, mean_shape, path, extra=None):
    """Save an :class:`MDMNet` and the mean shape of its box initialisation."""
    tensors = {f"net.{k}": v for k, v in net.state_dict().items()}
    tensors["mean_shape"] = np.asarray(
        getattr(mean_shape, "points", mean_shape), dtype=np.float64
    )
    save_weights(path, tensors, kind=KIND, config=net.config, extra=extra)


def load_mdm(path):
    """Load ``(net, mean_shape, header)`` written by :func:`save_mdm`.

    Raises
    ------
    WeightsError
    """
    tensors, header = load_weights(path, kind=KIND)
    try:
        net = MDMNet(**header["config"])
        state = {k[4:]: v for k, v in tensors.items() if k.startswith("net.")}
        net.load_state_dict(state, strict=True)
        mean = PointCloud(tensors["mean_shape"].double().numpy())
    except (KeyError, RuntimeError, ValueError, TypeError) as e:
        raise WeightsError(f"{path}: incompatible MDM file ({e})") from None
    net.eval()
    return net, mean, header


class MDMFitter:
    """An MDM refiner with the project's fitter interface.

    Parameters
    ----------
    net : `MDMNet`
    mean_shape : `PointCloud`
        Aligned to the box by :meth:`fit_from_bb` (when there is no initialiser).
    name : `str`
    initialiser : object with ``fit_from_bb``, optional
        When given, :meth:`fit_from_bb` starts from its output instead.
    steps : `int`, optional
        Number of steps at fit time (default: the trained number).
    threads : `int` or `None`
        torch threads used while fitting one face (default 1: the network is small and
        made of many small ops, for which more threads only add synchronisation — on a
        2-core machine with another busy process, 2 threads measured 40x slower).
        `None` keeps the global setting.
    flip : `bool`
        Test-time flip averaging: the crop with the start and its mirror image with
        the mirrored start run as one batch of two; every step's shapes are averaged
        (mirrored back and relabelled left/right). The network is overhead-bound, so
        this costs ~20 %, not 2x.
    """

    def __init__(
        self,
        net,
        mean_shape,
        name="mdm",
        initialiser=None,
        steps=None,
        threads=1,
        flip=False,
    ):
        self.net = net.eval()
        self.markup = get_markup(net.config["markup"])
        pts = np.asarray(getattr(mean_shape, "points", mean_shape), dtype=float)
        check_shape(pts, self.markup, "mean_shape")
        self.mean_shape = PointCloud(pts)
        self.name = name
        self.initialiser = initialiser
        self.steps = steps
        self.threads = threads
        self.flip = bool(flip)
        self._flip_perm = flip_permutation(self.markup) if self.flip else None

    @torch.no_grad()
    def fit_from_shape(self, image, initial_shape, gt_shape=None, **kwargs):
        """Refine ``initial_shape`` (image frame); result with the shape of every step."""
        from menpofit.result import NonParametricIterativeResult

        check_image(image)
        initial = PointCloud(np.asarray(initial_shape.points, dtype=float))
        check_shape(initial, self.markup, "initial_shape")
        cfg = self.net.config
        crop, pts, crop_to_image = prepare_crop(
            image, initial, cfg["crop_size"], cfg["margin"]
        )
        x, start = torch.from_numpy(crop)[None], torch.from_numpy(pts)[None]
        if self.flip:
            width = crop.shape[-1]
            mirrored = mirror_points(pts, width, self._flip_perm).astype(np.float32)
            x = torch.cat([x, x.flip(-1)])
            start = torch.cat([start, torch.from_numpy(mirrored)[None]])
        n_steps = cfg["steps"] if self.steps is None else int(self.steps)
        run = frozen_graphs(
            self.net, ("steps", n_steps), lambda n: MDMSteps(n, n_steps), "MDM"
        )
        with torch_threads(self.threads):
            shapes = run(x, start)
        steps = [s[0].double().numpy() for s in shapes]
        if self.flip:
            steps = [
                0.5 * (a + mirror_points(s[1].double().numpy(), width, self._flip_perm))
                for a, s in zip(steps, shapes)
            ]
        # menpofit's iterative result prepends initial_shape to the step shapes
        out = [PointCloud(crop_to_image.apply(s)) for s in steps]
        return attach_image(
            NonParametricIterativeResult(out, initial_shape=initial, gt_shape=gt_shape),
            image,
        )

    def initial_shape_from_bb(self, image, bounding_box):
        """The start of :meth:`fit_from_bb`: initialiser output or the aligned mean."""
        if self.initialiser is not None:
            res = self.initialiser.fit_from_bb(image, bounding_box)
            return PointCloud(np.asarray(res.final_shape.points, dtype=float))
        from menpofit.fitter import align_shape_with_bounding_box

        return align_shape_with_bounding_box(self.mean_shape, bounding_box)

    def fit_from_bb(self, image, bounding_box, gt_shape=None, **kwargs):
        """Start from the box (aligned mean shape, or the initialiser) and refine."""
        with checked_image(image):
            return self.fit_from_shape(
                image,
                self.initial_shape_from_bb(image, bounding_box),
                gt_shape=gt_shape,
            )

    def __str__(self):
        start = (
            self.initialiser.name if self.initialiser is not None else "box mean shape"
        )
        flip = ", flip-averaged" if self.flip else ""
        return f"MDMFitter '{self.name}' (start: {start}{flip}): {self.net}"


def from_fitter_dir(path):
    """An :class:`MDMFitter` from ``fitters/<name>/`` (``[fitter] kind = "mdm"``).

    ``[mdm] weights`` names the model file (default ``mdm.safetensors``); an optional
    ``[fit] initialiser`` names a fitter whose output starts :meth:`MDMFitter.fit_from_bb`;
    ``[fit] steps``, ``threads`` and ``flip`` (test-time flip averaging) are passed on.
    """
    from menpo_densereg.fitting.recipes import load_recipe

    path = Path(path)
    recipe = load_recipe(path)
    weights = path / recipe.get("mdm", {}).get("weights", "mdm.safetensors")
    if not weights.is_file():
        raise WeightsError(
            f"{weights}: model file not found (train it with `menpo-densereg train {path}`)"
        )
    net, mean, _ = load_mdm(weights)
    fit = recipe.get("fit", {})
    initialiser = None
    if fit.get("initialiser") not in (None, "", "box"):
        from menpo_densereg.fitting.composition import _load_named

        initialiser = _load_named(fit["initialiser"], path)
    return MDMFitter(
        net,
        mean,
        name=recipe.get("fitter", {}).get("name", path.name),
        initialiser=initialiser,
        steps=fit.get("steps"),
        threads=fit.get("threads", 1),
        flip=fit.get("flip", False),
    )
