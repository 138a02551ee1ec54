"""One-line comparisons and the exercise checkers the notebooks point to.

Checkers may use torch's own layers: here they are the reference answer, not the implementation.
"""
import torch

__all__ = ["compare", "Comparison", "ROUNDING_BOUND"]

# What "equal up to rounding" allows: float64 rounding of O(1) results is ~1e-16 and float32's
# ~1e-7, on every CPU; these bounds sit orders of magnitude above that and far below any real error.
ROUNDING_BOUND = {torch.float64: 1e-12, torch.float32: 1e-6}


class Comparison:
    """The result of `compare`: truthy if close; `.max_abs_diff`. Silent as a cell's last value."""

    def __init__(self, ok, max_abs_diff):
        self.ok, self.max_abs_diff = ok, max_abs_diff

    def __bool__(self):
        return self.ok

    def _ipython_display_(self):
        """compare() already printed its line."""


def compare(name, ours, reference, atol=None):
    """Print one line, `name: equal up to rounding (≤ 1e-12) | close (≤ …) | DIFFERENT (…)`.

    atol defaults to 1e-6 for float32 and 1e-10 for float64, the tolerances the tests use.
    Agreement is printed as a bound, never as the digits of the difference: rounding differs
    between CPUs and torch's kernels (an "exact" 0 on one machine is 9e-16 on another), while the
    bound holds on all of them. Returns a `Comparison` (truthy when within atol, `.max_abs_diff`)
    that shows nothing as a cell's last value.
    """
    ours, reference = torch.as_tensor(ours).detach(), torch.as_tensor(reference).detach()
    if ours.shape != reference.shape:
        print(f"{name}: DIFFERENT shapes {tuple(ours.shape)} vs {tuple(reference.shape)}")
        return Comparison(False, float("inf"))
    float64 = torch.float64 in (ours.dtype, reference.dtype)
    if atol is None:
        atol = 1e-10 if float64 else 1e-6
    rounding = min(atol, ROUNDING_BOUND[torch.float64 if float64 else torch.float32])
    diff = (ours.double() - reference.double()).abs().max().item() if ours.numel() else 0.0
    if diff <= rounding:
        verdict = f"equal up to rounding (max abs diff ≤ {rounding:.0e})"
    elif diff <= atol:
        verdict = f"close (max abs diff ≤ {atol:.0e})"
    else:
        verdict = f"DIFFERENT (max abs diff {diff:.2e} > {atol:.0e})"
    print(f"{name}: {verdict}")
    return Comparison(diff <= atol, diff)


# ----------------------------------------------------------------------------- the checker runner
# An exercise checker (in the lesson module of its notebook) calls the student's function on seeded
# inputs, compares with the reference answer, prints one line "✓ …" or "✗ … expected …, got …" and
# returns a silent Comparison. A ✗ before the student has written anything is expected.
__all__ += ["passed", "failed", "raised", "head", "exercise", "exercise_number", "each", "joined", "bn_inputs"]


def passed(name, message, diff=0.0):
    """Print "✓ name: message"; return a truthy Comparison."""
    print(f"✓ {name}: {message}")
    return Comparison(True, diff)


def failed(name, message, diff=float("inf")):
    """Print "✗ name: message"; return a falsy Comparison."""
    print(f"✗ {name}: {message}")
    return Comparison(False, diff)


def raised(name, error):
    """The ✗ line for a student's function that raised `error`."""
    return failed(name, f"your function raised {type(error).__name__}: {error}")


def head(t, k=4):
    """The first k values of a tensor, for a ✗ line: "[0.1234, 0.5678, …]"."""
    values = ", ".join(f"{v:.4f}" for v in t.detach().double().flatten()[:k].tolist())
    return f"[{values}{', …' if t.numel() > k else ''}]"


