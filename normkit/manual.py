"""Batch norm and layer norm by hand: forward returns a cache, backward takes it (CS231n style).

No autograd here: every gradient is written out. (N, D) inputs; batch norm averages over the N
rows of each column, layer norm over the D columns of each row.

Deriving the backward once (notebook 03). For one group of m values x_i with mean μ, variance σ²
(biased), s = 1/√(σ² + ε), x̂_i = (x_i − μ)·s and y_i = γ x̂_i + β, let g_i = ∂L/∂x̂_i = γ·∂L/∂y_i.
x̂ depends on x_i directly and through μ and σ²:

    ∂L/∂σ² = Σ_j g_j (x_j − μ) · (−½) s³        = −½ s² Σ_j g_j x̂_j
    ∂L/∂μ  = −s Σ_j g_j   (+ a term with Σ_j (x_j − μ) = 0)
    ∂L/∂x_i = g_i s + ∂L/∂σ² · 2(x_i − μ)/m + ∂L/∂μ / m

Substituting x_i − μ = x̂_i / s collapses it to the compact form

    ∂L/∂x_i = s · ( g_i − mean_j(g_j) − x̂_i · mean_j(g_j x̂_j) ),

i.e. remove from the incoming gradient its mean and its component along x̂: the two directions
in which normalization makes the output insensitive to the input.
"""
import torch

__all__ = ["batch_norm_forward", "batch_norm_backward", "layer_norm_forward", "layer_norm_backward"]


def _check_2d(x, gamma, beta, axis):
    if not isinstance(x, torch.Tensor) or x.dim() != 2:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x: expected an (N, D) tensor, got {shape}")
    d = x.shape[1]
    for name, t in (("gamma", gamma), ("beta", beta)):
        if tuple(t.shape) != (d,):
            raise ValueError(f"{name}: expected shape ({d},), got {tuple(t.shape)}")
    if x.shape[axis] < 2 and axis == 0:
        raise ValueError(f"x: expected more than 1 row for batch statistics, got shape {tuple(x.shape)}")


def batch_norm_forward(x, gamma, beta, eps=1e-5):
    """y = γ·(x − μ_B)/√(σ²_B + ε) + β with μ_B, σ²_B over the batch (axis 0). Returns (y, cache)."""
    _check_2d(x, gamma, beta, 0)
    mu = x.mean(0)
    var = ((x - mu) ** 2).mean(0)            # biased: the batch is the whole population here
    inv_std = 1.0 / torch.sqrt(var + eps)
    xhat = (x - mu) * inv_std
    out = gamma * xhat + beta
    return out, (xhat, inv_std, gamma)


def batch_norm_backward(dout, cache):
    """Gradients (dx, dgamma, dbeta) of batch_norm_forward: the compact form in the module doc."""
    xhat, inv_std, gamma = cache
    dbeta = dout.sum(0)
    dgamma = (dout * xhat).sum(0)
    g = dout * gamma                         # ∂L/∂x̂
    dx = inv_std * (g - g.mean(0) - xhat * (g * xhat).mean(0))
    return dx, dgamma, dbeta


def layer_norm_forward(x, gamma, beta, eps=1e-5):
    """y = γ·(x − μ)/√(σ² + ε) + β with μ, σ² of each row (axis 1). Returns (y, cache)."""
    _check_2d(x, gamma, beta, 1)
    mu = x.mean(1, keepdim=True)
    var = ((x - mu) ** 2).mean(1, keepdim=True)
    inv_std = 1.0 / torch.sqrt(var + eps)
    xhat = (x - mu) * inv_std
    out = gamma * xhat + beta
    return out, (xhat, inv_std, gamma)


def layer_norm_backward(dout, cache):
    """Gradients of layer_norm_forward: the same formula with the means taken along each row."""
    xhat, inv_std, gamma = cache
    dbeta = dout.sum(0)
    dgamma = (dout * xhat).sum(0)
    g = dout * gamma
    dx = inv_std * (g - g.mean(1, keepdim=True) - xhat * (g * xhat).mean(1, keepdim=True))
    return dx, dgamma, dbeta
