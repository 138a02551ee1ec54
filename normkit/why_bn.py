"""Experiments of notebook 09 (why batch norm works): learning rate, initialization, noisy BN, smoothness.

Every experiment is a small MLP on the 8×8 digits, trained with plain SGD for a few hundred steps,
with and without batch norm. `train_run` is the lean loop they share: it records the mini-batch
loss of every step and the final test accuracy, and stops as soon as the loss is not finite.
"""
import functools
import math
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.functional import cross_entropy

from . import data as _data
from . import models
from .validate import check_range
from .layers import BatchNorm1d
from .optim import SGD

__all__ = ["SIZES", "mlp", "Run", "train_run", "scale_init", "run_mlp", "lr_sweep", "init_sweep",
           "NoisyBatchNorm1d", "unit_drift", "noisy_bn_runs", "gradient_change", "Probe", "smoothness_run"]

SIZES = [64, 64, 64, 64, 10]          # the MLP of notebook 09: three hidden ReLU layers of 64


@dataclass
class Run:
    """One training run: mini-batch loss per step, final test accuracy, whether the loss blew up."""
    loss: list = field(default_factory=list)
    test_acc: float = float("nan")
    diverged: bool = False
    extra: list = field(default_factory=list)     # what a callback returned, one entry per call
    weight_norms: list = field(default_factory=list)  # ‖W‖ of each Linear layer at the end

    @property
    def final_loss(self):
        """Mean loss of the last 10 steps (inf if the run diverged)."""
        return float("inf") if self.diverged else sum(self.loss[-10:]) / len(self.loss[-10:])


