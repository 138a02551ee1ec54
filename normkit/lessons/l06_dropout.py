"""Notebook 06 (dropout): what dropout does to activations, to a training run and to a batch norm after it.

The technique itself lives in `normkit.functional.dropout` and `normkit.layers.Dropout`; this
module holds what the notebook measures with it:

- `dropout_moments` (train-mode mean and variance relative to eval mode, vs p),
  `dropout_train_variance` (Li et al. 2019's variance shift, in closed form);
- `train_grid`, `Grid` (the same MLP with neither, dropout, batch norm or both, on
  clean and on noisy labels, a few seeds each: every run of the notebook, trained at once as
  `models.Stack`s);
- `mc_dropout` / `predictive_spread` / `auroc` (MC dropout uncertainty, Gal & Ghahramani 2016);
- `variance_shift` (measure the shift on a Dropout → BatchNorm1d pair), `bn_input_variance`,
  `recalibrate_bn` (the shift in a trained network, and its fix);
- the exercise checkers `check_dropout`, `check_dropout_variance`, `check_variation_ratio`;
- the notebook's figures: `activation_panel` (the slider panel), `plot_memorization`,
  `plot_mc_dropout`, `plot_variance_shift`.
"""
from dataclasses import dataclass

import matplotlib.pyplot as plt
import torch
from torch import nn
from torch.nn.functional import cross_entropy

from .. import check, functional, layers, models, train
from ..data import CLASSES, PIXELS
from ..validate import check_int, check_range

__all__ = ["dropout_train_variance", "dropout_moments", "variance_shift", "bn_input_variance", "recalibrate_bn",
           "mc_dropout", "predictive_spread", "auroc", "VARIANTS", "Grid", "train_grid",
           "check_dropout", "check_dropout_variance", "check_variation_ratio",
           "activation_panel", "plot_memorization", "plot_mc_dropout", "plot_variance_shift"]


# ----------------------------------------------------------------------------- dropout's moments
def dropout_train_variance(mean, var, p):
    """Variance of inverted dropout's output in training, for a unit with this mean and variance.

    With a keep mask m ~ Bernoulli(1 − p) and y = m·x/(1 − p):
        E[y] = E[x] = c,   E[y²] = E[x²]/(1 − p) = (c² + v)/(1 − p),
        Var_train[y] = (c² + v)/(1 − p) − c²       (Li et al. 2019, with their keep ratio = 1 − p);
    in evaluation dropout is the identity, so Var_eval[y] = v.
    """
    check_range("p", p, 0.0, 1.0)
    if p == 1:
        raise ValueError("p=1: expected p < 1 (every unit dropped: the output is identically 0)")
    return (mean * mean + var) / (1 - p) - mean * mean


def dropout_moments(x, ps, seed=0):
    """Mean and variance of dropout(x, p) in training mode relative to x (eval mode), for each p.

    Returns (mean_ratio, var_ratio), two lists over `ps`; inverted dropout keeps the first at 1
    while the second grows (`dropout_train_variance`). One seeded mask per p.
    """
    mean_ratio, var_ratio = [], []
    for p in ps:
        torch.manual_seed(seed)
        d = functional.dropout(x, float(p), training=True)
        mean_ratio.append((d.mean() / x.mean()).item())
        var_ratio.append((d.var() / x.var()).item())
    return mean_ratio, var_ratio


