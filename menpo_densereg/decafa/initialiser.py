"""DeCaFA as a landmark initialiser for menpo / menpofit.

:class:`DecafaInitialiser` crops the face (:func:`menpo_densereg.data.crop.crop_face`), runs
the DeCaFA cascade (:mod:`menpo_densereg.decafa.network`) and maps the last stage's
soft-argmax landmarks of the chosen markup back to the image. Any markup the model was
trained with can be returned (``markup=``); :meth:`DecafaInitialiser.attention_maps`
gives the attention maps of every stage for display. The per-landmark confidence is the
peak of the landmark's attention map relative to its maximum possible concentration (a
map that puts all its mass on a 3x3 neighbourhood scores ~1).

Model files are written by :func:`save_decafa` through :mod:`menpo_densereg.fitting.weights`
(kind ``"decafa"``): the network's tensors and its :class:`DecafaConfig` in the header.
A fitter folder holds ``recipe.toml`` (``[fitter] kind = "decafa"``, optional
``markup``) and ``weights.safetensors``.
"""

from pathlib import Path

import torch
from menpo.shape import PointCloud

from menpo_densereg.data.crop import crop_face, image_to_array
from menpo_densereg.decafa.network import (
    DecafaConfig,
    DecafaLastStage,
    DecafaNet,
    attention_peak_mass,
)
from menpo_densereg.fitting.base import Initialiser, check_image
from menpo_densereg.data.markups import (
    average_with_mirror,
    flip_permutation,
    get_markup,
)
from menpo_densereg.fitting.inference import (
    frozen_graphs,
    network_from_weights,
    torch_threads,
)
from menpo_densereg.fitting.weights import load_weights, save_weights

__all__ = [
    "DecafaInitialiser",
    "from_fitter_dir",
    "save_decafa",
    "load_decafa",
    "KIND",
]

KIND = "decafa"


def save_decafa(path, net, extra=None):
    """Save a :class:`DecafaNet` atomically (safetensors + JSON header)."""
    net = getattr(net, "module", net)
    tensors = {f"net.{k}": v for k, v in net.state_dict().items()}
    save_weights(path, tensors, KIND, config={"net": net.config.to_dict()}, extra=extra)


def load_decafa(path):
    """Load a DeCaFA model file.

    Returns
    -------
    net : :class:`DecafaNet` (eval mode, CPU)
    header : `dict`

    Raises
    ------
    WeightsError
        Missing, corrupt, foreign or inconsistent file (the message names it).
    """
    path = Path(path)
    tensors, header = load_weights(path, kind=KIND)
    net = network_from_weights(
        path,
        tensors,
        header,
        lambda d: DecafaNet(DecafaConfig.from_dict(d)),
        "DeCaFA",
    )
    return net, header


