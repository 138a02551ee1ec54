"""Notebook 07 (L1 vs L2): where the penalized optimum goes, sparsity, AdamW, L2 before BN.

The penalties themselves live in `normkit.regularize`; this module runs what the notebook plots:

- `penalized_minimum`, `seed_loss_l1_minimum`, `level_curve`, `optimum_path` (the 1-D and 2-D
  optimum paths; where the minimum moves and what its value does);
- `SparsityRun`, `sparsity_sweep`, `mosaic` (softmax regressions on digits under L1, proximal and
  subgradient, and L2; exact zeros and weight maps);
- `offset_regression`, `fit_line` (why biases are left out of the penalty);
- `effective_decay`, `adam_vs_adamw` (the per-parameter decay of Adam + L2 vs AdamW);
- `bn_weight_norm_run` (the weight norm of a layer feeding BN, with and without weight decay);
- the exercise checkers `check_l1_minimum`, `check_elastic_net_step`, `check_weight_penalty`;
- the notebook's figures: `circle_diamond_panel`, `sparsity_panel` (slider panels), `plot_bias_penalty`.
"""
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn

from .. import check, data, models, train
from ..data import CLASSES, PIXELS
from ..optim import Adam, AdamW
from ..regularize import decay_groups, soft_threshold
from ..validate import check_range

__all__ = ["penalized_minimum", "seed_loss_l1_minimum", "level_curve", "optimum_path", "SparsityRun", "sparsity_sweep",
           "mosaic", "offset_regression", "fit_line", "effective_decay", "adam_vs_adamw",
           "bn_weight_norm_run", "check_l1_minimum", "check_elastic_net_step", "check_weight_penalty",
           "circle_diamond_panel", "sparsity_panel", "plot_bias_penalty"]


# ----------------------------------------------------------------------------- 1-D and 2-D pictures
def penalized_minimum(lam):
    """Seed 004's loss plus ½λw² at its minimum: (minimizer w*, minimum value L(w*) + ½λw*², L(w*)).

    w* = data.seed_loss_minimum(λ) moves from 4.5 toward 0 as λ grows, while the minimum value
    rises: the penalty is ≥ 0 and L ≥ 1 everywhere, and L(w*) itself grows as w* leaves 4.5.
    """
    w = data.seed_loss_minimum(lam)
    loss = float(data.seed_loss(w))
    return w, loss + 0.5 * lam * w * w, loss


def seed_loss_l1_minimum(alpha):
    """argmin_w of data.seed_loss(w) + α·|w|, in closed form.

    seed_loss = ¼(w − 4.5)² + 1 has curvature ½, so the minimizer is the soft-threshold of the
    unpenalized minimum 4.5 by 2α: max(4.5 − 2α, 0). It reaches exactly 0 at α = 2.25 and stays there.
    """
    check_range("alpha", alpha)
    return soft_threshold(torch.tensor(4.5, dtype=torch.float64), 2 * alpha).item()


def level_curve(q, w, n=200):
    """Points (x, y) of the contour of the Quadratic2D `q` through the point w (an ellipse)."""
    c = float(q(float(w[0]), float(w[1])))
    evals, evecs = np.linalg.eigh(q.A.numpy())
    t = np.linspace(0, 2 * np.pi, n)
    circle = np.stack([np.cos(t), np.sin(t)])                       # ½ dᵀAd = c  ⇔  d = √(2c) A^(-½) u
    d = evecs @ (np.sqrt(2 * c / evals)[:, None] * circle)
    return q.w_star[0].item() + d[0], q.w_star[1].item() + d[1]


def optimum_path(q, lams, lasso_steps=100):
    """The penalized optima of `q` for each λ: (ridge (K, 2), lasso (K, 2)) as numpy arrays.

    Ridge: argmin L + ½λ‖w‖², closed form. Lasso: argmin L + λ‖w‖₁ by proximal gradient
    (ISTA, soft-thresholding); 100 steps converge to float64 precision for q's condition number.
    """
    ridge = np.stack([q.ridge(float(lam)).numpy() for lam in lams])
    lasso = np.stack([q.lasso(float(lam), steps=lasso_steps).numpy() for lam in lams])
    return ridge, lasso


# ----------------------------------------------------------------------------- sparsity on digits
@dataclass
class SparsityRun:
    """Softmax regressions on digits, one per λ: weights W (K, 64, 10), biases b (K, 10)."""
    lams: list
    penalty: str
    W: torch.Tensor
    b: torch.Tensor
    test_acc: torch.Tensor    # (K,)

    @property
    def zeros(self):
        """Number of weights that are exactly 0, per λ (biases are not penalized, not counted)."""
        return (self.W == 0).sum((1, 2))