def train_run(model, data, lr=0.1, steps=100, batch_size=64, optimizer=None, seed=0, callback=None,
              callback_every=10):
    """Train `model` on `data` (a data.Split) with SGD(lr) or `optimizer`; return a Run.

    optimizer: anything with zero_grad() and step(), e.g. normkit.optim.Adam or a torch.optim one.

    callback(model, x_batch, y_batch) is called every `callback_every` steps *before* the update;
    whatever it returns is appended to run.extra.
    """
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps={steps!r}: expected a positive int")
    n = len(data.x_train)
    if not isinstance(batch_size, int) or not 1 <= batch_size <= n:
        raise ValueError(f"batch_size={batch_size!r}: expected an int in [1, {n}]")
    check_range("lr", lr)
    opt = optimizer if optimizer is not None else SGD(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    run, perm, pos = Run(), torch.randperm(n, generator=gen), 0
    model.train()
    for step in range(steps):
        if pos + batch_size > n:
            perm, pos = torch.randperm(n, generator=gen), 0
        idx = perm[pos:pos + batch_size]
        pos += batch_size
        xb, yb = data.x_train[idx], data.y_train[idx]
        if callback is not None and step % callback_every == 0:
            run.extra.append(callback(model, xb, yb))
        loss = cross_entropy(model(xb), yb)
        if not math.isfinite(loss.item()) or loss.item() > 1e3:
            run.diverged = True
            return run
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        run.loss.append(loss.item())
    run.weight_norms = [m.weight.norm().item() for m in model.modules() if isinstance(m, nn.Linear)]
    model.eval()
    with torch.no_grad():
        run.test_acc = (model(data.x_test).argmax(1) == data.y_test).float().mean().item()
    return run


def scale_init(model, scale):
    """Multiply every Linear/Conv weight of `model` by `scale` (in place); return the model."""
    check_range("scale", scale)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                m.weight.mul_(scale)
    return model


def _norm_layer(norm):
    """None, "batch", or ("noisy", strength) -> what models.mlp takes as `norm`."""
    if isinstance(norm, tuple) and len(norm) == 2 and norm[0] == "noisy":
        return lambda width: NoisyBatchNorm1d(width, noise=norm[1])
    if norm in (None, "batch"):
        return norm
    raise ValueError(f"norm={norm!r}: expected None, 'batch' or ('noisy', strength)")


def mlp(norm=None, seed=0):
    """The MLP of notebook 09 (SIZES, ReLU; norm None, "batch" or ("noisy", strength)), He init.

    He (Kaiming) normal init, std √(2/fan_in), keeps the activations' scale through ReLU layers, so
    the network without BN starts well: the comparison is with a fair baseline, not a crippled one.
    """
    torch.manual_seed(seed)
    model = models.mlp(SIZES, norm=_norm_layer(norm))
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    return model


def run_mlp(norm=None, lr=0.1, scale=1.0, steps=100, seed=0):
    """One SGD run of mlp(norm) with its initial weights times `scale` (cached: sweeps share runs)."""
    return _run_mlp(norm, float(lr), float(scale), steps, seed)


@functools.lru_cache(maxsize=None)
def _run_mlp(norm, lr, scale, steps, seed):        # positional only: one cache key per run
    return train_run(scale_init(mlp(norm, seed), scale), _data.digits(), lr=lr, steps=steps, seed=seed)


def lr_sweep(lrs, norms=(None, "batch"), steps=100, seed=0):
    """{(norm, lr): Run} for the MLP with and without batch norm, same data, init and batches."""
    return {(norm, lr): run_mlp(norm, lr, 1.0, steps, seed) for norm in norms for lr in lrs}


def init_sweep(scales, norms=(None, "batch"), lr=0.1, steps=100, seed=0):
    """{(norm, scale): Run}: the He initialization multiplied by `scale`, then trained."""
    return {(norm, s): run_mlp(norm, lr, s, steps, seed) for norm in norms for s in scales}


class NoisyBatchNorm1d(BatchNorm1d):
    """Batch norm followed by a random scale and shift per unit, redrawn at every training step.

    Santurkar et al. 2018's "noisy BN": y = s ⊙ BN(x) + m with s = exp(noise·z₁), m = noise·z₂,
    z ~ N(0, 1) per unit. The next layer sees an input distribution that jumps at every step —
    far more internal covariate shift than without BN. In eval mode no noise is added.
    """

    def __init__(self, num_features, noise=1.0, **kwargs):
        super().__init__(num_features, **kwargs)
        check_range("noise", noise)
        self.noise = noise

    def forward(self, input):
        out = super().forward(input)
        if not self.training or self.noise == 0:
            return out
        s = torch.exp(self.noise * torch.randn(self.num_features, dtype=out.dtype))
        m = self.noise * torch.randn(self.num_features, dtype=out.dtype)
        return out * s + m


def unit_drift(model, layer, x):
    """15/50/85th percentiles of unit 0 of `model[layer]`'s output on x, in the current mode.

    In training mode that is what the next layer sees at this step (noise included); the running
    statistics this extra forward pass would update are restored.
    """
    captured, buffers = {}, [b.clone() for b in model.buffers()]
    hook = model[layer].register_forward_hook(lambda m, i, o: captured.__setitem__("o", o.detach()))
    with torch.no_grad():
        model(x)
        for b, b0 in zip(model.buffers(), buffers):
            b.copy_(b0)
    hook.remove()
    return torch.quantile(captured["o"][:, 0], torch.tensor([0.15, 0.5, 0.85])).tolist()


def noisy_bn_runs(lr=0.3, noise=0.5, steps=100, probe_every=5, seed=0):
    """Santurkar et al. 2018's experiment: standard vs BN vs noisy BN, same init and batches.

    Returns {"standard": Run, "batch norm": Run, "noisy batch norm": Run}; run.extra holds, every
    `probe_every` steps, the 15/50/85th percentiles of unit 0 at the input of the second ReLU
    (after the norm layer, noise included) on a fixed set of 256 training images.
    """
    data = _data.digits()
    probe = data.x_train[:256]
    out = {}
    for name, norm in (("standard", None), ("batch norm", "batch"), ("noisy batch norm", ("noisy", noise))):
        model = mlp(norm, seed)
        layer = 2 if norm is None else 4               # second Linear / second norm layer: before the ReLU
        out[name] = train_run(model, data, lr=lr, steps=steps, seed=seed, callback_every=probe_every,
                              callback=lambda m, x, y, layer=layer: unit_drift(m, layer, probe))
    return out


def gradient_change(f, w, step):
    """‖∇f(w) − ∇f(w − step·∇f(w))‖: how much the gradient changes along one gradient step.

    Small means the gradient we step along is still the gradient where we land ("predictive").
    f maps a tensor to a scalar tensor.
    """
    w = w.detach().requires_grad_(True)
    g, = torch.autograd.grad(f(w), w)
    w2 = (w - step * g).detach().requires_grad_(True)
    g2, = torch.autograd.grad(f(w2), w2)
    return (g2 - g).norm().item()


@dataclass
class Probe:
    """What the landscape looks like along the gradient at one step (Santurkar et al. 2018, Fig. 4)."""
    loss_min: float       # lowest loss over the probed step sizes
    loss_max: float       # highest loss over the probed step sizes
    grad_change: float    # max over step sizes of ‖∇L(w − η g) − ∇L(w)‖
    beta: float           # max over step sizes of ‖∇L(w − η g) − ∇L(w)‖ / ‖η g‖ ("effective β-smoothness")


def _probe(model, x, y, etas):
    params = [p for p in model.parameters() if p.requires_grad]
    buffers = [b.clone() for b in model.buffers()]
    g = torch.autograd.grad(cross_entropy(model(x), y), params)
    gnorm = torch.sqrt(sum((gi * gi).sum() for gi in g)).item()
    saved = [p.detach().clone() for p in params]
    losses, changes, betas = [], [], []
    for eta in etas:
        with torch.no_grad():
            for p, p0, gi in zip(params, saved, g):
                p.copy_(p0 - eta * gi)
        loss = cross_entropy(model(x), y)
        g2 = torch.autograd.grad(loss, params)
        change = torch.sqrt(sum(((a - b) ** 2).sum() for a, b in zip(g2, g))).item()
        losses.append(loss.item())
        changes.append(change)
        betas.append(change / (eta * gnorm + 1e-12))
    with torch.no_grad():                      # back to where we were: weights and running stats
        for p, p0 in zip(params, saved):
            p.copy_(p0)
        for b, b0 in zip(model.buffers(), buffers):
            b.copy_(b0)
    return Probe(min(losses), max(losses), max(changes), max(betas))


def smoothness_run(norm, lr=0.1, steps=100, probe_every=5, step_factors=(0.5, 1, 2, 4), seed=0):
    """Train the MLP with SGD(lr); every `probe_every` steps probe the landscape along the gradient
    at step sizes η = lr·factor (weights and running statistics are restored after the probe).
    Returns a Run whose .extra holds one Probe per probed step.
    """
    etas = [lr * f for f in step_factors]
    return train_run(mlp(norm, seed), _data.digits(), lr=lr, steps=steps, seed=seed,
                     callback=lambda m, x, y: _probe(m, x, y, etas), callback_every=probe_every)
