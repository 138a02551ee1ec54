"""Notebook 09 (why batch norm works): learning rate, initialization, noisy BN, smoothness.

Every experiment is a small MLP on the 8×8 digits, trained with plain SGD through `train.fit` for a
few hundred steps, with and without batch norm:

- `SIZES`, `mlp` (the notebook's MLP, He init), `scale_init`, `weight_norms`;
- `run_mlp` (one cached run: a `train.History`), `lr_sweep`, `init_sweep` (the learning-rate and
  initialization-scale sweeps);
- `NoisyBatchNorm1d`, `unit_drift`, `noisy_bn_runs` (Santurkar et al. 2018's "noisy BN");
- `gradient_change`, `Probe`, `smoothness_run` (the loss landscape along the gradient, their Fig. 4);
- the exercise checkers `check_max_stable_lr`, `check_gradient_change`, `check_which_norm` and the
  scenarios `WHICH_NORM_SCENARIOS`.
"""
import functools
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.functional import cross_entropy

from .. import check, data, models, train
from ..data import CLASSES, PIXELS
from ..layers import BatchNorm1d
from ..validate import check_range

__all__ = ["SIZES", "mlp", "scale_init", "weight_norms", "run_mlp", "lr_sweep", "init_sweep",
           "NoisyBatchNorm1d", "unit_drift", "noisy_bn_runs", "gradient_change", "Probe", "smoothness_run",
           "check_max_stable_lr", "check_gradient_change", "check_which_norm", "WHICH_NORM_SCENARIOS"]

SIZES = [PIXELS, 64, 64, 64, CLASSES]          # the MLP of notebook 09: three hidden ReLU layers of 64


# ----------------------------------------------------------------------------- the network
def scale_init(model, scale):
    """Multiply every Linear/Conv weight of `model` by `scale` (in place); return the model."""
    check_range("scale", scale)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                m.weight.mul_(scale)
    return model


def weight_norms(model):
    """‖W‖ of each Linear layer of `model`, in order (e.g. of a trained `history.model`)."""
    return [m.weight.norm().item() for m in model.modules() if isinstance(m, nn.Linear)]


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


def _fit(model, lr, steps, seed, **kwargs):
    """Plain SGD(lr), batches of 64, evaluated once at the end (test accuracy only)."""
    return train.fit(model, data.digits(), steps=steps, lr=lr, seed=seed, eval_every=None, eval_train=False,
                     **kwargs)


# ----------------------------------------------------------------------------- learning rate and initialization
def run_mlp(norm=None, lr=0.1, scale=1.0, steps=100, seed=0):
    """One SGD run of mlp(norm) with its initial weights times `scale`: a train.History
    (cached: sweeps share runs; `history.model` is the trained network)."""
    return _run_mlp(norm, float(lr), float(scale), steps, seed)


@functools.lru_cache(maxsize=None)
def _run_mlp(norm, lr, scale, steps, seed):        # positional only: one cache key per run
    return _fit(scale_init(mlp(norm, seed), scale), lr, steps, seed)


def lr_sweep(lrs, norms=(None, "batch"), steps=100, seed=0):
    """{(norm, lr): History} for the MLP with and without batch norm, same data, init and batches."""
    return {(norm, lr): run_mlp(norm, lr, 1.0, steps, seed) for norm in norms for lr in lrs}


def init_sweep(scales, norms=(None, "batch"), lr=0.1, steps=100, seed=0):
    """{(norm, scale): History}: the He initialization multiplied by `scale`, then trained."""
    return {(norm, s): run_mlp(norm, lr, s, steps, seed) for norm in norms for s in scales}


