"""Helpers shared by the learned models at inference time.

- :func:`torch_threads`: run a block with a given number of torch intra-op threads and
  restore the caller's setting afterwards (small networks on a busy 2-core machine are
  fastest, and most predictable, with one thread);
- :func:`network_from_weights`: build a network from the configuration stored in a model
  file's header and load its tensors, with one clear :class:`WeightsError` when they do not
  fit or hold NaN/infinite values.
"""

import contextlib

import torch

from menpo_densereg.fitting.weights import WeightsError

__all__ = ["torch_threads", "network_from_weights"]


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
