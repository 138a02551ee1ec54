"""Notebook 02 (internal covariate shift): input normalization, covariate shift and internal covariate shift.

- input normalization (입력 정규화), why gradient descent needs it: `standardize`, `min_max_scale`;
  `scaled_regression` (two features whose scales differ by `ratio`), `hessian` of its squared loss,
  `conditioning` (eigenvalues, condition number κ, largest stable step 2/λ_max), `gd_path` and
  `steps_to_converge` (gradient descent on the quadratic, exactly), `loss_ellipses` (its contours),
  and `conditioning_sweep`: all of that for each ratio, raw vs min–max vs standardized;
  `ratio_panel` draws it as the notebook's slider panel (figure and update);
- covariate shift (공변량 변화) of the inputs: `shift_split` (two-class points at shift 0),
  `train_shift_classifier`, `accuracy_under_shift` (the same model on inputs moved by each shift).
- internal covariate shift (내부 공변량 변화), Ioffe & Szegedy 2015 Fig. 1 on digits:
  `sigmoid_mlp_run` trains the 3-layer sigmoid MLP of 100 units with or without batch norm and
  records the 15/50/85th percentiles of one unit's input to its last sigmoid
  (`sigmoid_input_name` finds that module); `percentile_drift` and `steps_to_accuracy` turn the
  History into the numbers the notebook states;
- the exercise checkers `check_unit_percentiles`, `check_importance_weight`.
"""
import math
from dataclasses import dataclass

import matplotlib.pyplot as plt
import torch
from torch import nn

from .. import check, data, models, train
from ..data import CLASSES, PIXELS
from ..validate import check_range

__all__ = ["standardize", "min_max_scale", "scaled_regression", "hessian", "conditioning", "gd_path",
           "steps_to_converge", "loss_ellipses", "conditioning_sweep", "Conditioning",
           "shift_split", "train_shift_classifier", "accuracy_under_shift", "sigmoid_input_name",
           "sigmoid_mlp_run", "percentile_drift", "steps_to_accuracy",
           "check_unit_percentiles", "check_importance_weight", "ratio_panel"]


# ====================================================================== input normalization
def standardize(x, stats_from=None):
    """(x − μ) / σ per column, μ and σ (biased) taken from `stats_from` (default: x itself).

    Take them from the training set and apply the same μ, σ to test inputs.
    """
    ref = x if stats_from is None else stats_from
    return (x - ref.mean(0)) / ref.std(0, correction=0)


def min_max_scale(x, stats_from=None):
    """(x − min) / (max − min) per column, min and max from `stats_from` (default: x): into [0, 1]."""
    ref = x if stats_from is None else stats_from
    lo, hi = ref.min(0).values, ref.max(0).values
    return (x - lo) / (hi - lo)


def scaled_regression(ratio, n=200, seed=0):
    """Two centred features with standard deviations `ratio` and 1 and a linear target, float64.

    z ~ N(0, I) made exactly mean 0 and variance 1 per column; x = z·diag(ratio, 1),
    y = z₁ + z₂ + 0.1·noise. Returns (x (n, 2), y (n,)). Every ratio uses the same z.
    """
    check_range("ratio", ratio, 1e-6, float("inf"))
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 2, generator=g, dtype=torch.float64)
    z = (z - z.mean(0)) / z.std(0, correction=0)
    y = z.sum(1) + 0.1 * torch.randn(n, generator=g, dtype=torch.float64)
    return z * torch.tensor([float(ratio), 1.0], dtype=torch.float64), y


def hessian(x):
    """Hessian of the linear-regression loss L(b, w) = 1/(2n)·Σ(b + xᵢ·w − yᵢ)²: [1, x]ᵀ[1, x] / n.

    Constant (the loss is quadratic), (D + 1, D + 1), the intercept b first.
    """
    x1 = torch.cat([torch.ones(len(x), 1, dtype=x.dtype), x], 1)
    return x1.T @ x1 / len(x)