# ----------------------------------------------------------------------------- dropout before batch norm
def variance_shift(x, p, steps=300, batch_size=64, seed=0):
    """Feed rows of `x` (N, D) through Dropout(p) → BatchNorm1d(D) in training, then evaluate.

    `steps` mini-batches are drawn as in training (`train.batches`: shuffled epochs). BN's
    running variance learns the *training-mode* variance of its input (dropout on); in eval
    mode dropout is the identity and the real variance is smaller. Returns a dict of per-unit
    tensors over the units whose variance is not ~0 (ReLU units that never fire are left out):
    `running_var` (what BN divides by in eval), `eval_var` (the real variance at test time),
    `predicted_train_var` (`dropout_train_variance`), `eval_out_var` (variance of BN's eval
    output: 1 without a shift), and the scalars `shift` = mean(running_var / eval_var),
    `predicted_shift` = mean(predicted_train_var / eval_var) and `predicted_out_var` =
    mean(eval_var / predicted_train_var).
    """
    check_range("p", p, 0.0, 1.0)
    if x.dim() != 2:
        raise ValueError(f"x: expected a (N, D) tensor, got shape {tuple(x.shape)}")
    order = train.batches(len(x), batch_size, torch.Generator().manual_seed(seed))
    torch.manual_seed(seed)
    drop, bn = layers.Dropout(p), layers.BatchNorm1d(x.shape[1], affine=False)
    with torch.no_grad():
        for _ in range(steps):
            bn(drop(x[next(order)]))
        drop.eval(), bn.eval()
        out = bn(drop(x))
    c, v = x.mean(0), x.var(0)
    live = v > 1e-6 * v.max()
    pred = dropout_train_variance(c, v, p)
    r = {"running_var": bn.running_var[live], "eval_var": v[live],
         "predicted_train_var": pred[live], "eval_out_var": out.var(0)[live]}
    r["shift"] = (r["running_var"] / r["eval_var"]).mean().item()
    r["predicted_shift"] = (r["predicted_train_var"] / r["eval_var"]).mean().item()
    r["predicted_out_var"] = (r["eval_var"] / r["predicted_train_var"]).mean().item()
    return r


def _norm_layers(model):
    return [m for m in model.modules() if isinstance(m, (layers._BatchNorm, nn.modules.batchnorm._BatchNorm))]


def _dropout_layers(model):
    return [m for m in model.modules() if isinstance(m, (layers.Dropout, nn.Dropout))]


@torch.no_grad()
def bn_input_variance(model, bn, x):
    """(running_var, real_var) of batch-norm module `bn` inside `model`, with `model` in eval mode.

    real_var is the variance of what actually reaches `bn` at test time (input `x`); a ratio
    running_var / real_var ≠ 1 is Li et al.'s variance shift.
    """
    captured = {}
    hook = bn.register_forward_hook(lambda m, i, o: captured.__setitem__("x", i[0]))
    was_training = model.training
    model.eval()
    try:
        model(x)
    finally:
        hook.remove()
        model.train(was_training)
    return bn.running_var.clone(), captured["x"].var(0, unbiased=False)


@torch.no_grad()
def recalibrate_bn(model, x, batch_size=64):
    """Re-estimate every BN layer's running statistics with dropout switched off.

    One pass over `x` in mini-batches with BN in training mode (cumulative average,
    momentum=None) and every dropout layer in eval mode; the model is left in eval mode.
    """
    bns = _norm_layers(model)
    model.eval()
    saved = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
        bn.train()
    for i in range(0, len(x) - batch_size + 1, batch_size):
        model(x[i:i + batch_size])
    for bn, m in zip(bns, saved):
        bn.momentum = m
    model.eval()
    return model


# ----------------------------------------------------------------------------- MC dropout
@torch.no_grad()
def mc_dropout(model, x, samples=100, seed=0):
    """Monte Carlo dropout (Gal & Ghahramani 2016): `samples` stochastic forward passes.

    Dropout layers stay in training mode, everything else (batch norm) in eval mode.
    Returns softmax probabilities of shape (samples, N, classes); the model is left in eval mode.
    """
    check_int("samples", samples)
    model.eval()
    for d in _dropout_layers(model):
        d.train()
    torch.manual_seed(seed)
    logits = model(x.repeat(samples, *[1] * (x.dim() - 1)))
    model.eval()
    return torch.softmax(logits.view(samples, len(x), -1), dim=-1)


def predictive_spread(probs):
    """Summaries of MC samples `probs` (T, N, C), one value per input (N,):

    `entropy`: entropy of the mean prediction (nats; total uncertainty),
    `mutual_info`: entropy minus the mean entropy of each pass (the part due to the model's
    randomness, "epistemic"), `top_std`: standard deviation over the T passes of the probability
    of the mean prediction's top class.
    """
    if probs.dim() != 3:
        raise ValueError(f"probs: expected (samples, N, classes), got shape {tuple(probs.shape)}")
    mean = probs.mean(0)
    entropy = -(mean * mean.clamp_min(1e-12).log()).sum(-1)
    each = -(probs * probs.clamp_min(1e-12).log()).sum(-1).mean(0)
    top = mean.argmax(-1)
    top_p = probs.gather(2, top.view(1, -1, 1).expand(len(probs), -1, 1)).squeeze(-1)
    return {"entropy": entropy, "mutual_info": entropy - each, "top_std": top_p.std(0)}