_PENALTIES = ("l1_prox", "l1_subgradient", "l2")


def sparsity_sweep(data, lams, penalty, steps=150, lr=1.0, init_std=0.01, seed=0):
    """Full-batch gradient descent on softmax regression (64 pixels → 10 classes) for every λ at once.

    penalty: "l2"             gradient of ½λ‖W‖² added: W ← W − lr(∇L + λW)
             "l1_subgradient" subgradient of λ‖W‖₁ added: W ← W − lr(∇L + λ·sign(W))
             "l1_prox"        gradient step on L, then W ← soft_threshold(W, lr·λ) (proximal gradient)
    Biases are never penalized. W starts at N(0, init_std²), so no weight starts at exactly 0.
    The K models are independent; they are stacked in one tensor only to train them together.
    """
    if penalty not in _PENALTIES:
        raise ValueError(f"penalty={penalty!r}: expected one of {_PENALTIES}")
    for lam in lams:
        check_range("lam", lam)
    g = torch.Generator().manual_seed(seed)
    k, x, n = len(lams), data.x_train, len(data.x_train)
    lam = torch.tensor(lams, dtype=x.dtype).view(1, k, 1)
    # Layout (class, model, pixel): the K models share one matrix product per step, and the softmax
    # runs over the leading axis (measured ~20× faster on CPU than over a trailing axis of 10).
    P, C = PIXELS, CLASSES
    W = (init_std * torch.randn(P, C, generator=g)).T.reshape(C, 1, P).repeat(1, k, 1)
    b = torch.zeros(C, k, 1)
    onehot = torch.nn.functional.one_hot(data.y_train, C).to(x.dtype).T.reshape(C, 1, n)
    for _ in range(steps):
        logits = (W.view(C * k, P) @ x.T).view(C, k, n) + b
        err = torch.softmax(logits, 0) - onehot                      # ∂(mean cross-entropy)/∂logits · N
        gW, gb = (err.view(C * k, n) @ x).view(C, k, P) / n, err.mean(2, keepdim=True)
        if penalty == "l2":
            gW = gW + lam * W
        elif penalty == "l1_subgradient":
            gW = gW + lam * torch.sign(W)
        W, b = W - lr * gW, b - lr * gb
        if penalty == "l1_prox":
            W = torch.stack([soft_threshold(W[:, i], lr * lams[i]) for i in range(k)], 1)
    W, b = W.permute(1, 2, 0).contiguous(), b[:, :, 0].T.contiguous()     # (K, 64, 10), (K, 10)
    acc = ((data.x_test @ W + b.unsqueeze(1)).argmax(-1) == data.y_test).float().mean(1)
    return SparsityRun(list(lams), penalty, W, b, acc)