def exercise(name, fn, args, expected, what, atol=1e-8):
    """Run fn(*args) and report it against the tensor `expected` (what: the reference, for the ✓ line)."""
    try:
        got = fn(*args)
    except Exception as e:  # noqa: BLE001 (a student's error becomes the ✗ line)
        return raised(name, e)
    got = torch.as_tensor(got).detach().to(expected.dtype) if got is not None else None
    if got is None or got.shape != expected.shape:
        shape = None if got is None else tuple(got.shape)
        return failed(name, f"expected a tensor of shape {tuple(expected.shape)}, got {shape}")
    diff = (got - expected).abs().max().item()
    if diff <= atol:
        return passed(name, f"matches {what} (max abs diff ≤ {atol:.0e})", diff)
    return failed(name, f"expected {head(expected)}, got {head(got)}", diff)


def exercise_number(name, fn, args, expected, what, atol=1e-9):
    """Like `exercise`, for a function that returns one number."""
    try:
        got = fn(*args)
        value = None if got is None else float(got)
    except Exception as e:  # noqa: BLE001 (a student's error becomes the ✗ line)
        return raised(name, e)
    if value is None:
        return failed(name, f"expected {expected:.4f}, got None")
    diff = abs(value - expected)
    if diff <= atol:
        return passed(name, f"{value:.4f} matches {what}", diff)
    return failed(name, f"expected {expected:.4f}, got {value:.4f}", diff)


def each(fn):
    """fn(value) -> number, as fn(values) -> float64 tensor (None if fn returns None for any)."""
    def all_of(values):
        out = [fn(v) for v in values]
        return None if any(o is None for o in out) else torch.tensor([float(o) for o in out],
                                                                      dtype=torch.float64)
    return all_of


def joined(fn, dtype=torch.float64):
    """fn(*args) -> several tensors or numbers, as one returning them flattened into one tensor
    (None if fn returns None or any part is None), for `exercise`."""
    def both(*args):
        out = fn(*args)
        if out is None or any(t is None for t in out):
            return None
        return torch.cat([torch.as_tensor(t, dtype=dtype).flatten() for t in out])
    return both


# ----------------------------------------------------------------------------- notebooks 03–04 (moving to lessons)
_exercise, _exercise_number, _head = exercise, exercise_number, head


