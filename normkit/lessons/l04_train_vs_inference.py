"""Notebook 04 (training vs inference): batch norm's running statistics and what eval mode uses.

- `running_stats_trace` follows a BatchNorm1d's running_mean / running_var buffers (an
  exponential moving average) during training, with the batch statistics (`RunningTrace`);
- `keras_moving_average`: the seeds' and Keras' momentum convention (moving ← m·moving + (1 − m)·value),
  PyTorch's with m = 1 − momentum; `ema_steps_to_forget`: how long the initial value still weighs;
- `prediction_by_company`: what a forgotten `model.eval()` does (one input's prediction in
  different batches, training vs eval mode), drawn by `plot_company`;
- `batch_norm_of_one`: what the training formula does to a batch of one example;
- `placement_experiment`: batch norm before vs after the activation, several seeds trained at once
  (`models.Stack`) through `train.fit` with `train.stacked_cross_entropy`, with the
  share of dead units;
- the exercise checkers `check_running_mean`, `check_running_var`, `check_bn_inference`.
"""
import copy
import itertools
import math
import textwrap
from dataclasses import dataclass

import matplotlib.pyplot as plt
import torch

from .. import check, layers, models, train
from ..validate import check_int, check_range

__all__ = ["RunningTrace", "running_stats_trace", "keras_moving_average", "ema_steps_to_forget",
           "prediction_by_company", "batch_norm_of_one", "placement_experiment",
           "check_running_mean", "check_running_var", "check_bn_inference", "plot_company"]


# ----------------------------------------------------------------------------- running statistics
@dataclass
class RunningTrace:
    """What a BatchNorm1d layer saw and stored over `steps` training steps (one row per step)."""
    running_mean: torch.Tensor   # (steps + 1, C): row 0 is the initial value (0)
    running_var: torch.Tensor    # (steps + 1, C): row 0 is the initial value (1)
    batch_mean: torch.Tensor     # (steps, C)
    batch_var: torch.Tensor      # (steps, C), unbiased (divided by B − 1): what torch stores
    batch_var_biased: torch.Tensor  # (steps, C), divided by B: what it normalizes with


def running_stats_trace(population, momentum=0.1, batch_size=32, steps=200, seed=0):
    """Feed mini-batches of `population` ((N,) or (N, C)) to a normkit.BatchNorm1d in training mode.

    momentum is PyTorch's (None = cumulative average). The batches come from `train.batches`
    (reshuffled every epoch, as in `train.fit`). Records the layer's running_mean and
    running_var buffers after every step, and the statistics of each batch.
    """
    pop = torch.as_tensor(population)
    pop = pop.reshape(len(pop), -1)
    check_int("batch_size", batch_size, 2, len(pop))
    bn = layers.BatchNorm1d(pop.shape[1], momentum=momentum, affine=False, dtype=pop.dtype)
    rm, rv, bm, bv, bvb = [bn.running_mean.clone()], [bn.running_var.clone()], [], [], []
    order = train.batches(len(pop), batch_size, torch.Generator().manual_seed(seed))
    with torch.no_grad():
        for idx in itertools.islice(order, steps):
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


def ema_steps_to_forget(momentum, fraction=0.01):
    """Steps until the initial value's weight (1 − momentum)^k falls below `fraction` (PyTorch's momentum)."""
    check_range("momentum", momentum, 0.0, 1.0)
    if momentum == 0:
        return math.inf
    if momentum == 1:
        return 1
    return math.ceil(math.log(fraction) / math.log(1 - momentum))


# ----------------------------------------------------------------------------- forgetting model.eval()
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


# ----------------------------------------------------------------------------- a batch of one
def batch_norm_of_one(x, gamma, beta, eps=1e-5):
    """Batch norm's training formula applied by hand to a batch of ONE example (normkit and torch refuse it).

    x: (1, C). Returns (σ²_B, y, ∂L/∂x) with L = Σ y·w for a fixed random w: σ²_B = 0, so the
    denominator is √ε, not 0; y = β whatever x is; and no gradient reaches x.
    """
    x = x.detach().clone().requires_grad_(True)
    var = x.var(0, correction=0)
    y = gamma * (x - x.mean(0)) / torch.sqrt(var + eps) + beta
    w = torch.randn(y.shape, generator=torch.Generator().manual_seed(0), dtype=y.dtype)
    (grad,) = torch.autograd.grad((y * w).sum(), x)
    return var.detach(), y.detach(), grad