def auroc(scores_in, scores_out):
    """Probability that a random out-of-distribution score exceeds a random in-distribution one.

    (Area under the ROC curve of the detector "score > threshold means out of distribution";
    0.5 = chance, 1 = perfect; ties count one half.)
    """
    a, b = scores_in.reshape(-1, 1).double(), scores_out.reshape(1, -1).double()
    return ((b > a).double().mean() + 0.5 * (b == a).double().mean()).item()


# ----------------------------------------------------------------------------- every run at once
# The four networks the notebook compares, as (norm, dropout?) for models.mlp, in the grid's order.
VARIANTS = {"batch norm": ("batch", False), "batch norm + dropout": ("batch", True),
            "dropout": (None, True), "neither": (None, False)}


class _Grid(nn.Module):
    """Every network of the grid, evaluated as one: one `models.Stack` per variant of VARIANTS (a
    Stack holds networks of one layout), with `seeds` (one network per entry) each. Input (B, in),
    shared; output (B, classes, K), the variants' stacks side by side, the layout `cross_entropy`
    takes with per-network labels (B, K). Network k of a variant starts from the weights that
    `models.mlp` draws after `torch.manual_seed(seeds[k])`; `model(k)` gives network k of the grid
    back as that `models.mlp`, with its trained weights and batch-norm statistics, in eval mode."""

    def __init__(self, sizes, p, seeds):
        super().__init__()
        check_range("p", p, 0.0, 1.0)
        self.n = len(seeds)
        stacks = []
        for norm, drop in VARIANTS.values():
            nets = []
            for seed in seeds:
                torch.manual_seed(seed)
                nets.append(models.mlp(list(sizes), norm=norm, dropout=p if drop else 0.0))
            stacks.append(models.Stack(nets))
        self.stacks = nn.ModuleList(stacks)

    def __len__(self):
        return len(self.stacks) * self.n

    def forward(self, x):
        return torch.cat([stack(x) for stack in self.stacks], 2)     # V × (B, classes, n) -> (B, classes, V·n)

    def model(self, k):
        """Network k (variant k // n, its network k % n) as a `models.mlp` in eval mode."""
        return self.stacks[k // self.n].member(k % self.n).eval()


@dataclass
class Grid:
    """What `train_grid` trained: accuracies of every (variant, dataset, seed) over training.

    train_acc, test_acc: tensors (variants, datasets, seeds, evaluations); train accuracy is on each
    model's own training labels (the noisy ones for a noisy set), test accuracy on the clean test set.
    """
    variants: list
    datasets: list
    seeds: list
    eval_steps: list
    train_acc: torch.Tensor
    test_acc: torch.Tensor
    net: nn.Module        # every network as one (B, in) -> (B, classes, K); net.model(k) is network k

    def index(self, variant, dataset, seed):
        """Position of one model in the stack."""
        v, d, s = self.variants.index(variant), self.datasets.index(dataset), self.seeds.index(seed)
        return (v * len(self.datasets) + d) * len(self.seeds) + s

    def model(self, variant, dataset, seed=None):
        """That trained model, as a `models.mlp` in eval mode (seed: the first one by default)."""
        return self.net.model(self.index(variant, dataset, self.seeds[0] if seed is None else seed))

    def final(self, which="test"):
        """Accuracy at the end of training, (variants, datasets, seeds)."""
        return (self.test_acc if which == "test" else self.train_acc)[..., -1]

    def summary(self, variant, dataset):
        """Means over the seeds: final test and train accuracy, and the best test accuracy on the way."""
        v, d = self.variants.index(variant), self.datasets.index(dataset)
        return {"test": self.test_acc[v, d, :, -1].mean().item(),
                "train": self.train_acc[v, d, :, -1].mean().item(),
                "best_test": self.test_acc[v, d].max(-1).values.mean().item()}

    def table(self, order=("neither", "dropout", "batch norm", "batch norm + dropout")):
        """Final test accuracy per variant and dataset: mean of the seeds (lowest–highest), as text."""
        acc = self.final("test")
        rows = [f"final test accuracy: mean of {len(self.seeds)} seeds (lowest–highest)",
                f"{'':22s}" + "".join(f"{d:>24s}" for d in self.datasets)]
        for variant in order:
            cells = [f"{a.mean():.3f} ({a.min():.3f}–{a.max():.3f})" for a in acc[self.variants.index(variant)]]
            rows.append(f"{variant:22s}" + "".join(f"{c:>24s}" for c in cells))
        return "\n".join(rows)


def train_grid(datasets, p=0.5, sizes=(PIXELS, 64, 64, CLASSES), seeds=(0, 1, 2), steps=250, batch_size=64,
               lr=1e-2, eval_every=25, seed=0):
    """Train the same MLP with neither, dropout p, batch norm, or both, on each dataset, once per seed.

    datasets: {name: Split}, the same images with different training labels (e.g. clean and noisy).
    All len(VARIANTS)·len(datasets)·len(seeds) models are trained at once (one `models.Stack` per variant) through
    `train.fit` (Adam, `lr`, `steps` mini-batches of `batch_size`). A model's seed sets its initial
    weights; all models see the same mini-batches in the same order (`seed`), so the variants differ
    only in what the comparison is about. The loss is the sum of the models' own losses, so each
    model's gradient is the one it would get alone. Every `eval_every` steps (and at the end) every
    model's train and test accuracy is recorded. Returns a `Grid`.
    """
    names = list(datasets)
    first = datasets[names[0]]
    for name in names[1:]:
        d = datasets[name]
        if not (torch.equal(d.x_train, first.x_train) and torch.equal(d.x_test, first.x_test)
                and torch.equal(d.y_test, first.y_test)):
            raise ValueError(f"datasets[{name!r}]: expected the same images (and test labels) as "
                             f"datasets[{names[0]!r}], only the training labels may differ")
    check_int("eval_every", eval_every)
    torch.manual_seed(seed)
    net = _Grid(sizes, p, [s for _ in names for s in seeds])            # per variant: datasets × seeds
    labels = [datasets[name] for _ in VARIANTS for name in names for _ in seeds]
    y_train = torch.stack([d.y_train for d in labels], 1)
    y_test = torch.stack([d.y_test for d in labels], 1)
    stacked = type(first)(first.x_train, y_train, first.x_test, y_test)

    @torch.no_grad()
    def accuracies(model, *_):
        model.eval()
        acc = [(model(x).argmax(1) == y).float().mean(0) for x, y in ((first.x_train, y_train),
                                                                       (first.x_test, y_test))]
        model.train()
        return acc

    history = train.fit(net, stacked, steps=steps, batch_size=batch_size, lr=lr, optimizer="adam",
                        eval_every=None, eval_train=False, callback=accuracies, callback_every=eval_every,
                        seed=seed, loss_fn=lambda out, y: cross_entropy(out, y, reduction="sum") / len(y))
    curves = history.extra + [accuracies(net)]
    shape = (len(VARIANTS), len(names), len(seeds), len(curves))
    train_acc, test_acc = (torch.stack([c[i] for c in curves], -1).view(shape) for i in (0, 1))
    net.eval()
    return Grid(list(VARIANTS), names, list(seeds), list(range(0, steps, eval_every)) + [steps],
                train_acc, test_acc, net)


# ----------------------------------------------------------------------------- exercise checkers
def check_dropout(fn):
    """Exercise: fn(x, p) -> inverted dropout of x in training mode.

    Checked statistically on 100,000 seeded positive inputs with p = 0.3: every output is 0 or
    x/(1 − p), and the dropped fraction is within 0.01 of p (7 standard errors).
    """
    p = 0.3
    g = torch.Generator().manual_seed(10)
    x = torch.rand(200, 500, generator=g, dtype=torch.float64) + 0.5
    torch.manual_seed(11)
    try:
        out = fn(x.clone(), p)
        out = None if out is None else torch.as_tensor(out).detach().double()
    except Exception as e:  # noqa: BLE001 (a student's error becomes the ✗ line)
        return check.raised("dropout", e)
    if out is None or out.shape != x.shape:
        return check.failed("dropout", f"expected a tensor of shape {tuple(x.shape)}, "
                                       f"got {None if out is None else tuple(out.shape)}")
    dropped = (out == 0).double().mean().item()
    kept = out != 0
    scale_err = (out[kept] - x[kept] / (1 - p)).abs().max().item() if kept.any() else 0.0
    if abs(dropped - p) > 0.01:
        return check.failed("dropout", f"expected about {100 * p:.1f} % of the elements dropped (zero), "
                                       f"got {100 * dropped:.1f} %", abs(dropped - p))
    if scale_err > 1e-9:
        return check.failed("dropout", f"expected survivors = x/(1 − p) = {check.head(x[kept] / (1 - p))}, "
                                       f"got {check.head(out[kept])}", scale_err)
    return check.passed("dropout", f"drops {100 * dropped:.1f} % (p = {p}) and scales the survivors by 1/(1 − p)",
                        scale_err)


def check_dropout_variance(fn):
    """Exercise: fn(c, v, p) -> variance of inverted dropout's training output for a unit with
    mean c and variance v (Li et al. 2019's variance shift)."""
    g = torch.Generator().manual_seed(12)
    c = torch.randn(6, generator=g, dtype=torch.float64)
    v = torch.rand(6, generator=g, dtype=torch.float64) + 0.1
    p = 0.4
    expected = (c * c + v) / (1 - p) - c * c
    return check.exercise("dropout_variance", fn, (c.clone(), v.clone(), p), expected,
                          "(c² + v)/(1 − p) − c²  (train-mode variance)")


def check_variation_ratio(fn):
    """Exercise: fn(probs) -> variation ratio of MC samples probs (T, N, C), one value per input:
    1 − (number of passes whose top class is the most voted class) / T."""
    g = torch.Generator().manual_seed(13)
    t, n, c = 20, 8, 10
    logits = 3 * torch.randn(1, n, c, generator=g, dtype=torch.float64) + 2 * torch.randn(t, n, c, generator=g,
                                                                                           dtype=torch.float64)
    probs = torch.softmax(logits, dim=-1)
    votes = nn.functional.one_hot(probs.argmax(-1), c).sum(0)          # (N, C): passes voting for each class
    expected = 1 - votes.max(-1).values.double() / t
    return check.exercise("variation_ratio", fn, (probs.clone(),), expected,
                          "1 − (votes for the modal class)/T", atol=1e-6)


# ----------------------------------------------------------------------------- the notebook's figures
def activation_panel(a, bins, p_grid, ratio_mean, ratio_var):
    """The slider panel of what dropout does to activations `a`; returns (figure, update(p)).

    Left: the distribution of the non-zero activations on a log axis (histogram over `bins`), in
    eval mode (grey) and after train-mode dropout at p (orange), with the eval mean, the train mean
    and where the train mean would be without the 1/(1 − p) scaling. Right: `ratio_mean` and
    `ratio_var` (train / eval, from `dropout_moments(a, p_grid)`) over `p_grid`, the current p ringed.
    The figure is closed: `explore.interact(fig, update, p=...)` shows it under its slider.
    """
    def density(v):
        return torch.histogram(v.flatten(), bins).hist / v.numel()

    zeros = f"{(a == 0).float().mean():.0%} zeros"
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 4.6), layout="constrained", width_ratios=(3, 2))
    ax.stairs(density(a), bins, fill=True, color="0.75", label=f"eval mode ({zeros})")
    train_hist = ax.stairs(density(a), bins, color="C1", lw=2, label="train mode")
    ax.axvline(a.mean(), color="k", lw=1, label="eval mean")
    train_mean = ax.axvline(a.mean(), color="C1", ls="--", lw=2, label="train mean")
    unscaled = ax.axvline(a.mean(), color="C3", ls=":", lw=2, label="train mean, no 1/(1−p)")
    ax.set(xscale="log", ylim=(0, 0.1), xlabel="activation value (log scale)",
           ylabel="fraction of activations", title="Activations, eval vs train mode")
    legend = ax.legend(loc="upper left")
    ax2.plot(p_grid, ratio_mean, "o-", label="mean: train / eval")
    ax2.plot(p_grid, ratio_var, "s-", label="variance: train / eval")
    ax2.plot(p_grid, [1 - q for q in p_grid], ":", color="C3", label="mean, no 1/(1−p)")
    marker, = ax2.plot([], [], "o", ms=14, mfc="none", mec="k", label="current p")
    ax2.set(yscale="log", xlabel="drop probability p", ylabel="ratio (log scale)",
            title="Mean kept, variance grows")
    ax2.legend(loc="upper left")
    ax.minorticks_off(), ax2.minorticks_off()       # one tick per decade: minor ticks cost most of a draw
    plt.close(fig)                  # shown by the slider panel

    def update(p):
        torch.manual_seed(0)
        d = functional.dropout(a, p, training=True)
        train_hist.set_data(density(d))
        legend.get_texts()[1].set_text(f"train mode ({(d == 0).float().mean():.0%} zeros)")
        train_mean.set_xdata([d.mean()] * 2)
        unscaled.set_xdata([(1 - p) * a.mean()] * 2)
        i = p_grid.index(round(p, 1))
        marker.set_data([p, p], [ratio_mean[i], ratio_var[i]])

    return fig, update


