"""Notebook 09 (why batch norm works): learning rate, initialization, noisy BN, smoothness,
diagnostics, and what the batch size does to batch norm's statistics.

Every experiment is the same small MLP on the 8×8 digits, trained with plain SGD for 100 steps,
with and without batch norm. The 23 runs of the notebook train at once (`experiments`): networks of
one layout are stacked into one module (`models.Stack`: one batched matrix multiply per layer) and
trained through `train.fit`; each gives the numbers it gives alone (`run_mlp`, tested).

- `SIZES`, `mlp` (the notebook's MLP, He init), `scale_init`, `weight_norms`;
- `run_mlp` (one run), `train_stacked`, `experiments` (every run of the notebook;
  `LRS`, `SCALES`, `NOISY`, `PROBED`), `Record`, `unit_percentiles`, `probes`;
- `NoisyBatchNorm1d` (Santurkar et al. 2018's "noisy BN");
- `Probe` (the loss landscape along the gradient, their Fig. 4);
- `LayerHealth`, `layer_health`, `update_ratios` (Karpathy's diagnostics);
- `PIXEL`, `unit_values`, `kurtosis`, `batch_means` (the batch statistics of seed 002's claims);
- the figures of sections 4 and 5: `plot_smoothness`, `plot_layer_health`, `plot_update_ratios`;
- the exercise checkers `check_max_stable_lr`, `check_gradient_change`, `check_which_norm` and the
  scenarios `WHICH_NORM_SCENARIOS`.
"""
import functools
import math
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn
from torch.nn.functional import cross_entropy

from .. import check, data, models, train
from ..data import CLASSES, PIXELS
from ..layers import BatchNorm1d
from ..validate import check_int, check_range

__all__ = ["SIZES", "mlp", "scale_init", "weight_norms", "STEPS", "LRS", "SCALES", "NOISY", "PROBED", "run_mlp",
           "Record", "train_stacked", "experiments", "unit_percentiles", "probes",
           "NoisyBatchNorm1d", "Probe", "LayerHealth", "layer_health", "update_ratios",
           "PIXEL", "unit_values", "kurtosis", "batch_means",
           "plot_smoothness", "plot_layer_health", "plot_update_ratios",
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


# ----------------------------------------------------------------------------- one run, and many at once
STEPS = 100                                     # SGD steps of every run, batches of 64
LRS = (0.03, 0.1, 0.3, 1.0, 3.0, 10.0)          # section 1: the learning rates
SCALES = (0.25, 0.5, 1.0, 2.0, 4.0)             # section 2: the initialization scales, at lr 0.1
NOISY = ((("noisy", 0.5), 0.3), (("noisy", 0.5), 1.0), (("noisy", 1.0), 0.3))   # section 3: (norm, lr)
PROBED = ((None, 0.1, 1.0), ("batch", 0.1, 1.0))   # section 4: the runs whose landscape is probed
RECORD_EVERY, PROBE_EVERY = 5, 10               # steps between records, between probes
UNIT_IMAGES = 128                               # the fixed training images a record looks at


def run_mlp(norm=None, lr=0.1, scale=1.0, steps=STEPS, seed=0):
    """One SGD run of mlp(norm) with its initial weights times `scale`, through train.fit: a
    train.History (cached; `history.model` is the trained network). `train_stacked` trains many
    such runs at once and gives the same numbers."""
    return _run_mlp(norm, float(lr), float(scale), steps, seed)


@functools.lru_cache(maxsize=None)
def _run_mlp(norm, lr, scale, steps, seed):        # positional only: one cache key per run
    return _fit(scale_init(mlp(norm, seed), scale), lr, steps, seed)


def _stack(nets):
    """The networks of one layout (all plain, or all with batch norm or noisy batch norm) as one
    `models.Stack`: input (B, 64) -> logits (B, 10, K). A normalized network's norm layers enter as
    NoisyBatchNorm1d (noise 0 for plain batch norm), and the stacked norm layer gets each network's
    noise strength per unit, so each network draws the noise it draws alone."""
    norms = [i for i, m in enumerate(nets[0]) if isinstance(m, BatchNorm1d)]
    for net in nets:
        if [i for i, m in enumerate(net) if isinstance(m, BatchNorm1d)] != norms:
            raise ValueError("nets: expected networks of one layout (all plain, or all with a norm layer), "
                             f"got {nets[0]} and {net}")
    as_noisy = []
    for net in nets:                                   # the stack copies the values: nets stay as they are
        mods = list(net)
        for i in norms:
            mods[i] = NoisyBatchNorm1d(net[i].num_features, noise=getattr(net[i], "noise", 0.0),
                                       eps=net[i].eps, momentum=net[i].momentum)
            mods[i].load_state_dict(net[i].state_dict())
        as_noisy.append(nn.Sequential(*mods))
    stack = models.Stack(as_noisy)
    for i in norms:                                     # per unit: (K·C,), network k's C units k·C … k·C + C − 1
        stack.layers[i].noise = torch.cat([torch.full((m[i].num_features,), float(m[i].noise)) for m in as_noisy])
    return stack


def _rows(p, k):
    """A stacked parameter as (K, values of one network): (K, out, in), (K, out) and (K·C,) alike
    (a view of a parameter, which is contiguous: updating it updates the parameter)."""
    return p.reshape(k, -1)


class _StackedSGD:
    """Plain SGD on a stack of networks (`models.Stack`), one learning rate per network. Keeps ‖∇‖ of
    every parameter of every network at every step: for each network what train.fit's
    History.grad_norm holds."""

    def __init__(self, stack, lrs):
        self.k = len(stack)
        self.params = list(stack.parameters())
        self.lr = torch.tensor(lrs, dtype=torch.float32)
        self.param_groups = [{"params": self.params, "lr": 1.0}]      # what train.fit looks at
        self.grad_norms = []                                          # per step: (parameters, K)

    def zero_grad(self, set_to_none=True):
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self):
        self.grad_norms.append(torch.stack([_rows(p.grad, self.k).norm(dim=1) for p in self.params]))   # (params, K)
        for p in self.params:
            _rows(p, self.k).sub_(_rows(p.grad, self.k) * self.lr[:, None])     # (K, values) − (K, values)·(K, 1)


