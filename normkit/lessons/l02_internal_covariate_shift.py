"""Notebook 02 (internal covariate shift): covariate shift and internal covariate shift as experiments.

- covariate shift (공변량 변화) of the inputs: `shift_split` (two-class points at shift 0),
  `train_shift_classifier`, `accuracy_under_shift` (the same model on inputs moved by each shift).
- internal covariate shift (내부 공변량 변화), Ioffe & Szegedy 2015 Fig. 1 on digits:
  `sigmoid_mlp_run` trains the 3-layer sigmoid MLP of 100 units with or without batch norm and
  records the 15/50/85th percentiles of one unit's input to its last sigmoid
  (`sigmoid_input_name` finds that module); `percentile_drift` and `steps_to_accuracy` turn the
  History into the numbers the notebook states;
- the exercise checkers `check_unit_percentiles`, `check_importance_weight`.
"""
import torch
from torch import nn

from .. import check, data, models, train
from ..data import CLASSES, PIXELS

__all__ = ["shift_split", "train_shift_classifier", "accuracy_under_shift", "sigmoid_input_name",
           "sigmoid_mlp_run", "percentile_drift", "steps_to_accuracy",
           "check_unit_percentiles", "check_importance_weight"]


# ====================================================================== covariate shift of inputs
def shift_split(n=1000, seed=0):
    """Train and test points of `data.covariate_shift` at shift 0 (different seeds) as a Split."""
    x_tr, y_tr = data.covariate_shift(n=n, shift=0.0, seed=seed)
    x_te, y_te = data.covariate_shift(n=n, shift=0.0, seed=seed + 1)
    return data.Split(x_tr, y_tr, x_te, y_te)


def train_shift_classifier(split, width=32, steps=500, lr=0.01, seed=0):
    """An mlp([2, width, width, 2]) trained with Adam on `split`; returns (model, History)."""
    torch.manual_seed(seed)
    model = models.mlp([2, width, width, 2])
    hist = train.fit(model, split, steps=steps, batch_size=64, lr=lr, optimizer="adam",
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


def sigmoid_mlp_run(batch_norm, steps=600, lr=0.003, optimizer="adam", batch_size=60, eval_every=20,
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
    hist = train.fit(model, data.digits(), steps=steps, batch_size=batch_size, lr=lr,
                     optimizer=optimizer, eval_every=eval_every, watch=(name,), seed=seed)
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