def bn_inputs(seed, n=16, c=5):
    """Seeded float64 (x (n, c) with mean ≈ 2 and std ≈ 3, γ (c,) in [0.5, 1.5), β (c,)) for batch-norm exercises."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, generator=g, dtype=torch.float64) * 3 + 2
    gamma = torch.rand(c, generator=g, dtype=torch.float64) + 0.5
    beta = torch.randn(c, generator=g, dtype=torch.float64)
    return x, gamma, beta


_exercise_inputs = bn_inputs


def batch_norm_train(fn):
    """Exercise (notebook 03): fn(x, gamma, beta, eps) -> y, batch norm of an (N, D) batch in training."""
    x, gamma, beta = _exercise_inputs(3)
    expected = torch.nn.functional.batch_norm(x, None, None, gamma, beta, training=True, eps=1e-5)
    return _exercise("batch_norm_train", fn, (x.clone(), gamma, beta, 1e-5), expected,
                     "torch.nn.functional.batch_norm")


def identity_params(fn):
    """Exercise (notebook 03): fn(x, eps) -> (gamma, beta) that make batch norm return x unchanged."""
    x, _, _ = _exercise_inputs(4)
    eps = 1e-5
    expected = torch.cat([(x.var(0, correction=0) + eps).sqrt(), x.mean(0)])

    def both(x, eps):
        gamma, beta = fn(x, eps)
        return torch.cat([torch.as_tensor(gamma, dtype=x.dtype).flatten(),
                          torch.as_tensor(beta, dtype=x.dtype).flatten()])
    return _exercise("identity_params (γ then β)", both, (x.clone(), eps), expected,
                     "γ = √(σ²+ε), β = μ: batch norm returns its input")


def batch_norm_backward(fn):
    """Exercise (notebook 03): fn(dout, x, gamma, eps) -> dx, the input gradient of training-mode BN."""
    x, gamma, beta = _exercise_inputs(5)
    dout = torch.randn(x.shape, generator=torch.Generator().manual_seed(6), dtype=x.dtype)
    xl = x.clone().requires_grad_(True)
    torch.nn.functional.batch_norm(xl, None, None, gamma, beta, training=True, eps=1e-5).backward(dout)
    return _exercise("batch_norm_backward", fn, (dout, x.clone(), gamma, 1e-5), xl.grad,
                     "autograd through torch.nn.functional.batch_norm")


def _torch_bn_after_one_step(running_mean, running_var, batch, momentum):
    bn = torch.nn.BatchNorm1d(batch.shape[1], momentum=momentum, affine=False, dtype=batch.dtype)
    bn.running_mean.copy_(running_mean)
    bn.running_var.copy_(running_var)
    bn.train()(batch)
    return bn


def running_mean(fn):
    """Exercise (notebook 04): fn(running_mean, batch, momentum) -> the updated running mean (PyTorch's momentum)."""
    batch, rm, rv = _exercise_inputs(7, n=8)
    rv = rv.abs() + 0.5
    bn = _torch_bn_after_one_step(rm, rv, batch, 0.1)
    return _exercise("running_mean", fn, (rm.clone(), batch.clone(), 0.1), bn.running_mean,
                     "torch.nn.BatchNorm1d(momentum=0.1).running_mean")


def running_var(fn):
    """Exercise (notebook 04): fn(running_var, batch, momentum) -> the updated running variance."""
    batch, rm, rv = _exercise_inputs(8, n=8)
    rv = rv.abs() + 0.5
    bn = _torch_bn_after_one_step(rm, rv, batch, 0.1)
    return _exercise("running_var", fn, (rv.clone(), batch.clone(), 0.1), bn.running_var,
                     "torch.nn.BatchNorm1d(momentum=0.1).running_var")


def bn_inference(fn):
    """Exercise (notebook 04): fn(x, running_mean, running_var, gamma, beta, eps) -> y in eval mode."""
    x, gamma, beta = _exercise_inputs(9)
    rm = x.mean(0) + 0.3
    rv = x.var(0) * 1.2
    expected = torch.nn.functional.batch_norm(x, rm, rv, gamma, beta, training=False, eps=1e-5)
    return _exercise("bn_inference", fn, (x.clone(), rm.clone(), rv.clone(), gamma, beta, 1e-5),
                     expected, "torch.nn.functional.batch_norm(training=False)")


# ----------------------------------------------------------------------------- notebooks 06 and 08
__all__ += ["dropout", "dropout_variance", "predictive_entropy", "noisy_mse", "bn_noise"]


def dropout(fn):
    """Exercise (notebook 06): fn(x, p) -> inverted dropout of x in training mode.

    Checked statistically on 100,000 seeded positive inputs with p = 0.3: every output is 0 or
    x/(1 − p), and the dropped fraction is within 0.01 of p (7 standard errors).
    """
    p = 0.3
    g = torch.Generator().manual_seed(10)
    x = torch.rand(200, 500, generator=g, dtype=torch.float64) + 0.5
    torch.manual_seed(11)
    try:
        out = torch.as_tensor(fn(x.clone(), p)).detach().double()
    except Exception as e:  # noqa: BLE001 (a student's error becomes the ✗ line)
        print(f"✗ dropout: your function raised {type(e).__name__}: {e}")
        return Comparison(False, float("inf"))
    if out.shape != x.shape:
        print(f"✗ dropout: expected a tensor of shape {tuple(x.shape)}, got {tuple(out.shape)}")
        return Comparison(False, float("inf"))
    dropped = (out == 0).double().mean().item()
    kept = out != 0
    scale_err = (out[kept] - x[kept] / (1 - p)).abs().max().item() if kept.any() else 0.0
    if abs(dropped - p) > 0.01:
        print(f"✗ dropout: expected about {100 * p:.1f} % of the elements dropped (zero), got {100 * dropped:.1f} %")
        return Comparison(False, abs(dropped - p))
    if scale_err > 1e-9:
        print(f"✗ dropout: expected survivors = x/(1 − p) = {_head(x[kept] / (1 - p))}, got {_head(out[kept])}")
        return Comparison(False, scale_err)
    print(f"✓ dropout: drops {100 * dropped:.1f} % (p = {p}) and scales the survivors by 1/(1 − p)")
    return Comparison(True, scale_err)


def dropout_variance(fn):
    """Exercise (notebook 06): fn(c, v, p) -> variance of inverted dropout's training output for a
    unit with mean c and variance v (Li et al. 2019's variance shift)."""
    g = torch.Generator().manual_seed(12)
    c = torch.randn(6, generator=g, dtype=torch.float64)
    v = torch.rand(6, generator=g, dtype=torch.float64) + 0.1
    p = 0.4
    expected = (c * c + v) / (1 - p) - c * c
    return _exercise("dropout_variance", fn, (c.clone(), v.clone(), p), expected,
                     "(c² + v)/(1 − p) − c²  (train-mode variance)")


def predictive_entropy(fn):
    """Exercise (notebook 06): fn(probs) -> entropy (nats) of the mean of MC samples probs (T, N, C)."""
    g = torch.Generator().manual_seed(13)
    probs = torch.softmax(2 * torch.randn(20, 6, 10, generator=g, dtype=torch.float64), dim=-1)
    mean = probs.mean(0)
    expected = -(mean * mean.log()).sum(-1)
    return _exercise("predictive_entropy", fn, (probs.clone(),), expected,
                     "−Σ_c p̄_c·log p̄_c of the mean prediction")


def noisy_mse(fn):
    """Exercise (notebook 08): fn(w, b, x, y, sigma) -> the expected value, over input noise
    ε ~ N(0, σ²I), of torch's mean squared error mean((y − (x + ε)·w − b)²)  (no ½)."""
    g = torch.Generator().manual_seed(14)
    x = torch.randn(30, 5, generator=g, dtype=torch.float64)
    y = torch.randn(30, generator=g, dtype=torch.float64)
    w = torch.randn(5, generator=g, dtype=torch.float64)
    b, sigma = 0.7, 0.6
    expected = ((y - x @ w - b) ** 2).mean() + sigma ** 2 * (w * w).sum()
    return _exercise("noisy_mse", fn, (w.clone(), b, x.clone(), y.clone(), sigma), expected,
                     "mean(r²) + σ²‖w‖²  (so λ = 2σ² in ½λ‖w‖²)")


def bn_noise(fn):
    """Exercise (notebook 08): fn(z, mu, sigma) -> (mult, add) for one mini-batch z (m,) of a feature
    with population mean mu and std sigma, such that (z − μ_B)/σ_B = mult·(z − μ)/σ + add
    (σ_B: the batch's biased std, no eps)."""
    g = torch.Generator().manual_seed(15)
    z = torch.randn(8, generator=g, dtype=torch.float64) * 2 + 1
    mu, sigma = 0.8, 2.1
    mu_b, sigma_b = z.mean(), z.var(correction=0).sqrt()
    expected = torch.stack([sigma / sigma_b, (mu - mu_b) / sigma_b])

    def both(z, mu, sigma):
        mult, add = fn(z, mu, sigma)
        return torch.stack([torch.as_tensor(mult, dtype=z.dtype).reshape(()),
                            torch.as_tensor(add, dtype=z.dtype).reshape(())])
    return _exercise("bn_noise (mult, add)", both, (z.clone(), mu, sigma), expected,
                     "σ/σ_B and (μ − μ_B)/σ_B")


# ----------------------------------------------------------------------------- notebook 10
__all__ += ["combine_stats", "merge_moments", "sync_input_grad"]


def _replica_slices(seed, sizes=(3, 5, 2), c=4):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(sum(sizes), c, generator=g, dtype=torch.float64) * 1.5 + 2.0
    return x, x.split(list(sizes))


def _pair(fn, n):
    """Wrap fn returning a pair of tensors into one returning them concatenated (None stays None)."""
    def both(*args):
        out = fn(*args)
        if out is None or any(t is None for t in out):
            return None
        return torch.cat([torch.as_tensor(t, dtype=torch.float64).flatten() for t in out])[:2 * n]
    return both


def combine_stats(fn):
    """Exercise (notebook 10): fn(sums, sumsqs, counts) -> (mean, var) over all replicas.

    sums and sumsqs: (R, C) per-replica Σx and Σx²; counts: (R,) samples per replica. mean and var
    (biased, what batch norm normalizes with) are per channel, as if all samples sat in one batch.
    """
    x, parts = _replica_slices(40)
    sums = torch.stack([p.sum(0) for p in parts])
    sumsqs = torch.stack([(p * p).sum(0) for p in parts])
    counts = torch.tensor([float(len(p)) for p in parts], dtype=torch.float64)
    expected = torch.cat([x.mean(0), x.var(0, correction=0)])
    return _exercise("combine_stats (mean then var)", _pair(fn, x.shape[1]), (sums, sumsqs, counts),
                     expected, "the mean and biased variance of all replicas' samples in one batch")


def merge_moments(fn):
    """Exercise (notebook 10): fn(n_a, mean_a, m2_a, n_b, mean_b, m2_b) -> (mean, m2), stably.

    Two replicas' counts (floats), means and centred sums of squares m2 = Σ(x − mean)² per channel,
    in float32 and around 10⁴ with std 1 (activations far from zero): the merged mean must be right
    to 0.005 and m2 to a relative 0.005, which float32 sums of squares (Σx² ≈ 10⁹) cannot do.
    """
    g = torch.Generator().manual_seed(41)
    a, b = (torch.randn(n, 3, generator=g, dtype=torch.float64) + 1e4 + shift
            for n, shift in ((6, 0.0), (9, 0.3)))
    a, b = a.float().double(), b.float().double()      # the float32 data, exactly
    x = torch.cat([a, b])
    args = []
    for part in (a, b):
        args += [float(len(part)), part.mean(0).float(), ((part - part.mean(0)) ** 2).sum(0).float()]
    expected = torch.cat([x.mean(0), ((x - x.mean(0)) ** 2).sum(0)])
    got_both = _pair(fn, 3)

    def scaled(*args):                  # compare m2 relative to its size: divide both by m2_true
        got = got_both(*args)
        return None if got is None else torch.cat([got[:3], got[3:] / expected[3:]])
    return _exercise("merge_moments (mean then m2/m2_true)", scaled, tuple(args),
                     torch.cat([expected[:3], torch.ones(3, dtype=torch.float64)]),
                     "float64 statistics of the merged float32 data", atol=5e-3)


def sync_input_grad(fn):
    """Exercise (notebook 10): fn(dy, xhat, rstd, gamma, sum_dy, sum_dy_xhat, count) -> dx.

    One replica's (n_r, C) slice: its upstream gradient dy and normalized x̂, the global 1/std and γ
    (per channel), and the all-reduced Σdy, Σdy·x̂ and total count over all replicas. dx must equal
    that replica's rows of the input gradient of batch norm over all replicas' samples together.
    """
    x, parts = _replica_slices(42)
    g = torch.Generator().manual_seed(43)
    gamma = torch.rand(x.shape[1], generator=g, dtype=torch.float64) + 0.5
    dy = torch.randn(x.shape, generator=g, dtype=torch.float64)
    xl = x.clone().requires_grad_(True)
    torch.nn.functional.batch_norm(xl, None, None, gamma, None, training=True, eps=1e-5).backward(dy)
    rstd = (x.var(0, correction=0) + 1e-5).rsqrt()
    xhat = (x - x.mean(0)) * rstd
    sum_dy, sum_dy_xhat, count = dy.sum(0), (dy * xhat).sum(0), float(len(x))

    def per_replica(dy, xhat):
        outs = [fn(d, h, rstd, gamma, sum_dy, sum_dy_xhat, count)
                for d, h in zip(dy.split([len(p) for p in parts]), xhat.split([len(p) for p in parts]))]
        return None if any(o is None for o in outs) else torch.cat([torch.as_tensor(o) for o in outs])
    return _exercise("sync_input_grad", per_replica, (dy, xhat), xl.grad,
                     "autograd through batch norm over all replicas' samples")


# ----------------------------------------------------------------------------- notebooks 07 and 09
__all__ += ["l1_minimum", "soft_threshold", "weight_penalty", "max_stable_lr", "gradient_change",
            "which_norm", "WHICH_NORM_SCENARIOS"]


def _scalars(fn):
    """Wrap fn(value) -> number into fn(values) -> float64 tensor (None if fn returns None)."""
    def all_of(values):
        out = [fn(v) for v in values]
        return None if any(o is None for o in out) else torch.tensor([float(o) for o in out],
                                                                      dtype=torch.float64)
    return all_of


def l1_minimum(fn):
    """Exercise (notebook 07): fn(alpha) -> argmin_w of ¼(w − 4.5)² + 1 + α|w| (seed 004's loss + L1)."""
    alphas = [0.0, 0.5, 1.0, 2.0, 2.25, 3.0, 5.0]
    expected = torch.tensor([max(4.5 - 2 * a, 0.0) for a in alphas], dtype=torch.float64)
    return _exercise("l1_minimum", _scalars(fn), (alphas,), expected,
                     "max(4.5 − 2α, 0) for α = 0 … 5", atol=1e-6)


def soft_threshold(fn):
    """Exercise (notebook 07): fn(w, t) -> sign(w)·max(|w| − t, 0), elementwise."""
    w = torch.randn(20, generator=torch.Generator().manual_seed(70), dtype=torch.float64) * 2
    expected = torch.nn.functional.softshrink(w, 0.7)
    return _exercise("soft_threshold", fn, (w.clone(), 0.7), expected, "torch.nn.functional.softshrink")


def weight_penalty(fn):
    """Exercise (notebook 07): fn(model, lam) -> ½·λ·Σw² over the weights of Linear layers only.

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
    return _exercise("weight_penalty", penalty, (model, lam), expected.detach(),
                     "½λ·Σ (Linear weights)², biases and BN γ, β left out")


def max_stable_lr(fn):
    """Exercise (notebook 09): fn(h) -> the largest learning rate at which gradient descent on
    L(w) = ½·h·w² does not diverge (h > 0: the curvature, the β of β-smoothness)."""
    hs = [0.5, 2.0, 10.0, 40.0]
    expected = torch.tensor([2 / h for h in hs], dtype=torch.float64)
    return _exercise("max_stable_lr", _scalars(fn), (hs,), expected,
                     "2/h (w ← (1 − ηh)·w shrinks while |1 − ηh| ≤ 1)", atol=1e-9)


def gradient_change(fn):
    """Exercise (notebook 09): fn(f, w, step) -> ‖∇f(w) − ∇f(w − step·∇f(w))‖ (a float).

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
    return _exercise("gradient_change", all_of, (fs, ws), expected, "autograd at w and at w − 0.3·∇f(w)")


WHICH_NORM_SCENARIOS = {
    1: "a ResNet classifier on ImageNet, 64 images per GPU",
    2: "an object detector on large images, 2 images per GPU",
    3: "a Transformer language model",
    4: "a style-transfer network (the output should not keep the input image's contrast)",
}
_WHICH_NORM = {1: {"batch"}, 2: {"group", "sync_batch"}, 3: {"layer", "rms"}, 4: {"instance"}}


def which_norm(answers):
    """Exercise (notebook 09): answers = {scenario number: "batch" | "layer" | "instance" | "group"
    | "rms" | "sync_batch"} for the scenarios of WHICH_NORM_SCENARIOS. Names the wrong ones only."""
    if not isinstance(answers, dict):
        print(f"✗ which_norm: expected a dict {{scenario number: name}}, got {type(answers).__name__}")
        return Comparison(False, float("inf"))
    wrong = [k for k in _WHICH_NORM if str(answers.get(k, "")).lower().replace(" ", "_")
             .removesuffix("_norm") not in _WHICH_NORM[k]]
    if wrong:
        got = ", ".join(f"{k} (got {answers.get(k)!r})" for k in wrong)
        print(f"✗ which_norm: {len(wrong)} of {len(_WHICH_NORM)} to rethink: scenario {got}")
        return Comparison(False, float(len(wrong)))
    print(f"✓ which_norm: all {len(_WHICH_NORM)} scenarios matched")
    return Comparison(True, 0.0)


# ----------------------------------------------------------------------------- notebook 05
__all__ += ["norm_dims", "group_norm", "rms_norm"]


def _x4(seed, shape=(4, 6, 3, 3)):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64) * 2 + 1


