"""Stochastic regularization as experiments: dropout (notebook 06) and noise injection (notebook 08).

The techniques themselves live in `normkit.functional` (`dropout`, `gaussian_noise`) and
`normkit.layers` (`Dropout`, `GaussianNoise`, `BatchNorm1d`); this module holds what the notebooks
measure with them:

- dropout:  `dropout_moments` (mean and variance vs p), `dropout_train_variance` (Li et al.
  2019's variance shift, in closed form),
  `variance_shift` (measure it on a Dropout → BatchNorm1d pair), `bn_input_variance`,
  `recalibrate_bn`, `mc_dropout` / `predictive_spread` / `auroc` (MC dropout uncertainty),
  `compare_dropout` (a run with and a run without dropout).
- noise injection:  `regression` (a small linear problem), `ridge` (closed form),
  `train_linear_with_noise` (input or weight noise, many σ at once), `fit_lambda`,
  `expected_noisy_loss` (Bishop 1995 for a linear model), `weight_noise_penalty` (½σ²·tr H) with
  `tiny_net` (a nonlinear model small enough for an exact Hessian),
  `bn_noise` (batch norm's multiplicative and additive noise per mini-batch).

Loss convention for the linear experiments (the seeds' ½λ‖w‖² penalty, `regularize.l2_penalty`):

    E(w, b) = ½ · mean_i (y_i − wᵀx_i − b)²,      ridge:  E(w, b) + ½ λ ‖w‖²  (bias not penalized).
"""
import math

import torch
from torch import nn

from . import layers, optim
from .functional import gaussian_noise
from .validate import check_range

__all__ = ["dropout_train_variance", "dropout_moments", "variance_shift", "bn_input_variance", "recalibrate_bn",
           "mc_dropout", "predictive_spread", "auroc", "compare_dropout",
           "regression", "ridge", "train_linear_with_noise", "fit_lambda", "expected_noisy_loss",
           "weight_noise_penalty", "tiny_net", "bn_noise", "spread"]


# ============================================================================ dropout (notebook 06)
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
    from .functional import dropout
    mean_ratio, var_ratio = [], []
    for p in ps:
        torch.manual_seed(seed)
        d = dropout(x, float(p), training=True)
        mean_ratio.append((d.mean() / x.mean()).item())
        var_ratio.append((d.var() / x.var()).item())
    return mean_ratio, var_ratio


