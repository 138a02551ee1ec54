"""Notebook 08 (noise injection): input noise is ridge, weight noise penalizes curvature, batch norm is noise.

The noise itself is `normkit.functional.gaussian_noise` (the layer `normkit.layers.GaussianNoise`);
this module holds what the notebook measures with it:

- `regression` (a small linear problem), `ridge` (closed form), `train_linear_with_noise`
  (input or weight noise, many σ at once), `fit_lambda`, `expected_noisy_loss` (Bishop 1995 for
  a linear model);
- `weight_noise_penalty` (½σ²·tr H) with `tiny_net` (a nonlinear model small enough for an exact
  Hessian);
- `bn_noise` (batch norm's multiplicative and additive noise per mini-batch), `spread`;
- `one_epoch` (what one epoch buys at each batch size: fewer steps, each less noisy);
- the exercise checkers `check_noisy_mse`, `check_bn_noise`.

Loss convention for the linear experiments (the seeds' ½λ‖w‖² penalty, `regularize.l2_penalty`):

    E(w, b) = ½ · mean_i (y_i − wᵀx_i − b)²,      ridge:  E(w, b) + ½ λ ‖w‖²  (bias not penalized).
"""
import math
import time

import torch

from .. import check, data, models, optim, train
from ..functional import gaussian_noise
from ..validate import check_int, check_range

__all__ = ["regression", "ridge", "train_linear_with_noise", "fit_lambda", "expected_noisy_loss",
           "weight_noise_penalty", "tiny_net", "bn_noise", "spread", "one_epoch",
           "check_noisy_mse", "check_bn_noise"]


# ----------------------------------------------------------------------------- input noise = ridge
def regression(n=40, d=6, correlation=0.7, noise=0.5, seed=0):
    """A small linear regression problem with correlated features (float64).

    x: (n, d), each column standardized (mean 0, variance 1 over the n rows), with
    corr(x_j, x_k) ≈ correlation^|j−k|; y = x·w_true + 0.3 + N(0, noise²). Returns (x, y, w_true).
    """
    check_int("n", n, lo=2)
    check_int("d", d)
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


def train_linear_with_noise(x, y, sigmas, where="input", steps=600, lr=0.15, copies=8, seed=1):
    """Fit y ≈ x·w + b by full-batch gradient descent on ½·mean(residual²), with fresh noise every step.

    One model per value in `sigmas`, all trained side by side (a vectorized experiment, not a
    mini-batch training loop). Every step sees `copies` noisy copies of the n examples, each with
    its own fresh noise (more noise draws per step: a less noisy gradient, so fewer steps). The
    noise is `functional.gaussian_noise` (what `nk.GaussianNoise(σ)` does in training):
    where="input" feeds x + N(0, σ²) (Bishop 1995); where="weight" gives each example its own
    noisy copy of the weights, w + N(0, σ²). Returns (w (S, d), b (S,)), the average of the
    iterates over the second half of training (Polyak averaging: the last iterate still jitters
    with the noise).
    """
    if where not in ("input", "weight"):
        raise ValueError(f"where={where!r}: expected 'input' or 'weight'")
    sigmas = [float(s) for s in sigmas]
    for s in sigmas:
        check_range("sigmas", s)
    check_int("steps", steps, lo=2)
    check_int("copies", copies)
    xx, yy = x.repeat(copies, 1), y.repeat(copies)               # (m, d), (m,): m = copies·n
    m, d = xx.shape
    torch.manual_seed(seed)
    w, b = torch.zeros(len(sigmas), d, 1, dtype=x.dtype), torch.zeros(len(sigmas), 1, dtype=x.dtype)
    w_sum, b_sum = torch.zeros_like(w), torch.zeros_like(b)
    chunk = 100                                 # noise for 100 steps at once: one call per σ, not per step
    for start in range(0, steps, chunk):
        t_n = min(chunk, steps - start)
        clean = xx if where == "input" else torch.zeros_like(xx)
        noise = torch.stack([gaussian_noise(clean.expand(t_n, m, d), s) for s in sigmas], 1)   # (T, S, m, d)
        for t in range(t_n):
            if where == "input":
                xs = noise[t]                                                           # x + ε
                r = (xs @ w).squeeze(-1) + b - yy
            else:
                xs = xx.expand(len(sigmas), m, d)
                r = ((w.transpose(1, 2) + noise[t]) * xx).sum(-1) + b - yy              # (w + ε)·x
            w -= (lr / m) * (r.unsqueeze(1) @ xs).transpose(1, 2)
            b -= lr * r.mean(1, keepdim=True)
            if start + t >= steps // 2:
                w_sum += w
                b_sum += b
    k = steps - steps // 2
    return (w_sum / k).squeeze(-1), (b_sum / k).squeeze(-1)


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


# ----------------------------------------------------------------------------- weight noise = curvature
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
    small enough for an exact Hessian (`weight_noise_penalty`). The fit is full-batch Adam on
    the one parameter vector (all n points every step), not a mini-batch training run.
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


