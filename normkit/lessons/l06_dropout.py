"""Notebook 06 (dropout): what dropout does to activations, to a training run and to a batch norm after it.

The technique itself lives in `normkit.functional.dropout` and `normkit.layers.Dropout`; this
module holds what the notebook measures with it:

- `dropout_moments` (train-mode mean and variance relative to eval mode, vs p),
  `dropout_train_variance` (Li et al. 2019's variance shift, in closed form);
- `compare_dropout` (a run with and a run without dropout, on noisy labels);
- `mc_dropout` / `predictive_spread` / `auroc` (MC dropout uncertainty, Gal & Ghahramani 2016);
- `variance_shift` (measure the shift on a Dropout → BatchNorm1d pair), `bn_input_variance`,
  `recalibrate_bn` (the shift in a trained network, and its fix);
- the exercise checkers `check_dropout`, `check_dropout_variance`, `check_predictive_entropy`.
"""
import torch
from torch import nn

from .. import check, layers, models, train
from ..data import CLASSES, PIXELS
from ..functional import dropout
from ..validate import check_int, check_range

__all__ = ["dropout_train_variance", "dropout_moments", "variance_shift", "bn_input_variance", "recalibrate_bn",
           "mc_dropout", "predictive_spread", "auroc", "compare_dropout",
           "check_dropout", "check_dropout_variance", "check_predictive_entropy"]


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
        d = dropout(x, float(p), training=True)
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


# ----------------------------------------------------------------------------- dropout against label noise
def compare_dropout(data, p=0.5, sizes=(PIXELS, 128, 128, CLASSES), steps=500, batch_size=64, lr=3e-3,
                    eval_every=25, seed=0, **mlp_kw):
    """Train the same MLP twice on `data`, without and with dropout p (Adam): {0.0: History, p: History}.

    Both runs start from the same initial weights and see the same mini-batches. The trained
    models are in history.model.
    """
    runs = {}
    for q in (0.0, p):
        torch.manual_seed(seed)
        model = models.mlp(list(sizes), dropout=q, **mlp_kw)
        runs[q] = train.fit(model, data, steps=steps, batch_size=batch_size, lr=lr, optimizer="adam",
                            eval_every=eval_every, seed=seed)
    return runs


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
        out = torch.as_tensor(fn(x.clone(), p)).detach().double()
    except Exception as e:  # noqa: BLE001 (a student's error becomes the ✗ line)
        return check.raised("dropout", e)
    if out.shape != x.shape:
        return check.failed("dropout", f"expected a tensor of shape {tuple(x.shape)}, got {tuple(out.shape)}")
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


def check_predictive_entropy(fn):
    """Exercise: fn(probs) -> entropy (nats) of the mean of MC samples probs (T, N, C)."""
    g = torch.Generator().manual_seed(13)
    probs = torch.softmax(2 * torch.randn(20, 6, 10, generator=g, dtype=torch.float64), dim=-1)
    mean = probs.mean(0)
    expected = -(mean * mean.log()).sum(-1)
    return check.exercise("predictive_entropy", fn, (probs.clone(),), expected,
                          "−Σ_c p̄_c·log p̄_c of the mean prediction")
