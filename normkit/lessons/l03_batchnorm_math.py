"""Notebook 03 (batch-norm math): batch norm computed step by step on a real mini-batch.

- `batch_norm_steps` (Ioffe & Szegedy's Algorithm 1 in four lines, returning `BatchNormSteps`:
  μ_B, σ²_B, x̂, y), on the pre-activations `hidden_preactivations` of a fresh Linear(64, n) layer;
  `skewness` and `kurtosis`: what standardizing leaves unchanged (the shape of a distribution);
- `activation_regions`: how much of a normalized unit falls into the sigmoid's near-linear region
  (|y| < `SIGMOID_LINEAR_HALF_WIDTH`) and where a ReLU outputs 0;
- dead ReLU units: `active_share` (per unit, the share of examples with output > 0), `dead_share`
  (units inactive on every example) and `dead_unit_experiment` (a layer with shifted biases, with and
  without batch norm, and the weight gradients its units get), drawn by `plot_active_shares`;
- `batch_stat_spread`: how noisy the batch statistics μ_B, σ²_B are for a given batch size, and
  `variance_spread`, what statistics predicts for σ²_B from the kurtosis;
- the exercise checkers `check_batch_norm_train`, `check_identity_params`, `check_batch_norm_backward`.
"""
from dataclasses import dataclass

import matplotlib.pyplot as plt
import torch

from torch.nn.functional import cross_entropy

from .. import check, functional
from ..validate import check_range

__all__ = ["BatchNormSteps", "batch_norm_steps", "hidden_preactivations", "skewness", "kurtosis",
           "activation_regions", "SIGMOID_LINEAR_HALF_WIDTH", "active_share", "dead_share",
           "dead_unit_experiment", "batch_stat_spread", "variance_spread",
           "check_batch_norm_train", "check_identity_params", "check_batch_norm_backward",
           "plot_active_shares"]


# ----------------------------------------------------------------------------- batch norm, step by step
@dataclass
class BatchNormSteps:
    """The intermediate values of one batch-norm forward pass, one column per feature."""
    mu: torch.Tensor      # μ_B   (D,)
    var: torch.Tensor     # σ²_B  (D,), biased: divided by m
    xhat: torch.Tensor    # x̂     (m, D), mean 0 and variance σ²/(σ² + ε) ≈ 1 per column
    y: torch.Tensor       # y = γ·x̂ + β   (m, D)


