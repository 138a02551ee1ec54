"""Penalties on the weights: L2 (weight decay), L1 (sparsity) and L1's proximal step.

Conventions follow the lecture slides (seed 004): P_L2 = ½·λ·Σw², P_L1 = λ·Σ|w|, and biases
are left out of the penalty (`decay_groups`).
"""
import torch
from torch import nn

from .validate import check_range

__all__ = ["l1_penalty", "l2_penalty", "decay_groups", "soft_threshold"]


def _tensors(params):
    if isinstance(params, nn.Module):
        return list(params.parameters())
    if isinstance(params, torch.Tensor):
        return [params]
    return list(params)


def l2_penalty(params, lam):
    """½·λ·Σ w² over every tensor in `params` (a module, a tensor or an iterable of tensors)."""
    check_range("lam", lam)
    return 0.5 * lam * sum((w * w).sum() for w in _tensors(params))


def l1_penalty(params, lam):
    """λ·Σ |w| over every tensor in `params`."""
    check_range("lam", lam)
    return lam * sum(w.abs().sum() for w in _tensors(params))


_NO_DECAY_TYPES = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm)


def decay_groups(model, weight_decay):
    """Optimizer parameter groups: weights decay, biases and normalization parameters do not.

    A bias only shifts a unit and γ/β of a norm layer set its scale and offset; shrinking them
    toward 0 does not simplify the function, it just fights the normalization. Any 1-D parameter
    is treated as such (normkit's own norm layers hold 1-D γ, β too).
    """
    check_range("weight_decay", weight_decay)
    decay, no_decay, seen = [], [], set()
    for module in model.modules():
        is_norm = isinstance(module, _NO_DECAY_TYPES) or type(module).__module__.startswith("normkit")
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:     # shared (tied) parameters: once only
                continue
            seen.add(id(p))
            (no_decay if is_norm or name.endswith("bias") or p.dim() <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def soft_threshold(w, t):
    """sign(w)·max(|w| − t, 0): the proximal step of t·|w|. Small weights become exactly 0."""
    check_range("t", t)
    return torch.sign(w) * torch.clamp(w.abs() - t, min=0)