@dataclass
class Record:
    """What a run records every RECORD_EVERY steps, before that step's update."""
    step: int
    weight_norm: dict     # Linear weight name ("0.weight", …) -> ‖W‖
    unit: list            # 15/50/85th percentiles of unit 0 at the input of the 2nd ReLU (training mode)
    probe: object = None  # a Probe of the landscape along this step's gradient (PROBED runs, every PROBE_EVERY steps)


def _unit_percentiles(stack, x):
    """Per network: 15/50/85th percentiles of unit 0 at the input of the second ReLU on x, in
    training mode: what the next layer sees at this step, noise included (the running statistics
    this pass would update are restored)."""
    buffers = [b.clone() for b in stack.buffers()]
    relu = [m for m in stack.layers if isinstance(m, nn.ReLU)][1]
    seen = []
    hook = relu.register_forward_hook(lambda m, i, o: seen.append(i[0]))
    try:
        with torch.no_grad():
            stack(x)
            unit = seen[0][:, :, 0]                                     # (B, K, C) -> unit 0: (B, K)
            for b, b0 in zip(stack.buffers(), buffers):
                b.copy_(b0)
    finally:
        hook.remove()
    return torch.quantile(unit, torch.tensor([0.15, 0.5, 0.85]), dim=0).T.tolist()