def norm_dims(fn):
    """Exercise (notebook 05): fn(method) -> the dims of an (N, C, H, W) tensor that one mean averages.

    method is "batch", "layer" or "instance". Each answer standardizes a seeded tensor over those
    dims, which must reproduce torch's batch_norm, layer_norm and instance_norm respectively.
    """
    x = _x4(50)
    tf = torch.nn.functional
    reference = {"batch": tf.batch_norm(x, None, None, training=True),
                 "layer": tf.layer_norm(x, x.shape[1:]), "instance": tf.instance_norm(x)}
    wrong, worst = [], 0.0
    for method, expected in reference.items():
        try:
            answer = fn(method)
            if answer is None:
                print(f"✗ norm_dims: for {method!r} your function returned None; expected a tuple of dims")
                return Comparison(False, float("inf"))
            dims = tuple(int(d) for d in answer)
            ours = (x - x.mean(dims, keepdim=True)) / (x.var(dims, correction=0, keepdim=True) + 1e-5).sqrt()
            diff = (ours - expected).abs().max().item() if dims else float("inf")
        except Exception as e:  # noqa: BLE001 (a student's error becomes the ✗ line)
            print(f"✗ norm_dims: for {method!r} your function gave an unusable answer ({type(e).__name__}: {e})")
            return Comparison(False, float("inf"))
        worst = max(worst, diff)
        if diff > 1e-8:
            wrong.append(f"{method} {dims}")
    if wrong:
        print(f"✗ norm_dims: standardizing over these dims does not match torch: {', '.join(wrong)}")
        return Comparison(False, worst)
    print("✓ norm_dims: batch, layer and instance norm reproduced from your dims "
          f"(max abs diff {worst:.0e})")
    return Comparison(True, worst)


