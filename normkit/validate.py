"""Input checks shared by every normkit module.

A bad argument raises a ValueError that names the argument, the value it got and what was
expected, before any computation: never a traceback from deep inside torch.
"""
import numbers

import torch

__all__ = ["check_range", "check_int", "check_ndim", "check_numel", "check_groups"]


def check_range(name, value, lo=0.0, hi=None):
    """A real number in [lo, hi] (hi=None: no upper bound); NaN is refused."""
    # numbers.Real: also numpy scalars (np.float32(1e-5)), which torch takes as well
    if not isinstance(value, numbers.Real) or value != value or value < lo or (hi is not None and value > hi):
        expected = f"a number in [{lo}, {hi}]" if hi is not None else f"a number >= {lo}"
        raise ValueError(f"{name}={value!r}: expected {expected}")


def check_int(name, value, lo=1, hi=None, what=""):
    """An int in [lo, hi]; `what` says what it counts, e.g. "training set size"."""
    if not isinstance(value, int) or value < lo or (hi is not None and value > hi):
        note = f" ({what})" if what else ""
        if lo == 1 and hi is None:
            raise ValueError(f"{name}={value!r}: expected a positive int{note}")
        bounds = f"[{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise ValueError(f"{name}={value!r}: expected an int in {bounds}{note}")


def check_ndim(input, min_ndim, what):
    """A tensor with at least `min_ndim` dims; `what` describes the expected shape."""
    if not isinstance(input, torch.Tensor):
        raise ValueError(f"input: expected a torch.Tensor {what}, got {type(input).__name__}")
    if input.dim() < min_ndim:
        raise ValueError(f"input: expected {what}, got shape {tuple(input.shape)}")


def check_numel(name, tensor, n, what):
    """None, or a tensor of n elements (one per `what`)."""
    if tensor is not None and tensor.numel() != n:
        raise ValueError(f"{name}: expected {n} elements (one per {what}), got shape {tuple(tensor.shape)}")


def check_groups(num_groups, num_channels):
    """A positive divisor of the channel count."""
    if not isinstance(num_groups, int) or num_groups < 1 or num_channels % num_groups:
        raise ValueError(f"num_groups={num_groups!r}: expected a positive divisor of "
                         f"num_channels={num_channels}")