def _train_stack(configs, steps, seed, probed, record_every, probe_every, step_factors):
    nets = [scale_init(mlp(norm, seed), scale) for norm, _, scale in configs]
    stack = _stack(nets)
    opt = _StackedSGD(stack, [lr for _, lr, _ in configs])
    k, hists = len(nets), [train.History(model=net) for net in nets]
    alive, evaluated = [True] * k, {}
    images = data.digits().x_train[:UNIT_IMAGES]
    names = [name for name, _ in nets[0].named_parameters()]           # the stack's parameters, in order
    param = dict(zip(names, stack.parameters()))
    weights = [name for name in names if name.endswith("weight") and isinstance(nets[0][int(name.split(".")[0])],
                                                                                   nn.Linear)]

    @torch.no_grad()
    def unstack(i):                    # network i's current values into nets[i] (its History's model)
        return stack.member(i, out=nets[i])

    def loss_fn(logits, y):
        per = cross_entropy(logits, y[:, None].expand(-1, k), reduction="none").mean(0)   # (K,)
        if not torch.is_grad_enabled():        # fit's evaluation on the test set (no_grad), at the end
            evaluated["acc"] = (logits.argmax(1) == y[:, None]).float().mean(0).tolist()   # (N, K) → (K,)
            evaluated["loss"] = per.tolist()
            return per.mean()
        values = per.tolist()
        for i, v in enumerate(values):
            if alive[i]:
                hists[i].loss.append(float("nan") if train.diverged(v) else v)
                if train.diverged(v):          # as fit stops one network: here, before this step's update
                    alive[i], hists[i].diverged = False, True
                    unstack(i)
                    opt.lr[i] = 0.0
        live = [v for v, a in zip(values, alive) if a]
        total = torch.where(torch.tensor(alive), per, 0.0).sum()      # each network: its own gradient
        return total - total.detach() + (sum(live) / len(live) if live else math.inf)   # fit sees the mean

    def record(model, x, y):           # draws the step's noise, then gives the random state back
        step, rng = len(opt.grad_norms), torch.get_rng_state()
        norms = torch.stack([_rows(param[name], k).norm(dim=1) for name in weights]).T.tolist()   # (K, weights)
        units = _unit_percentiles(stack, images)
        for i in range(k):
            if alive[i]:
                probe = None
                if configs[i] in probed and step % probe_every == 0:
                    probe = _probe(unstack(i), x, y, [configs[i][1] * f for f in step_factors])
                hists[i].extra.append(Record(step, dict(zip(weights, norms[i])), units[i], probe))
        torch.set_rng_state(rng)

    train.fit(stack, data.digits(), steps=steps, optimizer=opt, loss_fn=loss_fn,
              eval_every=None, eval_train=False, callback=record, callback_every=record_every, seed=seed)
    grads = torch.stack(opt.grad_norms) if opt.grad_norms else torch.zeros(0, len(names), k)   # (steps, params, K)
    for i, h in enumerate(hists):
        done = len(h.loss) - h.diverged                    # steps whose update was made
        h.grad_norm = {name: grads[:done, p, i].tolist() for p, name in enumerate(names)}
        if not h.diverged:
            unstack(i)
            h.eval_steps, h.test_acc, h.test_loss = [steps], [evaluated["acc"][i]], [evaluated["loss"][i]]
    return hists


def train_stacked(configs, steps=STEPS, seed=0, probed=(), record_every=RECORD_EVERY, probe_every=PROBE_EVERY,
                  step_factors=(0.5, 1, 2, 4)):
    """Train mlp(norm), its initial weights times `scale`, with plain SGD(lr) for every (norm, lr,
    scale) in `configs`: all the plain networks as one `models.Stack`, all the normalized ones as
    another, through train.fit; same initial weights and batches as run_mlp.

    Returns {config: History} with what fit records for one network: the loss of every step
    (stopped at divergence, as fit does), the test accuracy at the end, grad_norm of every
    parameter at every step, the trained network as .model; and in .extra a Record every
    `record_every` steps (with a Probe of the landscape every `probe_every` steps for the configs
    in `probed`, at step sizes lr·step_factors).
    """
    check_int("steps", steps)
    configs = [(norm, float(lr), float(scale)) for norm, lr, scale in configs]
    probed = {(norm, float(lr), float(scale)) for norm, lr, scale in probed}
    out = {}
    for group in ([c for c in configs if c[0] is None], [c for c in configs if c[0] is not None]):
        if group:
            out.update(zip(group, _train_stack(group, steps, seed, probed, record_every, probe_every, step_factors)))
    return {c: out[c] for c in configs}