# ----------------------------------------------------------------------------- batch norm as noise
def bn_noise(z, batch_size, n_batches=2000, seed=0):
    """Batch norm's noise on one feature `z` (its whole population, (N,)), over random mini-batches.

    The population-normalized value is u = (z − μ)/σ; inside a mini-batch B, BN computes
        (z − μ_B)/σ_B  =  u · (σ/σ_B)  +  (μ − μ_B)/σ_B
                          multiplicative   additive        (seed 001; eps left out)
    Mini-batches are drawn as in training (`train.batches`: consecutive slices of random
    permutations, no replacement within an epoch). Returns (mult (M,), add (M,)), one value per
    mini-batch.
    """
    z = z.reshape(-1)
    n = len(z)
    check_int("batch_size", batch_size, 2, n)
    order = train.batches(n, batch_size, torch.Generator().manual_seed(seed))
    batches = z[torch.stack([next(order) for _ in range(n_batches)])]
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


def one_epoch(batch_sizes, epochs=1, lr=0.1, width=32, seed=0):
    """Seed 004's side effect of a larger batch: fewer steps per epoch. What an epoch buys at each size.

    For each batch size B: the digits MLP 64 → `width` → 10 with batch norm, trained by `train.fit`
    for `epochs` epochs of the 1,300 training images at the same learning rate (plain SGD). An
    epoch is ⌊N/B⌋ steps here (`train.batches` skips an epoch's short last batch; a loader that
    keeps it takes ⌈N/B⌉). Returns one dict per B: batch_size, steps, test_acc (eval mode, after
    training) and seconds (the wall-clock time of the training run on this machine).
    """
    split = data.digits()
    n = len(split.x_train)
    rows = []
    for b in batch_sizes:
        check_int("batch_size", b, 2, n)
        torch.manual_seed(seed)
        model = models.mlp([data.PIXELS, width, data.CLASSES], norm="batch")
        start = time.perf_counter()
        hist = train.fit(model, split, steps=epochs * (n // b), batch_size=b, lr=lr, eval_every=None,
                         eval_train=False, seed=seed)
        rows.append({"batch_size": b, "steps": epochs * (n // b), "test_acc": hist.test_acc[-1],
                     "seconds": time.perf_counter() - start})
    return rows


# ----------------------------------------------------------------------------- exercise checkers
def check_noisy_mse(fn):
    """Exercise: fn(w, b, x, y, sigma) -> the expected value, over input noise ε with independent
    components ε_j ~ N(0, σ_j²) (sigma: the (d,) tensor of σ_j, one per feature), of torch's mean
    squared error mean((y − (x + ε)·w − b)²)  (no ½). The isotropic answer of the notebook's table
    (σ²‖w‖²) does not apply as it stands: each weight gets its own σ_j²."""
    g = torch.Generator().manual_seed(14)
    x = torch.randn(30, 5, generator=g, dtype=torch.float64)
    y = torch.randn(30, generator=g, dtype=torch.float64)
    w = torch.randn(5, generator=g, dtype=torch.float64)
    b, sigma = 0.7, torch.tensor([0.2, 0.6, 1.0, 0.4, 0.8], dtype=torch.float64)
    expected = ((y - x @ w - b) ** 2).mean() + (sigma ** 2 * w * w).sum()
    return check.exercise("noisy_mse", fn, (w.clone(), b, x.clone(), y.clone(), sigma.clone()), expected,
                          "mean(r²) + Σ_j σ_j²·w_j²  (a penalty ½λ_j·w_j² with λ_j = 2σ_j² per weight)")


def check_bn_noise(fn):
    """Exercise: fn(z, mu, sigma) -> (mult, add) for one mini-batch z (m,) of a feature with
    population mean mu and std sigma, such that (z − μ_B)/σ_B = mult·(z − μ)/σ + add
    (σ_B: the batch's biased std, no eps)."""
    g = torch.Generator().manual_seed(15)
    z = torch.randn(8, generator=g, dtype=torch.float64) * 2 + 1
    mu, sigma = 0.8, 2.1
    mu_b, sigma_b = z.mean(), z.var(correction=0).sqrt()
    expected = torch.stack([sigma / sigma_b, (mu - mu_b) / sigma_b])

    def both(z, mu, sigma):            # each part must be one number (not check.joined, which flattens)
        out = fn(z, mu, sigma)
        if out is None:                # the exercise's stub: a ✗ "got None" line, not an unpacking error
            return None
        mult, add = out
        return torch.stack([torch.as_tensor(mult, dtype=z.dtype).reshape(()),
                            torch.as_tensor(add, dtype=z.dtype).reshape(())])
    return check.exercise("bn_noise (mult, add)", both, (z.clone(), mu, sigma), expected,
                          "σ/σ_B and (μ − μ_B)/σ_B")
