"""The experiments of notebooks 03 (batch-norm math) and 04 (training vs inference).

Notebook 03 computes batch norm step by step on a real mini-batch, measures how much of a
sigmoid's near-linear region and of a ReLU's dead half a normalized unit falls into, and how
noisy the batch statistics are for a given batch size. Notebook 04 follows the running
statistics (an exponential moving average) during training, compares the two momentum
conventions, shows what a forgotten `model.eval()` does, and trains batch norm placed before
and after the activation.
"""
import copy
import math
from dataclasses import dataclass

import torch

from . import layers, models, train
from .validate import check_range

__all__ = ["BatchNormSteps", "batch_norm_steps", "hidden_preactivations", "activation_regions",
           "SIGMOID_LINEAR_HALF_WIDTH", "batch_stat_spread", "RunningTrace", "running_stats_trace",
           "keras_moving_average", "ema_steps_to_forget", "prediction_by_company", "placement_experiment"]


# ----------------------------------------------------------------------------- notebook 03
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


SIGMOID_LINEAR_HALF_WIDTH = 1.0
"""|y| < 1: where the sigmoid stays within 0.019 of its tangent ½ + y/4 (its 'linear region')."""


def activation_regions(y):
    """(fraction of y in the sigmoid's near-linear region |y| < 1, fraction with y < 0: ReLU's dead half)."""
    y = torch.as_tensor(y).flatten()
    linear = (y.abs() < SIGMOID_LINEAR_HALF_WIDTH).double().mean().item()
    dead = (y < 0).double().mean().item()
    return linear, dead


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


# ----------------------------------------------------------------------------- notebook 04
@dataclass
class RunningTrace:
    """What a BatchNorm1d layer saw and stored over `steps` training steps (one row per step)."""
    running_mean: torch.Tensor   # (steps + 1, C): row 0 is the initial value (0)
    running_var: torch.Tensor    # (steps + 1, C): row 0 is the initial value (1)
    batch_mean: torch.Tensor     # (steps, C)
    batch_var: torch.Tensor      # (steps, C), unbiased (divided by B − 1): what torch stores
    batch_var_biased: torch.Tensor  # (steps, C), divided by B: what it normalizes with


def _batches(n, batch_size, steps, generator):
    """Index tensors of `steps` mini-batches, reshuffled every epoch (as normkit.train.fit does)."""
    perm, pos = torch.randperm(n, generator=generator), 0
    for _ in range(steps):
        if pos + batch_size > n:
            perm, pos = torch.randperm(n, generator=generator), 0
        yield perm[pos:pos + batch_size]
        pos += batch_size


def running_stats_trace(population, momentum=0.1, batch_size=32, steps=200, seed=0):
    """Feed mini-batches of `population` ((N,) or (N, C)) to a normkit.BatchNorm1d in training mode.

    momentum is PyTorch's (None = cumulative average). Records the layer's running_mean and
    running_var buffers after every step, and the statistics of each batch.
    """
    pop = torch.as_tensor(population)
    pop = pop.reshape(len(pop), -1)
    if not isinstance(batch_size, int) or not 2 <= batch_size <= len(pop):
        raise ValueError(f"batch_size={batch_size!r}: expected an int in [2, {len(pop)}]")
    bn = layers.BatchNorm1d(pop.shape[1], momentum=momentum, affine=False, dtype=pop.dtype)
    rm, rv, bm, bv, bvb = [bn.running_mean.clone()], [bn.running_var.clone()], [], [], []
    with torch.no_grad():
        for idx in _batches(len(pop), batch_size, steps, torch.Generator().manual_seed(seed)):
            batch = pop[idx]
            bn(batch)
            rm.append(bn.running_mean.clone())
            rv.append(bn.running_var.clone())
            bm.append(batch.mean(0))
            bv.append(batch.var(0))
            bvb.append(batch.var(0, correction=0))
    return RunningTrace(*(torch.stack(t) for t in (rm, rv, bm, bv, bvb)))


def keras_moving_average(values, momentum=0.99, init=0.0):
    """The seeds' and Keras' convention: moving ← momentum·moving + (1 − momentum)·value.

    values: (steps, ...) batch statistics. Returns (steps + 1, ...) with row 0 = init.
    PyTorch writes the same average as moving ← (1 − m)·moving + m·value, so m = 1 − momentum.
    """
    check_range("momentum", momentum, 0.0, 1.0)
    moving = torch.full_like(values[0], init)
    out = [moving]
    for value in values:
        moving = momentum * moving + (1 - momentum) * value
        out.append(moving)
    return torch.stack(out)


@torch.no_grad()
def prediction_by_company(model, x0, label, companions):
    """Probability of class `label` for the single input x0, sitting in different batches.

    companions: list of (k, ...) tensors; batch i is [x0, *companions[i]]. Returns two lists,
    (probabilities in training mode, probabilities in eval mode). Runs on a copy of the model,
    because a forward pass in training mode also overwrites the running statistics.
    """
    model = copy.deepcopy(model)
    out = {}
    for mode in (True, False):
        model.train(mode)
        probs = []
        for others in companions:
            batch = torch.cat([x0.unsqueeze(0), others])
            probs.append(model(batch).softmax(1)[0, label].item())
        out[mode] = probs
    return out[True], out[False]


def placement_experiment(data, seeds=(0, 1, 2), sizes=(64, 32, 32, 10), activation="relu",
                         steps=100, batch_size=32, lr=0.1):
    """Train the same MLP with BN before and with BN after the activation, once per seed.

    Before (Ioffe & Szegedy; seed 004): Linear(no bias) → BN → act. After (seed 000):
    Linear → act → BN. Returns {"before": [test accuracy per seed], "after": [...]}.
    """
    out = {"before": [], "after": []}
    for seed in seeds:
        for name, after in (("before", False), ("after", True)):
            torch.manual_seed(seed)
            model = models.mlp(list(sizes), activation, norm="batch", norm_after_activation=after)
            hist = train.fit(model, data, steps=steps, batch_size=batch_size, lr=lr, eval_every=steps,
                             seed=seed)
            out[name].append(hist.final_test_acc)
    return out


def ema_steps_to_forget(momentum, fraction=0.01):
    """Steps until the initial value's weight (1 − momentum)^k falls below `fraction` (PyTorch's momentum)."""
    check_range("momentum", momentum, 0.0, 1.0)
    if momentum == 0:
        return math.inf
    if momentum == 1:
        return 1
    return math.ceil(math.log(fraction) / math.log(1 - momentum))