@functools.lru_cache(maxsize=None)
def experiments(steps=STEPS, seed=0):
    """Every run of notebook 09, trained at once (cached): {(norm, lr, scale): History} for the
    learning rates LRS and the initialization scales SCALES (at lr 0.1), with and without batch
    norm, and the noisy-BN runs NOISY; the PROBED runs carry the landscape probes."""
    configs = ([(norm, lr, 1.0) for norm in (None, "batch") for lr in LRS]
               + [(norm, 0.1, s) for norm in (None, "batch") for s in SCALES if s != 1.0]
               + [(norm, lr, 1.0) for norm, lr in NOISY])
    return train_stacked(configs, steps, seed, probed=PROBED)


def unit_percentiles(run):
    """(records, 3): the 15/50/85th percentiles of unit 0 at the input of the 2nd ReLU, every RECORD_EVERY steps."""
    return np.array([r.unit for r in run.extra])


def probes(run):
    """The Probes of a PROBED run, in order (one every PROBE_EVERY steps)."""
    return [r.probe for r in run.extra if r.probe is not None]


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
        if not self.training or not torch.as_tensor(self.noise).any():     # noise: a number, or one per unit
            return out
        s = torch.exp(self.noise * torch.randn(self.num_features, dtype=out.dtype))
        m = self.noise * torch.randn(self.num_features, dtype=out.dtype)
        return out * s + m


# ----------------------------------------------------------------------------- smoothness
@dataclass
class Probe:
    """What the landscape looks like along the gradient at one step (Santurkar et al. 2018, Fig. 4)."""
    loss_min: float       # lowest loss over the probed step sizes
    loss_max: float       # highest loss over the probed step sizes
    grad_change: float    # max over step sizes of ‖∇L(w − η g) − ∇L(w)‖
    beta: float           # max over step sizes of ‖∇L(w − η g) − ∇L(w)‖ / ‖η g‖ ("effective β-smoothness")


def _probe(model, x, y, etas):
    """A Probe of `model` (a Sequential of Linear, norm and ReLU layers) at the batch (x, y): its
    gradient g, then the loss and the gradient at w − η·g for every η of `etas`, all η at once (one
    `models.Stack` of copies; the model itself, its running statistics included, is left as it was)."""
    params, buffers = [p for p in model.parameters() if p.requires_grad], [b.clone() for b in model.buffers()]
    g = torch.autograd.grad(cross_entropy(model(x), y), params)
    with torch.no_grad():
        for b, b0 in zip(model.buffers(), buffers):      # what this pass moved: the running statistics
            b.copy_(b0)
    gnorm = torch.sqrt(sum((gi * gi).sum() for gi in g)).item()
    k = len(etas)
    stack = _stack([model] * k)
    step = torch.tensor(etas, dtype=g[0].dtype)
    with torch.no_grad():
        for p, gi in zip(stack.parameters(), g):
            _rows(p, k).sub_(step[:, None] * gi.reshape(1, -1))     # (K, values) − (K, 1)·(1, values)
    losses = cross_entropy(stack(x), y[:, None].expand(-1, k), reduction="none").mean(0)        # (K,)
    g2 = torch.autograd.grad(losses.sum(), list(stack.parameters()))
    changes = torch.sqrt(sum(((_rows(a, k) - b.reshape(1, -1)) ** 2).sum(1) for a, b in zip(g2, g))).tolist()
    losses = losses.tolist()
    betas = [c / (eta * gnorm + 1e-12) for c, eta in zip(changes, etas)]
    return Probe(min(losses), max(losses), max(changes), max(betas))


# ----------------------------------------------------------------------------- diagnostics (Karpathy's habit)
@dataclass
class LayerHealth:
    """One hidden layer on one batch: what its ReLU receives, and the gradient the layer sends back."""
    pre: torch.Tensor     # (N, C): the input of the ReLU (after the norm layer, if any)
    grad: torch.Tensor    # (N, C): ∂loss/∂(the ReLU's output), what backpropagation brings to the layer

    @property
    def inactive(self):
        """Share of ReLU inputs ≤ 0 (output 0, no gradient through them): ReLU's saturation."""
        return (self.pre <= 0).float().mean().item()

    @property
    def dead(self):
        """Share of units whose input is ≤ 0 on every example of the batch: they no longer learn."""
        return (self.pre <= 0).all(0).float().mean().item()