def batch_norm_steps(x, gamma=None, beta=None, eps=1e-5):
    """Batch norm of an (m, D) mini-batch, written as the four lines of Ioffe & Szegedy's Algorithm 1.

    Plain tensor primitives, so autograd can differentiate it (notebook 03 checks the
    hand-derived backward of normkit.manual against it). gamma, beta default to 1 and 0.
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or len(x) < 2:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x: expected an (m, D) mini-batch with m >= 2, got {shape}")
    check_range("eps", eps)
    gamma = torch.ones(x.shape[1], dtype=x.dtype) if gamma is None else gamma
    beta = torch.zeros(x.shape[1], dtype=x.dtype) if beta is None else beta
    mu = x.mean(0)                                   # μ_B  = 1/m Σ x_i
    var = ((x - mu) ** 2).mean(0)                    # σ²_B = 1/m Σ (x_i − μ_B)²
    xhat = (x - mu) / torch.sqrt(var + eps)          # x̂_i  = (x_i − μ_B) / √(σ²_B + ε)
    y = gamma * xhat + beta                          # y_i  = γ x̂_i + β
    return BatchNormSteps(mu, var, xhat, y)


def hidden_preactivations(x, n_units=4, seed=0):
    """z = x·Wᵀ + b of a freshly initialized nn.Linear(64, n_units): what a BN layer would see.

    x: (N, 64) digits. Returns z (N, n_units), no gradient.
    """
    torch.manual_seed(seed)
    layer = torch.nn.Linear(x.shape[1], n_units)
    with torch.no_grad():
        return layer(x)


def _moment_ratio(x, k):
    x = torch.as_tensor(x, dtype=torch.float64)
    c = x - x.mean(0)
    return (c ** k).mean(0) / (c ** 2).mean(0) ** (k / 2)


def skewness(x):
    """Skewness E[(x − μ)³]/σ³ of each column (0 for any symmetric distribution)."""
    return _moment_ratio(x, 3)


def kurtosis(x):
    """Kurtosis κ = E[(x − μ)⁴]/σ⁴ of each column (3 for a Gaussian; not the 'excess' κ − 3)."""
    return _moment_ratio(x, 4)


# ----------------------------------------------------------------------------- where normalized units land
SIGMOID_LINEAR_HALF_WIDTH = 1.0
"""|y| < 1: where the sigmoid stays within 0.019 of its tangent ½ + y/4 (its 'linear region')."""


def activation_regions(y):
    """(fraction of y in the sigmoid's near-linear region |y| < 1, fraction with y < 0, where ReLU outputs 0)."""
    y = torch.as_tensor(y).flatten()
    linear = (y.abs() < SIGMOID_LINEAR_HALF_WIDTH).double().mean().item()
    zero = (y < 0).double().mean().item()
    return linear, zero


# ----------------------------------------------------------------------------- dead ReLU units
def active_share(z):
    """Per unit (column of z (N, D)), the share of the N examples on which ReLU(z) > 0."""
    return (torch.as_tensor(z) > 0).double().mean(0)


def dead_share(z):
    """Share of the units (columns of z) that are inactive on *every* example: dead ReLUs."""
    return (active_share(z) == 0).double().mean().item()


def dead_unit_experiment(x, y, bias_shift=-0.5, n_units=100, seed=0):
    """A Linear(D, n_units) layer whose biases are shifted by `bias_shift` (a bad initialization),
    then ReLU, a linear read-out and cross-entropy on labels y, over the whole batch x.

    Returns {'default init', 'shifted', 'shifted + BN'}: (active_share per unit (n_units,),
    norm of each unit's weight gradient (n_units,)). 'default init' is the same layer unshifted;
    'shifted + BN' puts batch norm (γ = 1, β = 0, batch statistics) between the layer and the ReLU.
    """
    torch.manual_seed(seed)
    layer = torch.nn.Linear(x.shape[1], n_units)
    readout = torch.nn.Linear(n_units, int(y.max()) + 1)
    out = {}
    for name, shift, bn in (("default init", 0.0, False), ("shifted", bias_shift, False),
                            ("shifted + BN", bias_shift, True)):
        layer.zero_grad()
        z = layer(x) + shift
        if bn:
            z = functional.batch_norm(z, None, None, training=True)
        cross_entropy(readout(torch.relu(z)), y).backward()
        out[name] = (active_share(z.detach()), layer.weight.grad.norm(dim=1))
    return out


# ----------------------------------------------------------------------------- how noisy μ_B and σ²_B are
def batch_stat_spread(population, batch_sizes, n_batches=500, seed=0):
    """Draw `n_batches` mini-batches (without replacement) of each size from a 1-D population.

    Returns {B: (batch means (n_batches,), biased batch variances (n_batches,))}: the μ_B and
    σ²_B that batch norm would normalize each of those batches with.
    """
    population = torch.as_tensor(population).flatten()
    n, b_max = len(population), max(batch_sizes)
    if min(batch_sizes) < 2 or b_max > n:
        raise ValueError(f"batch_sizes={batch_sizes!r}: expected sizes in [2, {n}] (population size)")
    g = torch.Generator().manual_seed(seed)
    idx = torch.rand(n_batches, n, generator=g).argsort(1)[:, :b_max]   # one shuffle per batch
    draws = population[idx]
    return {b: (draws[:, :b].mean(1), draws[:, :b].var(1, correction=0)) for b in batch_sizes}


def plot_active_shares(dead):
    """For each setting of `dead_unit_experiment`, the share of digits on which each of the 100 units
    outputs > 0, units sorted by it (a flat line at 0: the dead units); returns the figure."""
    fig, ax = plt.subplots(figsize=(10, 3.3), layout="constrained")
    for (name, (active, _)), style in zip(dead.items(), ("s-", "x--", "o:")):
        ax.plot(range(1, 101), active.sort().values, style, ms=4, markevery=5, label=name)
    ax.axhline(0, color="0.5", lw=0.8)
    ax.set(title="Each unit: on how many of the 1,300 digits does it output > 0? (units sorted)",
           xlabel="unit (sorted by its share)", ylabel="share of digits, output > 0", ylim=(-0.03, 1))
    ax.legend(title="Linear(64, 100) → ReLU", loc="upper left")
    return fig


def variance_spread(kappa, batch_size):
    """Relative spread sd(σ²_B)/σ² of the biased batch variance of `batch_size` independent draws from
    a distribution with kurtosis `kappa`: (B−1)/B · √((κ − (B−3)/(B−1)) / B), ≈ √((κ−1)/B) for large B
    (√(2/B) for a Gaussian, κ = 3)."""
    b = torch.as_tensor(batch_size, dtype=torch.float64)
    return (b - 1) / b * ((kappa - (b - 3) / (b - 1)) / b).sqrt()


# ----------------------------------------------------------------------------- exercise checkers
def _images(seed):
    """A seeded (N, C, H, W) = (6, 3, 4, 5) float64 batch, each channel with its own mean and scale,
    and per-channel γ, β."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(6, 3, 4, 5, generator=g, dtype=torch.float64) * torch.tensor([0.5, 2.0, 1.0]).view(1, 3, 1, 1) \
        + torch.tensor([1.0, -2.0, 0.3]).view(1, 3, 1, 1)
    gamma = torch.rand(3, generator=g, dtype=torch.float64) + 0.5
    beta = torch.randn(3, generator=g, dtype=torch.float64)
    return x, gamma, beta


def check_batch_norm_train(fn):
    """Exercise: fn(x, gamma, beta, eps) -> y, training-mode batch norm of an (N, C, H, W) batch:
    one μ_B, σ²_B per channel, over the N images and all H·W positions."""
    x, gamma, beta = _images(3)
    expected = torch.nn.functional.batch_norm(x, None, None, gamma, beta, training=True, eps=1e-5)
    return check.exercise("batch_norm_train (N, C, H, W)", fn, (x.clone(), gamma, beta, 1e-5), expected,
                          "torch.nn.functional.batch_norm")


def check_identity_params(fn):
    """Exercise: fn(x, eps) -> (gamma, beta) that make batch norm return x unchanged."""
    x, _, _ = check.bn_inputs(4)
    eps = 1e-5
    expected = torch.cat([(x.var(0, correction=0) + eps).sqrt(), x.mean(0)])

    def both(x, eps):       # None (the notebook's stub) → "got None"; anything but a pair → "raised …"
        answer = fn(x, eps)
        if answer is None:
            return None
        gamma, beta = answer
        return torch.cat([torch.as_tensor(gamma, dtype=x.dtype).flatten(),
                          torch.as_tensor(beta, dtype=x.dtype).flatten()])
    return check.exercise("identity_params (γ then β)", both, (x.clone(), eps), expected,
                          "γ = √(σ²+ε), β = μ: batch norm returns its input")


def check_batch_norm_backward(fn):
    """Exercise: fn(dout, x, gamma, eps) -> dx, the input gradient of training-mode batch norm of an
    (N, C, H, W) batch (statistics per channel over N, H and W)."""
    x, gamma, beta = _images(5)
    dout = torch.randn(x.shape, generator=torch.Generator().manual_seed(6), dtype=x.dtype)
    xl = x.clone().requires_grad_(True)
    # (y·dout).sum(), not y.backward(dout): passing a gradient tensor makes torch import sympy (~1 s)
    (torch.nn.functional.batch_norm(xl, None, None, gamma, beta, training=True, eps=1e-5) * dout).sum().backward()
    return check.exercise("batch_norm_backward (N, C, H, W)", fn, (dout, x.clone(), gamma, 1e-5), xl.grad,
                          "autograd through torch.nn.functional.batch_norm")