@dataclass
class Conditioning:
    """What the Hessian's eigenvalues say about gradient descent on a quadratic."""
    lam_min: float
    lam_max: float
    kappa: float        # condition number λ_max / λ_min
    lr_max: float       # largest stable step 2 / λ_max (at or above it, gradient descent diverges)
    lr_best: float      # fastest constant step 2 / (λ_max + λ_min): error × (κ−1)/(κ+1) per step


def conditioning(h):
    """`Conditioning` of a symmetric positive definite Hessian `h`."""
    lam = torch.linalg.eigvalsh(h)
    lo, hi = lam[0].item(), lam[-1].item()
    return Conditioning(lo, hi, hi / lo, 2.0 / hi, 2.0 / (hi + lo))


def gd_path(h, start, lr, steps):
    """Gradient descent on ½·dᵀ h d (d: offset from the minimum) from `start`: (steps + 1, D) offsets."""
    d = torch.as_tensor(start, dtype=h.dtype)
    path = [d]
    for _ in range(steps):
        d = d - lr * (h @ d)
        path.append(d)
    return torch.stack(path)


def steps_to_converge(h, lr=None, tol=1e-3, start=None):
    """Gradient-descent steps until the distance to the minimum of ½·dᵀ h d is ≤ tol × the start's.

    Exact, from the eigen-decomposition: along eigenvector i the offset is multiplied by (1 − lr·λᵢ)
    every step. lr defaults to the fastest constant step 2/(λ_max + λ_min); start to all −1.
    Returns None if gradient descent does not converge (lr ≥ 2/λ_max).
    """
    lam, vecs = torch.linalg.eigh(h)
    lr = conditioning(h).lr_best if lr is None else lr
    start = -torch.ones(len(h), dtype=h.dtype) if start is None else torch.as_tensor(start, dtype=h.dtype)
    rho = (1 - lr * lam).abs()
    if rho.max() >= 1:
        return None
    coef = vecs.T @ start
    bound = math.ceil(math.log(tol) / math.log(max(rho.max().item(), 1e-300))) + 1   # ρ_max^t ≤ tol
    t = torch.arange(bound + 1, dtype=h.dtype)[:, None]
    dist = ((coef * rho ** t) ** 2).sum(1).sqrt()
    return int(torch.nonzero(dist <= tol * coef.norm())[0])


def loss_ellipses(h2, levels, n=120):
    """Contours ½·dᵀ h2 d = c of a 2-D quadratic, one closed (n, 2) curve per level c."""
    lam, vecs = torch.linalg.eigh(h2)
    theta = torch.linspace(0, 2 * math.pi, n, dtype=h2.dtype)
    circle = torch.stack([theta.cos(), theta.sin()], 1)
    return [(circle * (2 * c / lam).sqrt()) @ vecs.T for c in levels]


def conditioning_sweep(ratios, n=200, seed=0, tol=1e-3):
    """For each feature-scale ratio: {'raw' | 'min-max' | 'standardized': (Conditioning, steps)}.

    Steps: `steps_to_converge` at the fastest constant step, from all weights 1 below the minimum.
    Also 'hessian': the three Hessians (intercept first), for paths and contours.
    """
    out = {}
    for r in ratios:
        x, _ = scaled_regression(r, n=n, seed=seed)
        hs = {"raw": hessian(x), "min-max": hessian(min_max_scale(x)), "standardized": hessian(standardize(x))}
        out[r] = {k: (conditioning(h), steps_to_converge(h, tol=tol)) for k, h in hs.items()}
        out[r]["hessian"] = hs
    return out