def layer_health(model, x, y):
    """One forward and backward pass of `model` on (x, y) in training mode: a LayerHealth per hidden
    layer (per ReLU), in order. No parameter gradient is kept; running statistics are restored."""
    inputs, outputs, buffers = [], [], [b.clone() for b in model.buffers()]

    def keep(module, args, out):
        inputs.append(args[0])
        outputs.append(out)
    hooks = [m.register_forward_hook(keep) for m in model.modules() if isinstance(m, nn.ReLU)]
    try:
        grads = torch.autograd.grad(cross_entropy(model(x), y), outputs)
    finally:
        for h in hooks:
            h.remove()
        with torch.no_grad():
            for b, b0 in zip(model.buffers(), buffers):
                b.copy_(b0)
    return [LayerHealth(p.detach(), g) for p, g in zip(inputs, grads)]


def update_ratios(run, lr):
    """Karpathy's update-to-data ratio of each Linear layer of `run` (a History of train_stacked),
    log10(lr·‖∇W‖ / ‖W‖): the relative change one SGD step makes to the weights.

    Read from what the run records: ‖∇W‖ of every step in run.grad_norm, ‖W‖ in the Records.
    Returns (steps, array (layers, steps)), layers in order.
    """
    recs = [r for r in run.extra if r.step < len(next(iter(run.grad_norm.values())))]
    names = list(recs[0].weight_norm)
    ratio = [[lr * run.grad_norm[name][r.step] / r.weight_norm[name] for r in recs] for name in names]
    return np.array([r.step for r in recs]), np.log10(ratio)


# ----------------------------------------------------------------------------- batch statistics (seed 002)
PIXEL = 42        # row 5, column 2 of the 8×8 digits: no ink in many images, full ink in many others


def unit_values(pixel=PIXEL):
    """The unit of the batch-size section: one pixel over the 1,300 training images (float64)."""
    return data.digits().x_train[:, pixel].double()


def kurtosis(v):
    """E[(v − μ)⁴] / σ⁴ of a 1-D tensor: 3 for a Gaussian, 1 for two equal spikes, < 3 for two modes."""
    d = v - v.mean()
    return ((d ** 4).mean() / (d ** 2).mean() ** 2).item()