def variance_shift(x, p, steps=300, batch_size=64, seed=0):
    """Feed rows of `x` (N, D) through Dropout(p) → BatchNorm1d(D) in training, then evaluate.

    BN's running variance learns the *training-mode* variance of its input (dropout on); in eval
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
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    drop, bn = layers.Dropout(p), layers.BatchNorm1d(x.shape[1], affine=False)
    with torch.no_grad():
        for _ in range(steps):
            bn(drop(x[torch.randint(len(x), (batch_size,), generator=gen)]))
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


@torch.no_grad()
def mc_dropout(model, x, samples=100, seed=0):
    """Monte Carlo dropout (Gal & Ghahramani 2016): `samples` stochastic forward passes.

    Dropout layers stay in training mode, everything else (batch norm) in eval mode.
    Returns softmax probabilities of shape (samples, N, classes); the model is left in eval mode.
    """
    if not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples={samples!r}: expected a positive int")
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


def compare_dropout(data, p=0.5, sizes=(64, 128, 128, 10), steps=500, batch_size=64, lr=3e-3,
                    eval_every=25, seed=0, **mlp_kw):
    """Train the same MLP twice on `data`, without and with dropout p (Adam): {0.0: History, p: History}.

    Both runs start from the same initial weights and see the same mini-batches. The trained
    models are returned too, as history.model.
    """
    from . import models, train
    runs = {}
    for q in (0.0, p):
        torch.manual_seed(seed)
        model = models.mlp(list(sizes), dropout=q, **mlp_kw)
        hist = train.fit(model, data, steps=steps, batch_size=batch_size, lr=lr, optimizer="adam",
                         eval_every=eval_every, seed=seed)
        hist.model = model
        runs[q] = hist
    return runs


# ===================================================================== noise injection (notebook 08)
def regression(n=40, d=6, correlation=0.7, noise=0.5, seed=0):
    """A small linear regression problem with correlated features (float64).

    x: (n, d), each column standardized (mean 0, variance 1 over the n rows), with
    corr(x_j, x_k) ≈ correlation^|j−k|; y = x·w_true + 0.3 + N(0, noise²). Returns (x, y, w_true).
    """
    if not isinstance(n, int) or n < 2 or not isinstance(d, int) or d < 1:
        raise ValueError(f"n={n!r}, d={d!r}: expected ints n >= 2, d >= 1")
    check_range("correlation", correlation, 0.0, 0.99)
    check_range("noise", noise)
    g = torch.Generator().manual_seed(seed)
    k = torch.arange(d)
    cov = correlation ** (k[:, None] - k[None, :]).abs().double()
    x = torch.randn(n, d, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(cov).T
    x = (x - x.mean(0)) / x.std(0, unbiased=False)
    w_true = torch.linspace(-1.0, 2.0, d, dtype=torch.float64)[torch.randperm(d, generator=g)]
    y = x @ w_true + 0.3 + noise * torch.randn(n, generator=g, dtype=torch.float64)
    return x, y, w_true


def ridge(x, y, lam):
    """argmin_{w,b} ½·mean((y − x·w − b)²) + ½·λ·‖w‖²  (bias not penalized), in closed form.

    Center x and y, solve (xcᵀxc/n + λI) w = xcᵀyc/n, then b = ȳ − x̄·w. `lam` may be a
    number or a 1-D tensor of K values (then w is (K, d) and b is (K,)).
    """
    lams = torch.as_tensor(lam, dtype=x.dtype)
    if (lams < 0).any() or torch.isnan(lams).any():
        raise ValueError(f"lam={lam!r}: expected numbers >= 0")
    n, d = x.shape
    xm, ym = x.mean(0), y.mean()
    xc, yc = x - xm, y - ym
    eye = torch.eye(d, dtype=x.dtype)
    A = xc.T @ xc / n + lams.reshape(-1, 1, 1) * eye
    rhs = (xc.T @ yc / n).expand(len(A), d).unsqueeze(-1)
    w = torch.linalg.solve(A, rhs).squeeze(-1)
    b = ym - w @ xm
    return (w[0], b[0]) if lams.dim() == 0 else (w, b)


def train_linear_with_noise(x, y, sigmas, where="input", steps=4000, lr=0.05, seed=1):
    """Fit y ≈ x·w + b by full-batch gradient descent on ½·mean(residual²), with fresh noise every step.

    One model per value in `sigmas`, all trained side by side. The noise is
    `functional.gaussian_noise` (what `nk.GaussianNoise(σ)` does in training): where="input" feeds
    each step x + N(0, σ²) (Bishop 1995); where="weight" gives each example its own noisy copy of
    the weights, w + N(0, σ²). Returns (w (S, d), b (S,)), the average of the iterates over the
    second half of training (Polyak averaging: the last iterate still jitters with the noise).
    """
    if where not in ("input", "weight"):
        raise ValueError(f"where={where!r}: expected 'input' or 'weight'")
    sigmas = [float(s) for s in sigmas]
    for s in sigmas:
        check_range("sigmas", s)
    n, d = x.shape
    torch.manual_seed(seed)
    w, b = torch.zeros(len(sigmas), d, dtype=x.dtype), torch.zeros(len(sigmas), dtype=x.dtype)
    w_sum, b_sum = torch.zeros_like(w), torch.zeros_like(b)
    for step in range(steps):
        if where == "input":
            xs = torch.stack([gaussian_noise(x, s) for s in sigmas])                  # (S, n, d)
            r = torch.einsum("snd,sd->sn", xs, w) + b[:, None] - y
        else:
            xs = x.expand(len(sigmas), n, d)
            ws = torch.stack([gaussian_noise(wk.expand(n, d), s) for wk, s in zip(w, sigmas)])
            r = (xs * ws).sum(-1) + b[:, None] - y
        w -= lr * torch.einsum("sn,snd->sd", r, xs) / n
        b -= lr * r.mean(1)
        if step >= steps // 2:
            w_sum += w
            b_sum += b
    k = steps - steps // 2
    return w_sum / k, b_sum / k


def fit_lambda(x, y, w, lams=None):
    """For each row of `w` (K, d): the ridge λ whose weights are closest to it (log-spaced grid search)."""
    lams = torch.logspace(-4, 2, 601, dtype=x.dtype) if lams is None else torch.as_tensor(lams, dtype=x.dtype)
    path, _ = ridge(x, y, lams)
    dist = ((path[None, :, :] - w.reshape(-1, 1, w.shape[-1])) ** 2).sum(-1)
    return lams[dist.argmin(1)]


def expected_noisy_loss(w, b, x, y, sigma):
    """E over ε ~ N(0, σ²I) of ½·mean((y − (x + ε)·w − b)²), in closed form (Bishop 1995, linear case):

        ½·mean((y − x·w − b)²) + ½·σ²·‖w‖²

    (the cross term has mean 0; E[(εᵀw)²] = σ²‖w‖²). So input noise of variance σ² *is* the
    ridge penalty ½λ‖w‖² with λ = σ², exactly, for this loss convention.
    """
    check_range("sigma", sigma)
    return 0.5 * ((y - x @ w - b) ** 2).mean() + 0.5 * sigma ** 2 * (w * w).sum()


def weight_noise_penalty(loss_fn, theta, sigmas, samples=2000, seed=0):
    """How much Gaussian weight noise raises a loss, measured and predicted.

    loss_fn(theta_batch) maps (K, P) parameter vectors to (K,) losses. For each σ: the Monte
    Carlo estimate of E[L(θ + ε)] − L(θ), ε ~ N(0, σ²I), and the second-order prediction
    ½·σ²·tr(∇²L(θ)) (the noise penalizes curvature). Returns (measured (S,), predicted (S,)).
    """
    theta = theta.detach().reshape(-1)
    hess = torch.autograd.functional.hessian(lambda t: loss_fn(t.unsqueeze(0))[0], theta)
    trace = torch.diagonal(hess).sum()
    g = torch.Generator().manual_seed(seed)
    base = loss_fn(theta.unsqueeze(0))[0]
    measured = []
    with torch.no_grad():
        for s in sigmas:
            eps = torch.randn(samples, len(theta), generator=g, dtype=theta.dtype)
            measured.append((loss_fn(theta + s * eps).mean() - base).item())
    predicted = [0.5 * s * s * trace.item() for s in sigmas]
    return torch.tensor(measured), torch.tensor(predicted)


def tiny_net(hidden=8, n=12, steps=400, seed=0):
    """A 1 → hidden → 1 tanh network fitted to n noisy points of sin(πx): (loss_fn, theta).

    theta is the fitted parameter vector (P = 3·hidden + 1, float64); loss_fn(thetas) maps (K, P)
    parameter vectors to their K losses ½·mean(residual²) on the same points: a nonlinear model
    small enough for an exact Hessian (`weight_noise_penalty`).
    """
    g = torch.Generator().manual_seed(seed)
    x = torch.linspace(-1, 1, n, dtype=torch.float64)
    y = torch.sin(math.pi * x) + 0.1 * torch.randn(n, generator=g, dtype=torch.float64)
    h = hidden

    def loss_fn(thetas):
        w1, b1, w2 = thetas[:, :h, None], thetas[:, h:2 * h, None], thetas[:, 2 * h:3 * h]
        out = (w2[:, :, None] * torch.tanh(w1 * x + b1)).sum(1) + thetas[:, 3 * h:]
        return 0.5 * ((out - y) ** 2).mean(1)

    theta = (torch.randn(3 * h + 1, generator=g, dtype=torch.float64) * 1.5).requires_grad_()
    opt = optim.Adam([theta], lr=0.03)
    for _ in range(steps):
        opt.zero_grad()
        loss_fn(theta[None])[0].backward()
        opt.step()
    return loss_fn, theta.detach()


def bn_noise(z, batch_size, n_batches=2000, seed=0):
    """Batch norm's noise on one feature `z` (its whole population, (N,)), over random mini-batches.

    The population-normalized value is u = (z − μ)/σ; inside a mini-batch B, BN computes
        (z − μ_B)/σ_B  =  u · (σ/σ_B)  +  (μ − μ_B)/σ_B
                          multiplicative   additive        (seed 001; eps left out)
    Mini-batches are drawn as in training: consecutive slices of random permutations (no
    replacement within an epoch). Returns (mult (M,), add (M,)), one value per mini-batch.
    """
    z = z.reshape(-1)
    n = len(z)
    if not isinstance(batch_size, int) or not 2 <= batch_size <= n:
        raise ValueError(f"batch_size={batch_size!r}: expected an int in [2, {n}]")
    per_epoch = n // batch_size
    g = torch.Generator().manual_seed(seed)
    epochs = -(-n_batches // per_epoch)
    idx = torch.rand(epochs, n, generator=g).argsort(1)[:, :per_epoch * batch_size]
    batches = z[idx.reshape(-1, batch_size)][:n_batches]
    mu, sigma = z.mean(), z.var(unbiased=False).sqrt()
    mu_b, sigma_b = batches.mean(1), batches.var(1, unbiased=False).sqrt()
    return sigma / sigma_b, (mu - mu_b) / sigma_b


def spread(values):
    """Robust spread: half the distance between the 16th and 84th percentiles (= std for a Gaussian).

    Batch norm's factors have heavy tails at tiny batches (σ_B can be ~0), where the plain standard
    deviation is dominated by a few batches.
    """
    q = torch.quantile(values.double(), torch.tensor([0.16, 0.84], dtype=torch.float64))
    return 0.5 * (q[1] - q[0]).item()