def ratio_panel(sweep, levels=(0.02, 0.08, 0.32, 1.28)):
    """The slider panel of the feature-scale ratio r; returns (fig, update) for `explore.interact`.

    Left and middle: loss contours (at the loss values `levels`) in the two weight offsets and the
    gradient-descent path at the fastest constant step, raw and standardized features; right: steps to
    converge against r (raw, min-max, standardized), the current r circled. update(ratio) redraws the
    contours, paths and titles for that ratio of `sweep` (from `conditioning_sweep`).
    """
    ratios = list(sweep)
    fig, axes = plt.subplots(1, 3, figsize=(10, 4.1), width_ratios=(1, 1, 1.3))
    fig.subplots_adjust(left=0.07, right=0.99, bottom=0.23, top=0.92, wspace=0.38)   # fixed: no layout pass
    drawn = {}
    for ax, kind in zip(axes, ("raw", "standardized")):
        drawn[kind] = ([ax.plot([], [], color="0.55", lw=1)[0] for _ in levels],
                       ax.plot([], [], "o-", color="C3", ms=3, lw=0.8)[0])
        ax.plot([-1], [-1], "ks", ms=7)
        ax.plot([0], [0], "k*", ms=12)
        ax.set(xlim=(-1.6, 1.6), ylim=(-1.6, 1.6), aspect="equal", xlabel="w₁ − w₁* (weight offset)",
               ylabel="w₂ − w₂* (weight offset)")
    handles = [drawn["raw"][1], axes[0].lines[-2], axes[0].lines[-1], drawn["raw"][0][0]]
    fig.legend(handles, ["gradient descent", "start", "minimum", "loss contours"], loc="lower left",
               ncols=4)
    for kind, style in {"raw": "o-", "min-max": "s--", "standardized": "^:"}.items():
        axes[2].loglog(ratios, [sweep[r][kind][1] for r in ratios], style, label=kind)
    here, = axes[2].plot([], [], "o", ms=14, mfc="none", mec="k", mew=1.5)
    axes[2].set(title="steps to converge", xlabel="feature-scale ratio r", ylabel="gradient-descent steps")
    axes[2].set_xticks(ratios, [str(r) for r in ratios])
    axes[2].minorticks_off()
    axes[2].legend(loc="upper left")
    plt.close(fig)        # shown by explore.interact, under its slider

    def update(ratio):
        for kind, ax in zip(drawn, axes):
            h = sweep[ratio]["hessian"][kind][1:, 1:]       # the two weights; the intercept is decoupled
            cond, steps = sweep[ratio][kind]
            for line, curve in zip(drawn[kind][0], loss_ellipses(h, levels)):
                line.set_data(curve[:, 0], curve[:, 1])
            path = gd_path(h, [-1.0, -1.0], cond.lr_best, 25)
            drawn[kind][1].set_data(path[:, 0], path[:, 1])
            ax.set_title(f"{kind}: κ = {cond.kappa:.0f}, {steps} steps")
        here.set_data([ratio], [sweep[ratio]["raw"][1]])

    return fig, update


# ====================================================================== covariate shift of inputs
def shift_split(n=1000, seed=0):
    """Train and test points of `data.covariate_shift` at shift 0 (different seeds) as a Split."""
    x_tr, y_tr = data.covariate_shift(n=n, shift=0.0, seed=seed)
    x_te, y_te = data.covariate_shift(n=n, shift=0.0, seed=seed + 1)
    return data.Split(x_tr, y_tr, x_te, y_te)


def train_shift_classifier(split, width=32, steps=250, lr=0.02, batch_size=128, seed=0):
    """An mlp([2, width, width, 2]) trained with Adam on `split`; returns (model, History)."""
    torch.manual_seed(seed)
    model = models.mlp([2, width, width, 2])
    hist = train.fit(model, split, steps=steps, batch_size=batch_size, lr=lr, optimizer="adam",
                     eval_every=steps, seed=seed)
    return model, hist


def accuracy_under_shift(model, shifts, n=1000, seed=100):
    """Accuracy of `model` on fresh `data.covariate_shift(n, shift)` points, one per shift."""
    return [train.accuracy(model, *data.covariate_shift(n=n, shift=float(s), seed=seed))
            for s in shifts]