def batch_means(values, batch_size, n_batches=2000, seed=0):
    """μ_B of `n_batches` mini-batches of `values`, drawn as training draws them: the batches of
    train.batches (a fresh permutation every epoch, an epoch's incomplete last batch skipped)."""
    check_int("batch_size", batch_size, 1, len(values))
    gen, per_epoch = torch.Generator().manual_seed(seed), len(values) // batch_size
    epochs = [torch.randperm(len(values), generator=gen)[:per_epoch * batch_size]
              for _ in range(-(-n_batches // per_epoch))]
    return values[torch.cat(epochs)[:n_batches * batch_size].view(n_batches, batch_size)].mean(1)


# ----------------------------------------------------------------------------- figures of sections 4 and 5
_LAYER_STYLE = [dict(color="C0", ls="-"), dict(color="C1", ls="--"), dict(color="C2", ls=":"),   # layers 1–4
                dict(color="C3", ls="-.")]


def plot_smoothness(runs, names, style):
    """Section 4's figure, the picture of Santurkar et al.'s Fig. 4: for the runs (norm, lr 0.1, s = 1)
    of `runs` (`experiments()`), one per norm of `names`, against the SGD step of each probe: the loss
    along the gradient, min to max over the probed step sizes (left), the gradient predictiveness
    (middle) and the effective β-smoothness (right), log scales. `names` maps each norm to its label,
    `style` to its line style. Returns the figure."""
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.6), gridspec_kw=dict(wspace=0.45))
    for norm in names:
        pr = probes(runs[norm, 0.1, 1.0])
        steps, line = np.arange(len(pr)) * 10, {k: v for k, v in style[norm].items() if k != "marker"}
        axes[0].fill_between(steps, [p.loss_min for p in pr], [p.loss_max for p in pr], color=line["color"], alpha=0.4,
                             hatch="//" if norm is None else None, label=names[norm])
        axes[1].plot(steps, [p.grad_change for p in pr], **style[norm], label=names[norm])
        axes[2].plot(steps, [p.beta for p in pr], **style[norm], label=names[norm])
    axes[0].set(title="loss along the gradient", ylabel="loss at w − ηg, min to max")
    axes[1].set(title="gradient predictiveness", ylabel="max ‖∇L(w − ηg) − ∇L(w)‖")
    axes[2].set(title="effective β-smoothness", ylabel="max ‖Δ∇L‖ / ‖ηg‖")
    for ax, ticks in zip(axes, ([0.1, 0.3, 1, 3], [0.3, 1, 3, 10], [3, 5, 10, 20])):
        ax.set(xlabel="SGD step", yscale="log")
        ax.set_yticks(ticks, [f"{t:g}" for t in ticks])
        ax.minorticks_off()
    fig.legend(*axes[1].get_legend_handles_labels(), loc="upper center", bbox_to_anchor=(0.5, 0), ncols=2)
    return fig


def plot_layer_health(health, names, scale):
    """Section 5's histograms at initialization: for each network of `health` ({norm: layer_health(…)},
    one column per norm, labelled by `names`; `scale` is the init scale named in the titles), the
    density of each hidden layer's ReLU input (top row) and of the gradient at its ReLU output,
    × 10⁴ (bottom row), each layer's standard deviation in the legend. Returns the figure."""
    fig, axes = plt.subplots(2, 2, figsize=(10, 5.6), sharex="row", sharey="row",
                             gridspec_kw=dict(hspace=0.65, wspace=0.08))
    for col, norm in enumerate(names):
        for i, h in enumerate(health[norm]):
            for row, values, factor, lim in ((0, h.pre, 1, 4), (1, h.grad, 1e4, 8)):
                counts, edges = np.histogram((values * factor).numpy(), bins=64, range=(-lim, lim), density=True)
                axes[row, col].stairs(counts, edges, lw=2, **_LAYER_STYLE[i],
                                      label=f"layer {i + 1}: sd {values.std() * factor:.2g}")
        axes[0, col].set(title=f"{names[norm]}, s = {scale:g}: activations", xlabel="input of the ReLU")
        axes[1, col].set(title="gradients", xlabel="∂L/∂(output of the ReLU)  × 10⁴")
        for row in (0, 1):
            axes[row, col].legend(loc="upper right", handlelength=1.5)
    axes[0, 0].set_ylabel("density")
    axes[1, 0].set_ylabel("density")
    return fig


def plot_update_ratios(cases):
    """Section 5's update-to-data ratios: one panel per case of `cases` ({title: (run, learning rate)},
    runs of `experiments()`), log10(η‖∇W‖ / ‖W‖) of each layer against the SGD step
    (`update_ratios`), Karpathy's ≈ −3 dotted. Returns the figure."""
    fig, axes = plt.subplots(1, len(cases), figsize=(10, 3.8), sharey=True, gridspec_kw=dict(wspace=0.08))
    for ax, (title, (run, lr)) in zip(axes, cases.items()):
        steps, ratios = update_ratios(run, lr)
        for i, r in enumerate(ratios):
            ax.plot(steps, r, **_LAYER_STYLE[i], lw=2, label=f"layer {i + 1}")
        ax.axhline(-3, color="k", lw=1, ls=(0, (1, 3)))
        ax.set(title=title, xlabel="SGD step", ylim=(-4.5, 0))
    axes[0].set_ylabel("log₁₀(η‖∇W‖ / ‖W‖)")
    axes[1].text(2, -3.1, "Karpathy's ≈ −3", va="top")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="upper center", bbox_to_anchor=(0.5, 0), ncols=4)
    return fig


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
