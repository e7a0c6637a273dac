"""Helpers shared by the learned models at inference time.

- :func:`torch_threads`: run a block with a given number of torch intra-op threads and
  restore the caller's setting afterwards (small networks on a busy 2-core machine are
  fastest, and most predictable, with one thread);
- :func:`network_from_weights`: build a network from the configuration stored in a model
  file's header and load its tensors, with one clear :class:`WeightsError` when they do not
  fit or hold NaN/infinite values;
- :class:`FrozenGraphs` / :func:`frozen_graphs`: run a network's inference through traced,
  frozen TorchScript graphs (batch norm folded into the convolutions, weights pre-packed,
  no Python between the ops), checked against the eager network when built.
"""

import contextlib
import os
import warnings
import weakref

import torch
from torch.nn.modules import module as _torch_module

from menpo_densereg.fitting.weights import WeightsError

__all__ = ["torch_threads", "network_from_weights", "FrozenGraphs", "frozen_graphs"]

#: set to ``0`` to run every network eagerly (no TorchScript graphs)
GRAPHS_ENV = "MENPO_DENSEREG_GRAPHS"


@contextlib.contextmanager
def torch_threads(n):
    """Use ``n`` torch threads inside the block (`None` or 0 leaves torch's setting)."""
    before = torch.get_num_threads()
    change = bool(n) and int(n) != before
    if change:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        if change:
            torch.set_num_threads(before)


def network_from_weights(path, tensors, header, build, what, prefix="net."):
    """Build ``build(header["config"]["net"])`` and load the ``prefix`` tensors into it.

    Parameters
    ----------
    path : `Path`
        The model file (named in errors).
    tensors, header : as returned by :func:`menpo_densereg.fitting.weights.load_weights`
    build : callable ``dict -> torch.nn.Module``
    what : `str`
        The network's name for error messages (``"DenseReg"``, ``"DeCaFA"``...).

    Returns
    -------
    net : `torch.nn.Module` in eval mode

    Raises
    ------
    WeightsError
    """
    try:
        net = build(header.get("config", {})["net"])
    except (KeyError, TypeError, ValueError) as e:
        raise WeightsError(
            f"{path}: bad {what} configuration in header ({e})"
        ) from None
    state = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    for k, v in state.items():  # tensors that did not come through load_weights
        if (
            torch.is_tensor(v)
            and v.is_floating_point()
            and not bool(v.isfinite().all())
        ):
            raise WeightsError(
                f"{path}: {what} tensor {k!r} holds NaN or infinite values; the model "
                "is unusable"
            )
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise WeightsError(
            f"{path}: tensors do not match the {what} network ({first})"
        ) from None
    return net.eval()


def graphs_enabled():
    """Whether :class:`FrozenGraphs` builds graphs (environment variable
    ``MENPO_DENSEREG_GRAPHS``, default on; ``0``, ``false``, ``no`` or ``off`` turn it
    off)."""
    value = os.environ.get(GRAPHS_ENV, "1").strip().lower()
    return value not in ("0", "false", "no", "off")


def _signature(t):
    """What a graph is specialised on: shape, dtype and memory layout of a (CPU)
    input."""
    layout = (
        "channels_last"
        if t.dim() == 4
        and not t.is_contiguous()
        and t.is_contiguous(memory_format=torch.channels_last)
        else "strided"
    )
    return tuple(t.shape), t.dtype, layout


def _outputs_match(a, b, rtol=1e-4, atol=1e-5):
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if x.shape != y.shape or x.dtype != y.dtype:
            return False
        if x.is_floating_point():
            scale = float(y.abs().max()) if y.numel() else 0.0
            if not torch.allclose(x, y, rtol=rtol, atol=atol * max(1.0, scale)):
                return False
        elif not torch.equal(x, y):
            # integer outputs (argmax bins) may flip where two scores tie to rounding
            if (x != y).float().mean() > 1e-3:
                return False
    return True


def _global_hooks():
    """Whether global forward hooks are registered (a graph would not call them)."""
    m = _torch_module
    return bool(m._global_forward_hooks or m._global_forward_pre_hooks)


def _tree_state(modules):
    """``(state, hooks)`` of a network's modules in one pass: ``state`` changes when a
    parameter or buffer is updated in place (version counters) or replaced, or when a
    submodule is replaced (its parent's children); ``hooks``: a forward hook watches
    one of them."""
    state = []
    hooks = False
    for m in modules:
        if m._forward_hooks or m._forward_pre_hooks:
            hooks = True
        state.extend(map(id, m._modules.values()))
        for t in m._parameters.values():
            if t is not None:
                state.append((id(t), t._version))
        for t in m._buffers.values():
            if t is not None:
                state.append((id(t), t._version))
    return tuple(state), hooks