class DecafaInitialiser(Initialiser):
    """DeCaFA landmark initialiser.

    Parameters
    ----------
    net : :class:`DecafaNet`
    markup : `str`, optional
        Markup of the returned landmarks; one the model was trained with (default: the
        68-point markup when trained, else the finest markup).
    name : `str`, optional
    threads : `int` or `None`
        torch intra-op threads while the network runs (restored afterwards). The
        default 1 is fastest for this small network on a 2-core CPU and keeps it fast
        when another process is busy (with torch's default of one thread per core the
        threads spin-wait on each other: 60 → 0.5–2.4 faces/s under load); `None`
        leaves torch's setting alone.
    flip : `bool`
        Test-time flip averaging: the crop and its mirror image run as one batch of
        two and their landmarks are averaged (mirrored back and relabelled
        left/right; :func:`~menpo_densereg.data.markups.average_with_mirror`).
    """

    def __init__(self, net, markup=None, name=None, threads=1, flip=False):
        self.net = getattr(net, "module", net).eval()
        self.config = self.net.config
        trained = self.config.markups
        if markup is None:
            markup = "ibug68" if "ibug68" in trained else trained[0]
        m = get_markup(markup).name
        if m not in trained:
            raise ValueError(
                f"markup: {m!r} was not trained in this DeCaFA model (trained: {trained})"
            )
        self.markup = m
        self.name = name or "DeCaFA"
        self.threads = threads
        self.flip = bool(flip)
        if self.flip:
            flip_permutation(m)  # ValueError for a markup without one

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_weights(cls, path, **kwargs):
        """Load from a model file written by :func:`save_decafa`."""
        net, _ = load_decafa(path)
        return cls(net, **kwargs)

    @classmethod
    def from_fitter_dir(cls, path, **overrides):
        """Load a fitter folder (``recipe.toml`` + weights).

        ``[fitter] markup`` (or ``[inference] markup``) sets the returned markup,
        ``[inference] flip`` test-time flip averaging, ``[model] weights`` the weights
        file (default ``weights.safetensors``);
        ``overrides`` win over the recipe.
        """
        from menpo_densereg.fitting.recipes import load_recipe

        path = Path(path)
        recipe = load_recipe(path)
        kind = recipe.get("fitter", {}).get("kind")
        if kind != KIND:
            raise ValueError(f"{path}/recipe.toml: kind {kind!r} is not {KIND!r}")
        weights = path / recipe.get("model", {}).get("weights", "weights.safetensors")
        kwargs = {}
        markup = recipe.get("inference", {}).get(
            "markup", recipe["fitter"].get("markup")
        )
        if markup is not None:
            kwargs["markup"] = markup
        if "flip" in recipe.get("inference", {}):
            kwargs["flip"] = bool(recipe["inference"]["flip"])
        kwargs["name"] = recipe["fitter"].get("display_name") or recipe["fitter"].get(
            "name"
        )
        kwargs.update(overrides)
        return cls.from_weights(weights, **kwargs)

    def with_markup(self, markup):
        """A copy (sharing the network) that returns another trained markup."""
        return type(self)(
            self.net,
            markup=markup,
            name=self.name,
            threads=self.threads,
            flip=self.flip,
        )

    def for_markup(self, markup):
        """Same as :meth:`with_markup` (the benchmark's multi-markup hook)."""
        return self.with_markup(markup)

    @property
    def markups(self):
        """The markups this model was trained with (any can be returned)."""
        return list(self.config.markups)

    # ------------------------------------------------------------------ inference
    def _input(self, image, bounding_box):
        check_image(image)
        crop, crop_to_image = crop_face(
            image, bounding_box, self.config.input_size, margin=self.config.margin
        )
        grey = self.config.in_channels == 1
        x = torch.from_numpy(image_to_array(crop, grey=grey))[None]
        return x, crop, crop_to_image

    def _run(self, x, markups, all_stages):
        with torch_threads(self.threads), torch.inference_mode():
            return self.net(x, markups=markups, all_stages=all_stages)

    def _predict(self, x, markups):
        """``{markup: (points, confidence)}`` in the crop frame for one input ``x``
        (flip-averaged when :attr:`flip` is set)."""
        if self.flip:
            x = torch.cat([x, x.flip(-1)])
        names = tuple(
            self.config.markups
            if markups is None
            else [get_markup(m).name for m in markups]
        )
        run = frozen_graphs(
            self.net,
            ("last", names),
            lambda n: DecafaLastStage(n, names),
            "DeCaFA",
        )
        with torch_threads(self.threads), torch.inference_mode():
            flat = run(x)
            out = {m: flat[2 * i : 2 * i + 2] for i, m in enumerate(names)}
            result = {}
            for m, (coords, peak) in out.items():
                # confidence: the attention maps' peak 3x3 mass (attention_peak_mass)
                pts = coords[0].double().numpy()
                conf = peak[0].numpy()
                if self.flip:
                    perm = flip_permutation(m)
                    pts, _ = average_with_mirror(
                        pts, coords[1].double().numpy(), x.shape[-1], perm
                    )
                    conf = 0.5 * (conf + peak[1].numpy()[perm])
                result[m] = (pts, conf)
        return result

    def initialise(self, image, bounding_box):
        """Landmarks of ``self.markup`` (image frame) and per-point confidence."""
        x, _, crop_to_image = self._input(image, bounding_box)
        pts, confidence = self._predict(x, [self.markup])[self.markup]
        return crop_to_image.apply(PointCloud(pts)), confidence

    def initialise_all(self, image, bounding_box):
        """Every trained markup at once: ``{markup: PointCloud}`` in the image frame."""
        x, _, crop_to_image = self._input(image, bounding_box)
        return {
            m: crop_to_image.apply(PointCloud(p))
            for m, (p, _) in self._predict(x, None).items()
        }

    def attention_maps(self, image, bounding_box, markup=None):
        """Attention maps of every stage, for display.

        Returns
        -------
        stages : `list` of `dict` with ``"maps"`` ``(L, S, S)`` ndarray (the landmark
            attention maps of ``markup`` in the crop), ``"summary"`` ``(S, S)`` (their
            sum, peak-normalised), ``"landmarks_crop"`` ``(L, 2)`` and ``"landmarks"``
            (`PointCloud` in the image frame); plus ``crop`` (menpo Image) in each dict.
        """
        m = get_markup(markup or self.markup).name
        x, crop, crop_to_image = self._input(image, bounding_box)
        outs = self._run(x, [m], all_stages=True)
        stages = []
        for out in outs:
            coords, maps = out[m]
            maps = maps[0].numpy()
            summary = maps.sum(axis=0)
            pts = coords[0].double().numpy()
            stages.append(
                {
                    "maps": maps,
                    "summary": summary / max(float(summary.max()), 1e-12),
                    "landmarks_crop": pts,
                    "landmarks": crop_to_image.apply(PointCloud(pts)),
                    "crop": crop,
                }
            )
        return stages

    def __str__(self):
        flip = ", flip-averaged" if self.flip else ""
        return (
            f"DecafaInitialiser '{self.name}' -> {self.markup} landmarks "
            f"(trained: {', '.join(self.config.markups)}{flip}); {self.config}"
        )


def from_fitter_dir(path, **overrides):
    """Registry entry point: a :class:`DecafaInitialiser` from a fitter folder."""
    return DecafaInitialiser.from_fitter_dir(path, **overrides)