# ============================================================ internal covariate shift (Fig. 1)
def sigmoid_input_name(model):
    """Name (as in model.named_modules()) of the module whose output feeds the last Sigmoid.

    Without batch norm that is the Linear layer before it; with batch norm, the BatchNorm1d.
    """
    names = [name for name, _ in model.named_children()]
    last = max((i for i, (_, m) in enumerate(model.named_children()) if isinstance(m, nn.Sigmoid)),
               default=None)
    if last is None or last == 0:
        raise ValueError("model: expected an nn.Sequential with a Sigmoid after its first layer")
    return names[last - 1]


def sigmoid_mlp_run(batch_norm, steps=300, lr=0.003, optimizer="adam", batch_size=60, eval_every=20,
                    seed=0):
    """Ioffe & Szegedy's Fig. 1 network on digits: 64 pixels → 100 → 100 → 100 → 10 classes, sigmoid.

    batch_norm=True inserts BatchNorm1d between every hidden Linear and its sigmoid (the paper's
    placement). Adam by default, mini-batches of 60. Returns (History, name of the watched module): the
    History records test accuracy and the 15/50/85th percentiles of unit 0's input to the last
    sigmoid over the test digits, every `eval_every` steps.
    """
    torch.manual_seed(seed)
    model = models.mlp([PIXELS, 100, 100, 100, CLASSES], activation="sigmoid",
                       norm="batch" if batch_norm else None)
    name = sigmoid_input_name(model)
    hist = train.fit(model, data.digits(), steps=steps, batch_size=batch_size, lr=lr, optimizer=optimizer,
                     eval_every=eval_every, eval_train=False, watch=(name,), seed=seed)
    return hist, name


def percentile_drift(history, name, after=0):
    """How far each watched percentile moves: {'q15'|'q50'|'q85': max − min over evaluations ≥ after}."""
    rows = [r for s, r in zip(history.eval_steps, history.activations[name]) if s >= after]
    if not rows:
        raise ValueError(f"after={after!r}: no evaluation at or after that step "
                         f"(last was {history.eval_steps[-1]})")
    return {q: max(r[q] for r in rows) - min(r[q] for r in rows) for q in ("q15", "q50", "q85")}


def steps_to_accuracy(history, target):
    """First evaluated step with test accuracy ≥ target, or None if training never got there."""
    return next((s for s, a in zip(history.eval_steps, history.test_acc) if a >= target), None)


# ============================================================================ exercise checkers
def check_unit_percentiles(fn):
    """Exercise: fn(z, unit) -> (q15, q50, q85), the 15/50/85th percentiles of column `unit` of
    z (N, D), linearly interpolated (torch.quantile's and numpy's default)."""
    z = torch.randn(37, 6, generator=torch.Generator().manual_seed(22), dtype=torch.float64) * 2 + 1
    expected = torch.quantile(z[:, 4], torch.tensor([0.15, 0.5, 0.85], dtype=torch.float64))

    def three(z, unit):
        out = fn(z, unit)
        if out is None or any(q is None for q in out):
            return None
        return torch.tensor([float(q) for q in out], dtype=torch.float64)
    return check.exercise("unit_percentiles (q15, q50, q85)", three, (z.clone(), 4), expected,
                          "torch.quantile(z[:, unit], [0.15, 0.5, 0.85])")


def check_importance_weight(fn):
    """Exercise: fn(x, shift) -> p_test(x) / p_train(x) for each row of x (N, 2), with training
    inputs ~ N((0, 0), I) and test inputs ~ N((shift, 0), I) (data.covariate_shift)."""
    x = torch.randn(12, 2, generator=torch.Generator().manual_seed(23), dtype=torch.float64)
    shift = 1.5
    normal = torch.distributions.Normal(torch.tensor(0.0, dtype=torch.float64), 1.0)
    expected = (normal.log_prob(x[:, 0] - shift) - normal.log_prob(x[:, 0])).exp()
    return check.exercise("importance_weight", fn, (x.clone(), shift), expected,
                          "the ratio of the two Gaussian densities, exp(shift·x₁ − shift²/2)")