def group_norm(fn):
    """Exercise (notebook 05): fn(x, num_groups, eps) -> group norm of (N, C, H, W) x, without γ and β."""
    x = _x4(51)
    return _exercise("group_norm", fn, (x.clone(), 3, 1e-5), torch.nn.functional.group_norm(x, 3, eps=1e-5),
                     "torch.nn.functional.group_norm(x, 3)")


def rms_norm(fn):
    """Exercise (notebook 05): fn(x, eps) -> RMS norm of (N, D) x over its last dim, without γ."""
    x = _x4(52, (8, 10))
    return _exercise("rms_norm", fn, (x.clone(), 1e-6), torch.nn.functional.rms_norm(x, (10,), eps=1e-6),
                     "torch.nn.functional.rms_norm(x, (10,))")


# ----------------------------------------------------------------------------- notebooks 01 and 02
__all__ += ["generalization_gap", "ensemble_predict", "unit_percentiles", "importance_weight"]


def generalization_gap(fn):
    """Exercise (notebook 01): fn(model, split) -> train accuracy − test accuracy (a number).

    Checked on a seeded MLP that overfits 30 digits, so the two accuracies differ clearly.
    """
    from . import data, models, train
    split = data.digits(n_train=30, seed=1)
    with torch.random.fork_rng():                # seeded, without touching the notebook's RNG
        torch.manual_seed(20)
        model = models.mlp([64, 32, 10])
        train.fit(model, split, steps=60, batch_size=30, lr=0.01, optimizer="adam", eval_every=60,
                  seed=20)
    expected = (train.accuracy(model, split.x_train, split.y_train)
                - train.accuracy(model, split.x_test, split.y_test))
    return _exercise_number("generalization_gap", fn, (model, split), expected,
                            "train accuracy − test accuracy (eval mode)", atol=1e-6)


