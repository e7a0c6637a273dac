"""DenseReg as a landmark initialiser for menpo / menpofit.

:class:`DenseRegInitialiser` crops the face (:func:`menpo_densereg.data.crop.crop_face`),
runs the DenseReg network, reads the landmarks of the chosen markup out of the
predicted UV field (:mod:`menpo_densereg.densereg.readout`), optionally cleans them up with a PCA
shape model, and maps them back to the image frame. It exposes menpofit's
``fit_from_bb`` / ``fit_from_shape`` (through :class:`menpo_densereg.fitting.base.Initialiser`)
and :meth:`DenseRegInitialiser.dense`, the dense outputs as menpo images.

Model files are written by :func:`save_densereg` with :mod:`menpo_densereg.fitting.weights`
(kind ``"densereg"``): the network's tensors (``net.*``), PCA shape models
(``pca.<markup>.*``) and the network configuration in the JSON header. A shipped
fitter folder holds ``recipe.toml`` and ``weights.safetensors``; its ``[readout]`` table
sets the markup, PCA use and read-out radius, and ``[model] weights`` may point to the
weights of another folder (so ``densereg-face`` and ``densereg-face-pca`` share one
file).

**Backends.** The network runs on torch (:class:`~.network.DenseRegNet`) or on numpy
(:class:`~.numpy_net.NumpyDenseRegNet`, same outputs to float32 rounding, no torch
import). ``backend="auto"`` (the default) uses numpy while torch has not been imported
(``menpo-densereg fit`` then never imports torch, about 2 s of CPU saved per process)
and torch when it already is; ``"numpy"`` / ``"torch"`` force one. Either way
:attr:`DenseRegInitialiser.net` is the torch network (built on first use) for code that
trains or benchmarks it.
"""

import sys
from pathlib import Path

import numpy as np
from menpo.shape import PointCloud

from menpo_densereg.data.crop import crop_face, image_to_array
from menpo_densereg.densereg.numpy_net import DenseRegConfig, NumpyDenseRegNet
from menpo_densereg.fitting.base import Initialiser, check_image
from menpo_densereg.data.markups import average_with_mirror, get_markup
from menpo_densereg.densereg.readout import ShapePCA, landmarks_from_uv
from menpo_densereg.fitting.weights import WeightsError, load_weights, save_weights

__all__ = [
    "DenseRegInitialiser",
    "from_fitter_dir",
    "save_densereg",
    "load_densereg",
    "resolve_backend",
    "BACKENDS",
    "KIND",
]

KIND = "densereg"

#: the ``backend`` values of :class:`DenseRegInitialiser` and :func:`load_densereg`
BACKENDS = ("auto", "numpy", "torch")