# ----------------------------------------------------------------------------- noisy batch norm
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

    Returns {"standard": History, "batch norm": History, "noisy batch norm": History}; history.extra
    holds, every `probe_every` steps, the 15/50/85th percentiles of unit 0 at the input of the second
    ReLU (after the norm layer, noise included) on a fixed set of 256 training images.
    """
    probe = data.digits().x_train[:256]
    out = {}
    for name, norm in (("standard", None), ("batch norm", "batch"), ("noisy batch norm", ("noisy", noise))):
        layer = 2 if norm is None else 4               # second Linear / second norm layer: before the ReLU
        out[name] = _fit(mlp(norm, seed), lr, steps, seed, callback_every=probe_every,
                         callback=lambda m, x, y, layer=layer: unit_drift(m, layer, probe))
    return out


# ----------------------------------------------------------------------------- smoothness
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
    Returns a train.History whose .extra holds one Probe per probed step.
    """
    etas = [lr * f for f in step_factors]
    return _fit(mlp(norm, seed), lr, steps, seed, callback=lambda m, x, y: _probe(m, x, y, etas),
                callback_every=probe_every)


# ----------------------------------------------------------------------------- exercise checkers
def check_max_stable_lr(fn):
    """Exercise: fn(h) -> the largest learning rate at which gradient descent on
    L(w) = ½·h·w² does not diverge (h > 0: the curvature, the β of β-smoothness)."""
    hs = [0.5, 2.0, 10.0, 40.0]
    expected = torch.tensor([2 / h for h in hs], dtype=torch.float64)
    return check.exercise("max_stable_lr", check.each(fn), (hs,), expected,
                          "2/h (w ← (1 − ηh)·w shrinks while |1 − ηh| ≤ 1)", atol=1e-9)


def check_gradient_change(fn):
    """Exercise: fn(f, w, step) -> ‖∇f(w) − ∇f(w − step·∇f(w))‖ (a float).

    f maps a 1-D float64 tensor to a scalar tensor; checked on three smooth, non-quadratic f.
    """
    g = torch.Generator().manual_seed(90)
    A = torch.randn(6, 6, generator=g, dtype=torch.float64)
    A = A @ A.T / 6
    fs = [lambda w: 0.5 * w @ A @ w + torch.log(torch.cosh(w)).sum(),
          lambda w: torch.logsumexp(3 * w, 0),
          lambda w: (w ** 4).sum() / 4 + w.sum()]
    ws = [torch.randn(6, generator=g, dtype=torch.float64) for _ in fs]

    def grad(f, w):
        w = w.detach().requires_grad_(True)
        return torch.autograd.grad(f(w), w)[0]

    expected = torch.tensor([(grad(f, w - 0.3 * grad(f, w)) - grad(f, w)).norm().item()
                             for f, w in zip(fs, ws)], dtype=torch.float64)

    def all_of(fs, ws):
        out = [fn(f, w.clone(), 0.3) for f, w in zip(fs, ws)]
        return None if any(o is None for o in out) else torch.tensor([float(o) for o in out],
                                                                      dtype=torch.float64)
    return check.exercise("gradient_change", all_of, (fs, ws), expected, "autograd at w and at w − 0.3·∇f(w)")


WHICH_NORM_SCENARIOS = {
    1: "a ResNet classifier on ImageNet, 64 images per GPU",
    2: "an object detector on large images, 2 images per GPU",
    3: "a Transformer language model",
    4: "a style-transfer network (the output should not keep the input image's contrast)",
}
_WHICH_NORM = {1: {"batch"}, 2: {"group", "sync_batch"}, 3: {"layer", "rms"}, 4: {"instance"}}


def check_which_norm(answers):
    """Exercise: answers = {scenario number: "batch" | "layer" | "instance" | "group" | "rms" |
    "sync_batch"} for the scenarios of WHICH_NORM_SCENARIOS. Names the wrong ones only."""
    if not isinstance(answers, dict):
        return check.failed("which_norm", f"expected a dict {{scenario number: name}}, got {type(answers).__name__}")
    wrong = [k for k in _WHICH_NORM if str(answers.get(k, "")).lower().replace(" ", "_")
             .removesuffix("_norm") not in _WHICH_NORM[k]]
    if wrong:
        got = ", ".join(f"{k} (got {answers.get(k)!r})" for k in wrong)
        return check.failed("which_norm", f"{len(wrong)} of {len(_WHICH_NORM)} to rethink: scenario {got}",
                            float(len(wrong)))
    return check.passed("which_norm", f"all {len(_WHICH_NORM)} scenarios matched")