def ensemble_predict(fn):
    """Exercise (notebook 01): fn(models, x) -> predicted classes, argmax of the mean softmax.

    Three seeded MLPs of different confidence (so averaging logits or voting gives other answers).
    """
    from . import data, models as _models
    x = data.digits(n_train=200, seed=2).x_train.double()
    with torch.random.fork_rng(), torch.no_grad():
        torch.manual_seed(21)
        nets = [_models.mlp([64, 16, 10]).double() for _ in range(3)]
        for net, scale in zip(nets, (0.5, 3.0, 8.0)):
            net[-1].weight.mul_(scale)
    with torch.no_grad():
        expected = torch.stack([torch.softmax(net(x), 1) for net in nets]).mean(0).argmax(1)
        try:
            got = fn(nets, x.clone())
            got = None if got is None else torch.as_tensor(got).detach().long().flatten()
        except Exception as e:  # noqa: BLE001 (a student's error becomes the ✗ line)
            print(f"✗ ensemble_predict: your function raised {type(e).__name__}: {e}")
            return Comparison(False, float("inf"))
    if got is None or got.shape != expected.shape:
        print(f"✗ ensemble_predict: expected {len(expected)} class indices, "
              f"got {None if got is None else tuple(got.shape)}")
        return Comparison(False, float("inf"))
    wrong = (got != expected).nonzero().flatten()
    if len(wrong) == 0:
        print(f"✓ ensemble_predict: all {len(expected)} predictions match the argmax of the mean softmax")
        return Comparison(True, 0.0)
    i = wrong[0].item()
    print(f"✗ ensemble_predict: {len(wrong)} of {len(expected)} predictions differ from the argmax of "
          f"the mean softmax (image {i}: expected class {expected[i].item()}, got {got[i].item()})")
    return Comparison(False, float(len(wrong)))