class FrozenGraphs:
    """Run a network through traced, frozen TorchScript graphs, one per input signature.

    Small networks on a CPU spend much of their time between operators: batch-norm
    layers after every convolution, weights re-laid-out at every call, Python dispatch of
    a few hundred modules. :func:`torch.jit.freeze` of a trace folds the batch norms into
    the convolutions, pre-packs the weights and runs the ops without Python. This costs a
    trace the first time an input signature (shape, dtype, memory layout) is seen.

    Every graph is checked when it is built: it runs on the first input beside the eager
    module, and the outputs must agree (floating outputs to a relative 1e-4). A graph
    that cannot be traced or does not agree is not used: that signature runs eagerly,
    with one warning. The eager module also runs when the network is in training mode,
    when an input needs gradients, for non-CPU inputs, while forward hooks are
    registered on it (a graph would not call them), or when ``MENPO_DENSEREG_GRAPHS=0``. Graphs are dropped and rebuilt when a parameter or
    buffer of the network changes (a training step, ``load_state_dict``): their weights
    are frozen copies.

    Parameters
    ----------
    net : `torch.nn.Module`
        The network (held by a weak reference: the graphs do not keep it alive).
    make_module : callable ``net -> torch.nn.Module``
        Wraps ``net`` into the module that is traced: its ``forward(*tensors)`` returns
        a `tuple` of tensors (e.g. the network's outputs and their decoding).
    what : `str`
        The network's name in warnings.
    """

    def __init__(self, net, make_module, what="network"):
        self._net = weakref.ref(net)
        self.make_module = make_module
        self.what = what
        self._graphs = {}
        self._state = None
        self._modules = None  # net.modules(), listed again when the tree changes

    @property
    def net(self):
        net = self._net()
        if net is None:
            raise RuntimeError(f"{self.what}: the network no longer exists")
        return net

    def _scan(self, net):
        """``(state, hooks)`` of the network (:func:`_tree_state`), from the module
        list of the last call while the tree is unchanged (listing the modules anew
        costs more than the scan)."""
        if self._modules is not None:
            state, hooks = _tree_state(self._modules)
            if state == self._state:
                return state, hooks
        # first call, changed weights or a changed tree: list the modules again
        self._modules = list(net.modules())
        return _tree_state(self._modules)

    def _eager(self, net, inputs):
        return (
            not graphs_enabled()
            or net.training
            or any(t.requires_grad and torch.is_grad_enabled() for t in inputs)
            or any(t.device.type != "cpu" for t in inputs)
            or _global_hooks()
        )

    def __call__(self, *inputs):
        net = self.net
        graph = None
        if not self._eager(net, inputs):
            state, hooks = self._scan(net)
            if not hooks:
                if state != self._state:
                    self._graphs.clear()
                    self._state = state
                key = tuple(_signature(t) for t in inputs)
                if key not in self._graphs:
                    self._graphs[key] = self._build(net, inputs)
                graph = self._graphs[key]
        if graph is None:  # eager: see the class docstring for when
            return tuple(self.make_module(net)(*inputs))
        return tuple(graph(*inputs))

    def _build(self, net, inputs):
        """A checked frozen graph for inputs like ``inputs``, or `None`."""
        module = self.make_module(net).eval()
        with torch.inference_mode(False), torch.no_grad():
            # inference-mode tensors cannot be traced: trace on normal copies
            example = tuple(t.clone() for t in inputs)
            try:
                with warnings.catch_warnings():
                    # shape arithmetic becomes constants: that is what the key is for
                    warnings.simplefilter("ignore", torch.jit.TracerWarning)
                    # torch marks TorchScript deprecated in favour of torch.compile,
                    # which needs a C++ compiler at run time; should trace or freeze
                    # go away, the except below falls back to eager
                    warnings.simplefilter("ignore", DeprecationWarning)
                    traced = torch.jit.trace(module, example, check_trace=False)
                    graph = torch.jit.freeze(traced.eval())
                reference = tuple(module(*example))
                for _ in range(2):  # the profiling executor optimises on the 2nd run
                    out = tuple(graph(*example))
                ok = _outputs_match(out, reference)
                error = "its outputs differ from the eager network's"
            except Exception as e:  # any tracing failure: run eagerly instead
                ok, error = False, f"{type(e).__name__}: {e}"
        if not ok:
            warnings.warn(
                f"{self.what}: no TorchScript graph for inputs "
                f"{[tuple(t.shape) for t in inputs]} ({error}); running eagerly",
                RuntimeWarning,
                stacklevel=3,
            )
            return None
        return graph

    def __len__(self):
        return sum(g is not None for g in self._graphs.values())

    def __str__(self):
        return (
            f"FrozenGraphs of {self.what}: {len(self)} graph(s) built, "
            f"{'on' if graphs_enabled() else 'off'} ({GRAPHS_ENV})"
        )


_GRAPHS = weakref.WeakKeyDictionary()


def frozen_graphs(net, key, make_module, what="network"):
    """The :class:`FrozenGraphs` of ``make_module(net)``, kept with ``net`` under ``key``.

    One per network and ``key`` (e.g. the decoding options baked into the wrapper), so
    every fitter sharing a network shares its graphs; they go when ``net`` goes.
    """
    per_net = _GRAPHS.setdefault(net, {})
    if key not in per_net:
        per_net[key] = FrozenGraphs(net, make_module, what)
    return per_net[key]