def plot_memorization(grid, dataset="40 % wrong labels"):
    """Test (clean labels) and train (noisy labels) accuracy against the step, without and with
    dropout, on `dataset` of a `Grid`: the mean over seeds, shaded from min to max; returns the figure."""
    fig, ax = plt.subplots(figsize=(10, 4.4), layout="constrained")
    d = grid.datasets.index(dataset)
    for v, color, mark in (("neither", "C0", "o"), ("dropout", "C1", "s")):
        for acc, ls, what in ((grid.test_acc, "-", "test (clean labels)"),
                              (grid.train_acc, "--", "train (noisy labels)")):
            runs = acc[grid.variants.index(v), d]
            ax.plot(grid.eval_steps, runs.mean(0), color=color, ls=ls, marker=mark, ms=5, label=f"{v}: {what}")
            ax.fill_between(grid.eval_steps, runs.min(0).values, runs.max(0).values, color=color, alpha=0.15, lw=0)
    ax.axhline(0.6, color="k", ls=":", lw=1, label="60 % of the training labels are right")
    ax.set(xlabel="training step", ylabel="accuracy (fraction)", ylim=(0, 1.02),
           title="40 % wrong labels: without dropout the network memorizes them")
    fig.legend(loc="outside right center")
    return fig


def plot_mc_dropout(mi, inputs):
    """Histograms of the MC-dropout mutual information `mi` (name → per-input scores) of each input
    set, and the first image of each set of `inputs` (name → images) beside them; returns the figure."""
    fig, axd = plt.subplot_mosaic([["h", "h", "a"], ["h", "h", "b"], ["h", "h", "c"]],
                                  figsize=(10, 4.4), layout="constrained")
    mi_bins = torch.linspace(0, 1.2, 41)
    for (k, v), c, ls, key in zip(mi.items(), ("C0", "C1", "C3"), ("-", "--", ":"), "abc"):
        axd["h"].stairs(torch.histogram(v, mi_bins).hist / len(v), mi_bins, color=c, ls=ls, lw=2,
                        label=f"{k} (mean {v.mean():.2f})")
        axd[key].imshow(inputs[k][0].view(8, 8), cmap="gray_r")
        axd[key].set_title(k)
        axd[key].axis("off")
    axd["h"].set(xlabel="mutual information over 30 passes (nats)", ylabel="fraction of inputs",
                 title="MC dropout: the passes disagree more off the data")
    axd["h"].legend()
    return fig