def unit_percentiles(fn):
    """Exercise (notebook 02): fn(z, unit) -> (q15, q50, q85), the 15/50/85th percentiles of
    column `unit` of z (N, D), linearly interpolated (torch.quantile's and numpy's default)."""
    z = torch.randn(37, 6, generator=torch.Generator().manual_seed(22), dtype=torch.float64) * 2 + 1
    expected = torch.quantile(z[:, 4], torch.tensor([0.15, 0.5, 0.85], dtype=torch.float64))

    def three(z, unit):
        out = fn(z, unit)
        if out is None or any(q is None for q in out):
            return None
        return torch.tensor([float(q) for q in out], dtype=torch.float64)
    return _exercise("unit_percentiles (q15, q50, q85)", three, (z.clone(), 4), expected,
                     "torch.quantile(z[:, unit], [0.15, 0.5, 0.85])")


def importance_weight(fn):
    """Exercise (notebook 02): fn(x, shift) -> p_test(x) / p_train(x) for each row of x (N, 2),
    with training inputs ~ N((0, 0), I) and test inputs ~ N((shift, 0), I) (data.covariate_shift)."""
    x = torch.randn(12, 2, generator=torch.Generator().manual_seed(23), dtype=torch.float64)
    shift = 1.5
    normal = torch.distributions.Normal(torch.tensor(0.0, dtype=torch.float64), 1.0)
    expected = (normal.log_prob(x[:, 0] - shift) - normal.log_prob(x[:, 0])).exp()
    return _exercise("importance_weight", fn, (x.clone(), shift), expected,
                     "the ratio of the two Gaussian densities, exp(shift·x₁ − shift²/2)")