# ----------------------------------------------------------------------------- BN before or after the activation
def placement_experiment(data, seeds=(0, 1, 2), sizes=(64, 32, 32, 10), activation="relu",
                         steps=100, batch_size=32, lr=0.1):
    """Train the same MLP with BN before and with BN after the activation, once per seed.

    Before (Ioffe & Szegedy; seed 004): Linear(no bias) → BN → act. After (seed 000):
    Linear → act → BN. A seed fixes a member's initial weights (the same for both placements) and
    its order of the training examples. All members of a placement train at once (`models.Stack`,
    through `train.fit`). Returns {"before": [test accuracy per seed], "after": [...],
    "dead_before": [...], "dead_after": [...]}: dead = the fraction of hidden units whose
    activation is 0 on every training example.
    """
    n = len(data.x_train)
    order = torch.stack([torch.randperm(n, generator=torch.Generator().manual_seed(s)) for s in seeds])
    # member k's i-th training example is x_train[order[k, i]]: the members see their own batches
    own = type(data)(data.x_train[order].transpose(0, 1), data.y_train[order].t(), data.x_test, data.y_test)
    out = {}
    for name, after in (("before", False), ("after", True)):
        members = []
        for seed in seeds:
            torch.manual_seed(seed)
            members.append(models.mlp(list(sizes), activation, norm="batch", norm_after_activation=after))
        stack = models.Stack(members)
        # fit's own test accuracy is the members' mean; each member's is below
        train.fit(stack, own, steps=steps, batch_size=batch_size, lr=lr, eval_every=None, eval_train=False,
                  seed=seeds[0], loss_fn=train.stacked_cross_entropy)
        out[name] = _accuracies(stack, data)
        out[f"dead_{name}"] = _dead_units(stack, data.x_train)
    return out


@torch.no_grad()
def _accuracies(stack, data):
    """Each member's test accuracy (eval mode)."""
    stack.eval()
    right = stack(data.x_test).argmax(1) == data.y_test[:, None]
    stack.train()
    return right.double().mean(0).tolist()


@torch.no_grad()
def _dead_units(stack, x):
    """Each member's fraction of hidden units whose activation is 0 on every example of x (eval mode)."""
    stack.eval()
    acts = []
    stack(x, acts)
    stack.train()
    return torch.cat([(a == 0).all(0) for a in acts], 1).double().mean(1).tolist()


# ----------------------------------------------------------------------------- exercise checkers
def _torch_bn_after_one_step(running_mean, running_var, batch, momentum):
    bn = torch.nn.BatchNorm1d(batch.shape[1], momentum=momentum, affine=False, dtype=batch.dtype)
    bn.running_mean.copy_(running_mean)
    bn.running_var.copy_(running_var)
    bn.train()(batch)
    return bn


def plot_company(company, p_train, p_eval, label):
    """Bars of P(class `label`) for one test image in each batch of `company` (names → the rest of the
    batch), in training mode (hatched) and in eval mode (`prediction_by_company`); returns the figure."""
    fig, ax = plt.subplots(figsize=(10, 3.9), layout="constrained")
    pos = torch.arange(len(company))
    ax.bar(pos - 0.2, p_train, 0.4, hatch="//", edgecolor="white", label="model.train() (forgot eval)")
    ax.bar(pos + 0.2, p_eval, 0.4, label="model.eval()")
    ax.set_xticks(pos, [textwrap.fill(name, 14) for name in company])
    ax.set(title=f"The same test image (a '{label}') in different batches", xlabel="the rest of the batch",
           ylabel=f"P(class {label})", ylim=(0, 1.3))
    ax.set_yticks([0, 0.25, 0.5, 0.75, 1])
    ax.legend(loc="upper center", ncols=2)
    return fig


def check_running_mean(fn):
    """Exercise: fn(running_mean, batch, momentum) -> the updated running mean (PyTorch's momentum)."""
    batch, rm, rv = check.bn_inputs(7, n=8)
    rv = rv.abs() + 0.5
    bn = _torch_bn_after_one_step(rm, rv, batch, 0.1)
    return check.exercise("running_mean", fn, (rm.clone(), batch.clone(), 0.1), bn.running_mean,
                          "torch.nn.BatchNorm1d(momentum=0.1).running_mean")


def check_running_var(fn):
    """Exercise: fn(running_var, batch, momentum) -> the updated running variance."""
    batch, rm, rv = check.bn_inputs(8, n=8)
    rv = rv.abs() + 0.5
    bn = _torch_bn_after_one_step(rm, rv, batch, 0.1)
    return check.exercise("running_var", fn, (rv.clone(), batch.clone(), 0.1), bn.running_var,
                          "torch.nn.BatchNorm1d(momentum=0.1).running_var")


def check_bn_inference(fn):
    """Exercise: fn(x, running_mean, running_var, gamma, beta, eps) -> y in eval mode."""
    x, gamma, beta = check.bn_inputs(9)
    rm = x.mean(0) + 0.3
    rv = x.var(0) * 1.2
    expected = torch.nn.functional.batch_norm(x, rm, rv, gamma, beta, training=False, eps=1e-5)
    return check.exercise("bn_inference", fn, (x.clone(), rm.clone(), rv.clone(), gamma, beta, 1e-5),
                          expected, "torch.nn.functional.batch_norm(training=False)")