def mosaic(*weights, cols=5, gap=1):
    """Weight maps as one image: each (64, 10) matrix → its 10 columns as 8×8 tiles in rows of `cols`.

    Several matrices are stacked top to bottom, two rows apart. Gaps are NaN (blank in imshow).
    """
    blocks = []
    for W in weights:
        W = torch.as_tensor(W).detach().double()
        rows = -(-W.shape[1] // cols)
        out = np.full((rows * (8 + gap) - gap, cols * (8 + gap) - gap), np.nan)
        for c in range(W.shape[1]):
            r0, c0 = (c // cols) * (8 + gap), (c % cols) * (8 + gap)
            out[r0:r0 + 8, c0:c0 + 8] = W[:, c].reshape(8, 8).numpy()
        if blocks:
            blocks.append(np.full((2, out.shape[1]), np.nan))
        blocks.append(out)
    return np.vstack(blocks)


# ----------------------------------------------------------------------------- biases
def offset_regression(n=30, seed=0):
    """x in [−2, 2], y = 5 + 0.5·x + noise: data far from the origin, where the bias matters."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, generator=g, dtype=torch.float64) * 4 - 2
    return x, 5.0 + 0.5 * x + 0.3 * torch.randn(n, generator=g, dtype=torch.float64)


def fit_line(x, y, lam, penalize_bias=False):
    """argmin over (w, b) of mean ½(y − wx − b)² + ½λ(w² [+ b²]), in closed form. Returns (w, b)."""
    check_range("lam", lam)
    X = torch.stack([x, torch.ones_like(x)], 1)
    D = torch.diag(torch.tensor([1.0, float(penalize_bias)], dtype=x.dtype))
    w, b = torch.linalg.solve(X.T @ X / len(x) + lam * D, X.T @ y / len(x)).tolist()
    return w, b


# ----------------------------------------------------------------------------- Adam + L2 vs AdamW
def effective_decay(optimizer):
    """Per weight: (RMS gradient √v̂, the decay coefficient: the penalty's step as a fraction of w).

    AdamW (decoupled): w ← w − lr·λ·w, the same fraction lr·λ for every weight.
    Adam with weight_decay (L2 in the gradient): λw enters the gradient and is divided by √v̂ + ε like the
    rest, so the fraction is lr·λ/(√v̂ + ε): weights with large past gradients decay less. (Adam's
    momentum averages λw over recent steps; w changes slowly, so this is the coefficient that
    multiplies w.) Above 1 the step overshoots 0: Adam then moves the weight by about lr per step.
    Only parameter groups with weight_decay > 0 are reported. Returns two 1-D tensors.
    Works with normkit.optim.Adam/AdamW and torch.optim.Adam/AdamW.
    """
    decoupled = getattr(optimizer, "decoupled", isinstance(optimizer, torch.optim.AdamW))
    rms, rate = [], []
    for group in optimizer.param_groups:
        lr, lam, eps = group["lr"], group["weight_decay"], group["eps"]
        beta2 = group["betas"][1]
        if lam == 0:
            continue
        for p in group["params"]:
            state = optimizer.state[p]
            vhat = state["exp_avg_sq"] / (1 - beta2 ** float(state["step"]))
            r = vhat.sqrt().flatten()
            rms.append(r)
            rate.append(torch.full_like(r, lr * lam) if decoupled else lr * lam / (r + eps))
    return torch.cat(rms), torch.cat(rate)


def adam_vs_adamw(lam=1e-2, lr=1e-3, steps=150, sizes=(PIXELS, 64, CLASSES), seed=0):
    """Train the same MLP on digits with Adam(weight_decay=λ) and AdamW(weight_decay=λ).

    Returns {"adam": (rms, rate, history), "adamw": (rms, rate, history)} with effective_decay's
    tensors at the end of training and the train.History (loss, final test accuracy).
    """
    out = {}
    for name, cls in (("adam", Adam), ("adamw", AdamW)):
        torch.manual_seed(seed)
        model = models.mlp(list(sizes))
        opt = cls(decay_groups(model, lam), lr=lr)
        history = train.fit(model, data.digits(), steps=steps, optimizer=opt, seed=seed, eval_every=None,
                            eval_train=False)
        out[name] = (*effective_decay(opt), history)
    return out


# ----------------------------------------------------------------------------- L2 before BN
def bn_weight_norm_run(weight_decay, lr=0.5, steps=200, seed=0):
    """MLP 64 → 100 → BN → ReLU → 10 trained with SGD; track the first layer's weight norm.

    That layer feeds batch norm, so its scale does not change the network's output; weight decay
    (train.fit's SGD on decay_groups: BN's γ, β and the last bias excluded) shrinks it anyway.
    Returns (history, mean squared row norm ‖w_j‖² before every step: a list).
    """
    torch.manual_seed(seed)
    model = models.mlp([PIXELS, 100, CLASSES], norm="batch")
    first = next(m for m in model.modules() if isinstance(m, nn.Linear))
    history = train.fit(model, data.digits(), steps=steps, lr=lr, weight_decay=weight_decay, seed=seed,
                        eval_every=None, eval_train=False, callback_every=1,
                        callback=lambda m, x, y: first.weight.detach().pow(2).sum(1).mean().item())
    return history, history.extra


# ----------------------------------------------------------------------------- exercise checkers
def check_l1_minimum(fn):
    """Exercise: fn(alpha) -> argmin_w of ¼(w − 4.5)² + 1 + α|w| (seed 004's loss + L1)."""
    alphas = [0.0, 0.5, 1.0, 2.0, 2.25, 3.0, 5.0]
    expected = torch.tensor([max(4.5 - 2 * a, 0.0) for a in alphas], dtype=torch.float64)
    try:
        if fn(alphas[0]) is None:              # the exercise's stub: say what a number it should be
            return check.failed("l1_minimum", "expected a number, the minimizer w* (4.5 at α = 0), got None")
    except Exception as e:  # noqa: BLE001 (a student's error becomes the ✗ line)
        return check.raised("l1_minimum", e)
    return check.exercise("l1_minimum", check.each(fn), (alphas,), expected,
                          "max(4.5 − 2α, 0) for α = 0 … 5", atol=1e-6)


def check_elastic_net_step(fn):
    """Exercise: fn(w, t1, t2) -> the proximal step of the elastic-net penalty, elementwise:
    argmin_v ½(v − w)² + t1·|v| + ½·t2·v² = sign(w)·max(|w| − t1, 0) / (1 + t2)."""
    w = torch.randn(20, generator=torch.Generator().manual_seed(70), dtype=torch.float64) * 2
    t1, t2 = 0.7, 0.5
    expected = torch.nn.functional.softshrink(w, t1) / (1 + t2)
    return check.exercise("elastic_net_step", fn, (w.clone(), t1, t2), expected,
                          "softshrink(w, t1) / (1 + t2)")


def check_weight_penalty(fn):
    """Exercise: fn(model, lam) -> ½·λ·Σw² over the weights of Linear layers only.

    Checked on Linear(5, 4) → BatchNorm1d(4) → ReLU → Linear(4, 3) with non-trivial biases, γ and β:
    they must not enter the penalty.
    """
    with torch.random.fork_rng(), torch.no_grad():   # seeded, without touching the notebook's RNG
        torch.manual_seed(71)
        model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.BatchNorm1d(4), torch.nn.ReLU(),
                                    torch.nn.Linear(4, 3)).double()
        for p in model.parameters():
            p.add_(torch.rand_like(p))
    lam = 0.3
    expected = 0.5 * lam * sum((m.weight ** 2).sum() for m in model if isinstance(m, torch.nn.Linear))

    def penalty(model, lam):
        out = fn(model, lam)
        return None if out is None else torch.as_tensor(out, dtype=torch.float64).reshape(())
    try:
        if fn(model, lam) is None:             # the exercise's stub: say what a number it should be
            return check.failed("weight_penalty", "expected a number, ½λ·Σw² over the weights, got None")
    except Exception as e:  # noqa: BLE001 (a student's error becomes the ✗ line)
        return check.raised("weight_penalty", e)
    return check.exercise("weight_penalty", penalty, (model, lam), expected.detach(),
                          "½λ·Σ (Linear weights)², biases and BN γ, β left out")


# ----------------------------------------------------------------------------- the notebook's figures
def circle_diamond_panel(quad, lams, ridge, lasso):
    """The 2-D slider panel; returns (figure, update(lam)).

    Two panels on the loss contours of the Quadratic2D `quad`: the ridge and the lasso optimum
    paths (`ridge`, `lasso` from `optimum_path(quad, lams)`), w*, and at the slider's λ (one of
    `lams`) the constraint set (circle of the ridge optimum's L2 norm, diamond of the lasso
    optimum's L1 norm), the loss contour through the optimum, and the optimum itself.
    The figure is closed: `explore.interact(fig, update, lam=...)` shows it under its slider.
    """
    titles = {"l2": "L2 (ridge): circle", "l1": "L1 (lasso): diamond"}
    W1, W2, L = quad.grid(lim=2.6)
    angle = np.linspace(0, 2 * np.pi, 200)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4), layout="constrained", sharey=True)
    art = []
    for ax, path in zip(axes, (ridge, lasso)):
        ax.contour(W1, W2, L, levels=[0.02, 0.1, 0.25, 0.5, 0.8, 1.2, 1.7, 2.3], colors="0.8", linewidths=0.8)
        ax.axhline(0, color="k", lw=0.5), ax.axvline(0, color="k", lw=0.5)
        ax.plot(path[:, 0], path[:, 1], "C2-", lw=2, label="optimum, λ = 0 … 2.5")
        ax.plot(*quad.w_star.numpy(), "k*", ms=10, label="w*: minimum of L")
        art.append([ax.plot([], [], "C0", zorder=2.1, label="constraint set")[0],
                    ax.plot([], [], "C3", ls="--", lw=1, zorder=2.1, label="loss contour")[0],
                    ax.plot([], [], "C3o", zorder=2.1, label="optimum at λ")[0]])
        ax.set(xlabel="w₁ (weight)", aspect="equal", xlim=(-1.3, 2.6), ylim=(-1.3, 2.6))
    axes[0].set_ylabel("w₂ (weight)")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside right center")
    plt.close(fig)                                 # shown by the slider panel

    def update(lam):
        i = lams.index(lam)
        for ax, (ball, contour, dot), w, kind in zip(axes, art, (ridge[i], lasso[i]), ("l2", "l1")):
            r = np.linalg.norm(w, 1 if kind == "l1" else 2)
            ball.set_data(*((r * np.cos(angle), r * np.sin(angle)) if kind == "l2"
                            else ([r, 0, -r, 0, r], [0, r, 0, -r, 0])))
            contour.set_data(*level_curve(quad, w))
            dot.set_data([w[0]], [w[1]])
            ax.set_title(f"{titles[kind]}, λ = {lam}\nw = ({w[0]:.2f}, {w[1]:.2f})")

    return fig, update


def sparsity_panel(lams, sweeps):
    """The weight-map slider panel; returns (figure, update(lam)).

    Left: the count of exactly-zero weights against λ (log axis) for each run of `sweeps`
    (penalty → `SparsityRun` over `lams`), the slider's λ ringed. Right: the ten weight maps of the
    L1-prox run (top) and the L2 run (below) at that λ, exact zeros in gray.
    The figure is closed: `explore.interact(fig, update, lam=...)` shows it under its slider.
    """
    fig, (ax_count, ax_maps) = plt.subplots(1, 2, figsize=(10, 4.6), layout="constrained", width_ratios=(1.2, 1))
    for (p, s), style in zip(sweeps.items(), ("o-", "s--", "^:")):
        ax_count.plot(lams[1:], s.zeros[1:], style, label=p)
    ring, = ax_count.plot([], [], "o", ms=12, mfc="none", mec="k", zorder=6)   # above the legend
    ax_count.set(xscale="log", title="Exactly-zero weights (of 640)", xlabel="λ (log scale)", ylabel="count")
    ax_count.set_xticks(lams[1:], [f"{lam:g}" for lam in lams[1:]], rotation=45)
    ax_count.minorticks_off()
    ax_count.legend(loc="center left")
    blank = np.full(mosaic(sweeps["l1_prox"].W[0], sweeps["l2"].W[0]).shape, np.nan)
    maps = ax_maps.imshow(blank, cmap="RdBu_r", vmin=-1, vmax=1)
    zeros = ax_maps.imshow(blank, cmap=plt.matplotlib.colors.ListedColormap(["0.5"]), vmin=0, vmax=1)
    ax_maps.set(xticks=[], yticks=[8, 27], yticklabels=["L1 prox", "L2"], xlabel="digits 0–4 (upper), 5–9 (lower)")
    fig.colorbar(maps, ax=ax_maps, shrink=0.8, label="weight (gray: exactly 0)")
    plt.close(fig)                                 # shown by the slider panel

    def update(lam):
        i = lams.index(lam)
        m = mosaic(sweeps["l1_prox"].W[i], sweeps["l2"].W[i])      # L1-prox maps on top, L2 below
        maps.set_data(m)
        zeros.set_data(np.where(m == 0, 1.0, np.nan))
        counts = [s.zeros[i] for s in sweeps.values()] if lam else []      # λ = 0 is off the log axis
        ring.set_data([lam] * len(counts), counts)
        ax_maps.set_title(f"λ = {lam:g}: {sweeps['l1_prox'].zeros[i]} zeros (L1), {sweeps['l2'].zeros[i]} (L2)")

    return fig, update


def plot_bias_penalty(x, y):
    """The data (x, y) of `offset_regression` and three `fit_line` fits: λ = 0, λ = 1 on the weight
    only, λ = 1 on weight and bias (which pulls the whole line toward 0). Returns the figure."""
    grid = torch.linspace(-2, 2, 50, dtype=torch.float64)
    fig, ax = plt.subplots(figsize=(10, 3.8), layout="constrained")
    ax.plot(x, y, "k.", label="data: y = 5 + 0.5x + noise")
    for lam, penalize_bias, style in ((0.0, False, "C2:"), (1.0, False, "C0-"), (1.0, True, "C3--")):
        w, b = fit_line(x, y, lam, penalize_bias)
        which = "weight and bias" if penalize_bias else "weight only"
        ax.plot(grid, w * grid + b, style, label=f"λ = {lam:g}, penalty on {which}: w = {w:.2f}, b = {b:.2f}")
    ax.set(title="L2 on the bias pulls the whole line toward 0", xlabel="x", ylabel="y", ylim=(0, 7))
    ax.legend(loc="lower right")
    return fig