def plot_variance_shift(p_values, shifts):
    """Left: the variance shift (running var / real var) of `variance_shift` results `shifts` over
    `p_values`, measured vs Li et al.'s formula vs 1/(1 − p). Right: BN's output variance at test
    time, measured vs the formula, against the 1 BN promises. Returns the figure."""
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 4.2), layout="constrained")
    ax.plot(p_values, [r["shift"] for r in shifts], "o", ms=8, label="measured")
    ax.plot(p_values, [r["predicted_shift"] for r in shifts], "-", label="Li et al.'s formula")
    ax.plot(p_values, [1 / (1 - q) for q in p_values], ":", label="1/(1 − p): a zero-mean unit")
    ax.set(xlabel="drop probability p", ylabel="running var / real var",
           title="The variance shift (ReLU units → BN)")
    ax.legend()
    ax2.plot(p_values, [r["eval_out_var"].mean() for r in shifts], "o", color="C3", ms=8,
             label="measured")
    ax2.plot(p_values, [r["predicted_out_var"] for r in shifts], "-", color="C1",
             label="Li et al.'s formula")
    ax2.axhline(1, color="k", ls=":", label="what BN promises")
    ax2.set(xlabel="drop probability p", ylabel="variance (dimensionless)", ylim=(0, 1.1),
            title="BN output variance at test time")
    ax2.legend(loc="lower left")
    return fig