def resolve_backend(backend):
    """``"numpy"`` or ``"torch"`` for a ``backend`` option (see the module docstring).

    ``"auto"`` is ``"torch"`` when torch is already imported (its network is then as
    fast and nothing is saved) and ``"numpy"`` otherwise.

    Raises
    ------
    ValueError
        A value not in :data:`BACKENDS`.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend: {backend!r} is not one of {BACKENDS}")
    if backend == "auto":
        return "torch" if "torch" in sys.modules else "numpy"
    return backend


def _is_numpy_net(net):
    return isinstance(net, NumpyDenseRegNet)


def torch_from_numpy_net(net):
    """The torch :class:`~.network.DenseRegNet` with the weights of a
    :class:`NumpyDenseRegNet` (eval mode; imports torch)."""
    import torch

    from menpo_densereg.densereg.network import DenseRegNet

    torch_net = DenseRegNet(net.config)
    state = {k: torch.from_numpy(np.array(v)) for k, v in net.state_dict().items()}
    missing, unexpected = torch_net.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:  # NumpyDenseRegNet checked them: not expected here
        raise ValueError(
            f"DenseReg tensors: missing {missing}, unexpected {unexpected}"
        )
    return torch_net.eval()


def _check_field_size(field_size, input_size):
    """``field_size`` as an `int` in [8, input_size], or `None`."""
    if field_size is None:
        return None
    if isinstance(field_size, bool) or not isinstance(field_size, (int, np.integer)):
        raise TypeError(f"field_size: expected an int, got {field_size!r}")
    if not 8 <= int(field_size) <= int(input_size):
        raise ValueError(
            f"field_size: expected 8 to the input size {input_size}, got {field_size}"
        )
    return None if int(field_size) == int(input_size) else int(field_size)


def decode_batch(net, x, residual=True, threads=1, size=None):
    """Run a DenseReg network (torch or numpy) on a ``(B, 3, S, S)`` float32 batch; a
    `list` of decoded outputs (numpy ``(S, S)`` arrays, or ``(size, size)``), one per
    item."""
    if size is not None:
        size = (int(size), int(size))
    if _is_numpy_net(net):
        dec = net.decode(x, residual=residual, threads=threads, size=size)
        return [{k: v[i] for k, v in dec.items()} for i in range(len(x))]
    import torch

    from menpo_densereg.densereg.network import DecodedDenseReg
    from menpo_densereg.fitting.inference import frozen_graphs, torch_threads

    # channels-last input: the convolutions, and above all the full-resolution
    # upsampling of the 4K+3 head maps, run faster in that layout on a CPU
    xt = torch.from_numpy(x).contiguous(memory_format=torch.channels_last)
    residual = bool(residual)
    decoder = frozen_graphs(
        net,
        ("decoded", residual, size),
        lambda n: DecodedDenseReg(n, residual, size),
        "DenseReg",
    )
    keys = DecodedDenseReg.output_keys(net.config)
    with torch_threads(threads), torch.inference_mode():
        dec = dict(zip(keys, decoder(xt)))
    return [{k: v[i].numpy() for k, v in dec.items()} for i in range(len(x))]


def decode_crop(net, crop, residual=True, threads=1, size=None):
    """Run a DenseReg network (torch or numpy) on one menpo crop; decoded outputs as
    numpy ``(S, S)`` arrays (or ``(size, size)``)."""
    return decode_batch(net, image_to_array(crop)[None], residual, threads, size)[0]


def field_to_crop(points, field_shape, crop_shape):
    """Map ``(y, x)`` points from a decoded field's pixel frame to the crop's, for a
    field upsampled to ``field_shape`` instead of ``crop_shape`` (pixel centres of
    both grids cover the same area, as ``interpolate(align_corners=False)``)."""
    scale = np.asarray(crop_shape, float) / np.asarray(field_shape, float)
    if np.all(scale == 1.0):
        return points
    return (np.asarray(points, float) + 0.5) * scale - 0.5


def read_field_landmarks(
    dense,
    landmark_uv,
    radius,
    pca=None,
    n_components=None,
    mirrored=None,
    crop_shape=None,
):
    """Landmarks (crop frame), confidence and visibility from decoded outputs.

    Parameters
    ----------
    dense : `dict` from :func:`decode_crop` (``u``, ``v``, ``face_prob``)
    landmark_uv : ``(n, 2)`` template (u, v) of the landmarks
    radius : `float`
        UV radius of the read-out.
    pca : `ShapePCA`, optional
        Shape model for the clean-up (confidence-weighted reconstruction).
    n_components : `int`, optional
    mirrored : ``(dense, permutation)``, optional
        Test-time flip: the decoded outputs of the mirrored crop and the markup's
        left/right permutation. Both read-outs are averaged by confidence
        (:func:`~menpo_densereg.data.markups.average_with_mirror`) before the
        clean-up; a landmark is visible when it is in either.
    crop_shape : ``(h, w)``, optional
        The crop's shape, when the outputs were decoded at another size
        (:func:`field_to_crop`); the landmarks are returned in the crop's frame.
    """
    pts, conf, vis = landmarks_from_uv(
        dense["u"], dense["v"], landmark_uv, dense["face_prob"], radius=radius
    )
    if mirrored is not None:
        other, perm = mirrored
        p2, c2, v2 = landmarks_from_uv(
            other["u"], other["v"], landmark_uv, other["face_prob"], radius=radius
        )
        pts, conf = average_with_mirror(
            pts, p2, dense["u"].shape[1], perm, weights=(conf, c2)
        )
        vis = vis | v2[perm]
    if crop_shape is not None:
        pts = field_to_crop(pts, dense["u"].shape, crop_shape)
    if pca is not None:
        pts = pca.reconstruct(pts, conf, n_components=n_components)
    return pts, conf, vis


def save_densereg(path, net, pca_models=None, extra=None):
    """Save a DenseReg network (+ PCA shape models) atomically with weights.py.

    Parameters
    ----------
    path : `str` or `Path`
    net : :class:`DenseRegNet`
    pca_models : `dict` of markup name -> :class:`ShapePCA`, optional
    extra : `dict`, optional
        Training summary etc. (JSON-serialisable).
    """
    tensors = {f"net.{k}": v for k, v in net.state_dict().items()}
    for name, pca in (pca_models or {}).items():
        tensors.update(pca.to_arrays(f"pca.{get_markup(name).name}"))
    config = {
        "net": net.config.to_dict(),
        "pca_markups": sorted(get_markup(m).name for m in (pca_models or {})),
    }
    save_weights(path, tensors, KIND, config=config, extra=extra)


def read_model_file(path, kind, what, backend="torch"):
    """Tensors, header and network of a DenseReg-family model file (face or ear).

    Parameters
    ----------
    path : `Path`
    kind : `str`
        The file kind expected in its header.
    what : `str`
        What the model is, for error messages.
    backend : ``"torch"`` or ``"numpy"``
        The network returned (and the type of the tensors: torch or numpy arrays).

    Returns
    -------
    tensors : `dict`, header : `dict`, net : :class:`DenseRegNet` or
    :class:`NumpyDenseRegNet`

    Raises
    ------
    WeightsError
        Missing, corrupt, foreign or inconsistent files (the message names the file).
    """
    if backend not in ("torch", "numpy"):
        raise ValueError(f"backend: {backend!r} is not 'torch' or 'numpy'")
    tensors, header = load_weights(path, kind=kind, as_torch=backend == "torch")
    if backend == "numpy":
        try:
            config = DenseRegConfig.from_dict(header.get("config", {})["net"])
        except (KeyError, TypeError, ValueError) as e:
            raise WeightsError(
                f"{path}: bad {what} configuration in header ({e})"
            ) from None
        state = {k[4:]: v for k, v in tensors.items() if k.startswith("net.")}
        try:
            net = NumpyDenseRegNet(config, state)
        except ValueError as e:
            raise WeightsError(
                f"{path}: tensors do not match the {what} network ({e})"
            ) from None
        return tensors, header, net
    from menpo_densereg.densereg.network import DenseRegNet
    from menpo_densereg.fitting.inference import network_from_weights

    net = network_from_weights(
        path,
        tensors,
        header,
        lambda d: DenseRegNet(DenseRegConfig.from_dict(d)),
        what,
    )
    return tensors, header, net


def load_densereg(path, backend="torch"):
    """Load a DenseReg model file.

    Parameters
    ----------
    path : `str` or `Path`
    backend : `str`
        ``"torch"`` (default: a trainable network), ``"numpy"`` (no torch import) or
        ``"auto"`` (see :func:`resolve_backend`).

    Returns
    -------
    net : :class:`DenseRegNet` (eval mode) or :class:`NumpyDenseRegNet`
    pca_models : `dict` of markup name -> :class:`ShapePCA`
    header : `dict`

    Raises
    ------
    WeightsError
        Missing, corrupt, foreign or inconsistent files (the message names the file).
    """
    path = Path(path)
    tensors, header, net = read_model_file(
        path, KIND, "DenseReg", backend=resolve_backend(backend)
    )
    cfg = header.get("config", {})
    pca_models = {}
    for m in cfg.get("pca_markups", []):
        try:
            pca_models[m] = ShapePCA.from_arrays(tensors, prefix=f"pca.{m}")
        except ValueError as e:
            raise WeightsError(f"{path}: bad PCA model for {m} ({e})") from None
    return net, pca_models, header


class DenseRegInitialiser(Initialiser):
    """DenseReg landmark initialiser.

    Parameters
    ----------
    net : :class:`DenseRegNet` or :class:`NumpyDenseRegNet`
        The network, on either backend (the other is built from it when needed).
    pca_models : `dict` of markup name -> :class:`ShapePCA`, optional
    markup : `str`
        Markup of the returned landmarks (any markup defined on the face template:
        ``"68"``, ``"98"``, ``"29"``, ``"5"``).
    pca : `bool`
        Clean the landmarks up with the PCA model of ``markup`` (must be present).
    n_components : `int`, optional
        PCA components used (default: all stored).
    radius : `float`
        UV radius of the landmark read-out.
    name : `str`, optional
    template : :class:`menpo_densereg.template.face.FaceTemplate`, optional
    threads : `int` or `None`
        torch intra-op threads while the network runs (restored afterwards). The
        default 1 is fastest for this small network on a 2-core CPU, and much more
        robust when other processes share the cores (2 threads spin-wait on each
        other); `None` leaves torch's setting alone. The numpy backend limits the
        BLAS threads the same way.
    backend : `str`
        ``"auto"`` (numpy unless torch is already imported), ``"numpy"`` or
        ``"torch"``: what runs the network (:attr:`backend` holds the resolved one).
    flip : `bool`
        Test-time flip averaging: the crop and its mirror image run as one batch of
        two, and the two read-outs are averaged by confidence (mirrored back and
        relabelled left/right by the template's flip permutation) before the PCA
        clean-up. About 1.8x the network's time.
    field_size : `int`, optional
        Side of the decoded field the landmarks are read from (default: the network's
        input size). The heads have stride 4, so a field at half the input size
        holds the same information, decodes 4x fewer pixels and reads out faster;
        the landmarks are mapped back to the crop's frame (:func:`field_to_crop`).
        :meth:`dense` always decodes at the input size.
    """

    def __init__(
        self,
        net,
        pca_models=None,
        markup="68",
        pca=False,
        n_components=None,
        radius=0.025,
        name=None,
        template=None,
        threads=1,
        backend="auto",
        flip=False,
        field_size=None,
    ):
        from menpo_densereg.template.face import FaceTemplate

        self.backend = resolve_backend(backend)
        if _is_numpy_net(net):
            self._nets = {"numpy": net}
        else:
            self._nets = {"torch": net.eval()}
        self.config = net.config
        self.pca_models = dict(pca_models or {})
        self.markup = get_markup(markup).name
        self.template = template or FaceTemplate.load()
        self.landmark_uv = self.template.landmark_uv(self.markup)
        self.pca = bool(pca)
        if self.pca and self.markup not in self.pca_models:
            raise ValueError(
                f"pca: no PCA shape model for markup {self.markup!r} in this model "
                f"(available: {sorted(self.pca_models)})"
            )
        self.n_components = n_components
        self.radius = float(radius)
        self.threads = threads
        self.flip = bool(flip)
        self.field_size = _check_field_size(field_size, self.config.input_size)
        self._flip_perm = (
            self.template.flip_permutation(self.markup) if self.flip else None
        )
        self.name = name or ("DenseReg+PCA" if self.pca else "DenseReg")

    # ------------------------------------------------------------------ networks
    @property
    def net(self):
        """The torch :class:`DenseRegNet` (eval mode; built from the numpy network's
        weights, importing torch, on first use when loaded for numpy)."""
        if "torch" not in self._nets:
            self._nets["torch"] = torch_from_numpy_net(self._nets["numpy"])
        return self._nets["torch"]

    @property
    def numpy_net(self):
        """The :class:`NumpyDenseRegNet` (built from the torch network on first use)."""
        if "numpy" not in self._nets:
            self._nets["numpy"] = NumpyDenseRegNet.from_torch(self._nets["torch"])
        return self._nets["numpy"]

    @property
    def runner(self):
        """The network that :meth:`predict_crop` runs (of :attr:`backend`)."""
        return self.numpy_net if self.backend == "numpy" else self.net

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_weights(cls, path, backend="auto", **kwargs):
        """Load from a model file written by :func:`save_densereg`.

        With ``backend`` ``"auto"`` or ``"numpy"`` and torch not imported, the file is
        read with ``safetensors.numpy`` and torch is never imported.
        """
        resolved = resolve_backend(backend)
        net, pca_models, _ = load_densereg(path, backend=resolved)
        return cls(net, pca_models, backend=resolved, **kwargs)

    @classmethod
    def from_fitter_dir(cls, path, **overrides):
        """Load a fitter folder (``recipe.toml`` + weights).

        The recipe's ``[readout]`` table may set ``markup``, ``pca``, ``n_components``,
        ``radius``, ``flip`` (test-time flip averaging) and ``backend`` (``"auto"``,
        ``"numpy"`` or ``"torch"``, see :meth:`from_weights`); ``[model] weights`` names
        the weights file (relative to the folder; default ``weights.safetensors``).
        ``overrides`` win over the recipe.
        """
        from menpo_densereg.fitting.recipes import load_recipe

        path = Path(path)
        recipe = load_recipe(path)
        kind = recipe.get("fitter", {}).get("kind")
        if kind != KIND:
            raise ValueError(f"{path}/recipe.toml: kind {kind!r} is not {KIND!r}")
        weights = path / recipe.get("model", {}).get("weights", "weights.safetensors")
        readout = dict(recipe.get("readout", {}))
        keys = (
            "markup",
            "pca",
            "n_components",
            "radius",
            "threads",
            "backend",
            "flip",
            "field_size",
        )
        kwargs = {k: readout[k] for k in keys if k in readout}
        kwargs["name"] = recipe["fitter"].get("display_name") or recipe["fitter"].get(
            "name"
        )
        kwargs.update(overrides)
        return cls.from_weights(weights, **kwargs)

    def with_options(self, **kwargs):
        """A copy sharing the network with other read-out options (markup, pca...)."""
        opts = dict(
            markup=self.markup,
            pca=self.pca,
            n_components=self.n_components,
            radius=self.radius,
            template=self.template,
            threads=self.threads,
            backend=self.backend,
            flip=self.flip,
            field_size=self.field_size,
        )
        opts.update(kwargs)
        if "pca" in kwargs and "name" not in kwargs:
            opts["name"] = None
        new = type(self)(self.runner, self.pca_models, **opts)
        new._nets.update(self._nets)  # share both backends' networks
        return new

    # ------------------------------------------------------------------ inference
    @property
    def input_size(self):
        return self.config.input_size

    def _crop(self, image, bounding_box):
        check_image(image)
        return crop_face(
            image, bounding_box, self.input_size, margin=self.config.margin
        )

    def predict_crop(self, crop, size=None):
        """Decoded network outputs for one crop, as numpy ``(S, S)`` arrays (or
        ``(size, size)``)."""
        return decode_crop(
            self.runner, crop, self.config.has_residual, self.threads, size
        )

    def predict_crop_and_mirror(self, crop, size=None):
        """Decoded outputs of ``crop`` and of its mirror image (one batch of two)."""
        x = image_to_array(crop)
        return decode_batch(
            self.runner,
            np.stack([x, x[..., ::-1]]),
            self.config.has_residual,
            self.threads,
            size,
        )

    def read_landmarks(self, dense, mirrored=None):
        """Landmarks (crop frame), confidence, visibility from decoded outputs
        (averaged with the read-out of the mirrored crop's outputs ``mirrored``)."""
        pca = self.pca_models[self.markup] if self.pca else None
        if mirrored is not None:
            perm = self._flip_perm
            if perm is None:
                perm = self.template.flip_permutation(self.markup)
            mirrored = (mirrored, perm)
        return read_field_landmarks(
            dense,
            self.landmark_uv,
            self.radius,
            pca,
            self.n_components,
            mirrored,
            crop_shape=(self.input_size, self.input_size),
        )

    def _predict_landmarks(self, crop, size=None):
        """Decoded outputs of ``crop`` (at ``size``) and the landmarks read from them
        (crop frame; flip-averaged when :attr:`flip` is set)."""
        if self.flip:
            dense, mirrored = self.predict_crop_and_mirror(crop, size)
            return dense, self.read_landmarks(dense, mirrored)
        dense = self.predict_crop(crop, size)
        return dense, self.read_landmarks(dense)

    def initialise(self, image, bounding_box):
        """Landmarks of ``self.markup`` (image frame) and per-landmark confidence."""
        crop, crop_to_image = self._crop(image, bounding_box)
        _, (pts, conf, _) = self._predict_landmarks(crop, self.field_size)
        return crop_to_image.apply(PointCloud(pts, copy=False)), conf

    def dense(self, image, bounding_box, frame="crop"):
        """The dense outputs as menpo images.

        Parameters
        ----------
        image : `menpo.image.Image`
        bounding_box : `PointCloud`
        frame : ``"crop"`` or ``"image"``
            Return the maps on the network's crop (``S x S``) or warped back onto the
            image (pixels outside the crop are background).

        Returns
        -------
        `dict` with ``"u"``, ``"v"``, ``"depth"`` (`MaskedImage`, masked to the face),
        ``"mask"`` (`BooleanImage`), ``"face_prob"`` (`Image`), ``"parts"`` (`Image`
        of part labels 0..8, names in ``"part_names"``), ``"crop"`` (the crop the
        network saw), ``"crop_to_image"`` (transform), ``"landmarks"`` (`PointCloud` of
        ``self.markup`` in the same frame as the maps; flip-averaged when :attr:`flip`
        is set, the maps are the unmirrored crop's; read from the :attr:`field_size`
        field when it is set, so they are the landmarks :meth:`initialise` returns),
        ``"confidence"`` and ``"visible"`` (per landmark).
        """
        from menpo.image import BooleanImage, Image, MaskedImage

        if frame not in ("crop", "image"):
            raise ValueError(f"frame: expected 'crop' or 'image', got {frame!r}")
        crop, crop_to_image = self._crop(image, bounding_box)
        if self.field_size:  # full-size maps, landmarks as initialise() reads them
            d = self.predict_crop(crop)
            pts, conf, vis = self._predict_landmarks(crop, self.field_size)[1]
        else:
            d, (pts, conf, vis) = self._predict_landmarks(crop)
        mask = d["face_prob"] >= 0.5
        parts = self.template.parts_from_uv(d["u"], d["v"]) * mask
        maps = {
            "u": d["u"],
            "v": d["v"],
            "depth": d.get("depth", np.zeros_like(d["u"])),
            "face_prob": d["face_prob"],
            "parts": parts.astype(np.float64),
        }
        if frame == "image":
            to_crop = crop_to_image.pseudoinverse()
            shape = image.shape
            warped = {}
            for k, arr in maps.items():
                order = 0 if k == "parts" else 1
                warped[k] = (
                    Image(arr[None])
                    .warp_to_shape(shape, to_crop, order=order)
                    .pixels[0]
                )
            inside = Image(np.ones((1,) + mask.shape)).warp_to_shape(
                shape, to_crop, order=0
            )
            maps = warped
            mask = (maps["face_prob"] >= 0.5) & (inside.pixels[0] > 0.5)
            maps["parts"] = maps["parts"] * mask
        bmask = BooleanImage(mask.copy())
        out = {
            k: MaskedImage(maps[k][None].astype(np.float64), mask=bmask.copy())
            for k in ("u", "v", "depth")
        }
        out["mask"] = bmask
        out["face_prob"] = Image(maps["face_prob"][None])
        out["parts"] = Image(np.rint(maps["parts"])[None].astype(np.float64))
        out["part_names"] = list(self.template.part_names)
        out["crop"] = crop
        out["crop_to_image"] = crop_to_image
        lms = crop_to_image.apply(PointCloud(pts, copy=False))
        out["landmarks"] = lms if frame == "image" else PointCloud(pts)
        out["confidence"] = conf
        out["visible"] = vis
        return out

    def __str__(self):
        pca = ""
        if self.pca:
            model = self.pca_models[self.markup]
            n = model.n_components if self.n_components is None else self.n_components
            pca = f", PCA ({self.markup}, {min(int(n), model.n_components)} components)"
        flip = ", flip-averaged" if self.flip else ""
        field = f", from a {self.field_size} px field" if self.field_size else ""
        return (
            f"DenseRegInitialiser '{self.name}': {self.runner}; read-out {self.markup} "
            f"landmarks{field}, UV radius {self.radius}{pca}{flip}"
        )


def from_fitter_dir(path, **overrides):
    """Registry entry point: a :class:`DenseRegInitialiser` from a fitter folder."""
    return DenseRegInitialiser.from_fitter_dir(path, **overrides)
