"""The one training loop of the course, and what it records for the notebooks to plot.

`fit` runs mini-batch training for a fixed number of steps and returns a `History`: the loss of
every step, train/test accuracy every `eval_every` steps, gradient norms per parameter, for the
modules named in `watch` the distribution of their output (mean, std, and the 15/50/85th
percentiles of unit 0, as in Ioffe & Szegedy's Fig. 1), and whatever a `callback` measures.
Every lesson trains through it; `batches` is its epoch sampler, `diverged` its one test of a
blown-up loss. K small models trained as one (a model whose logits are (N, classes, K), one
column per member) train through it too, with `loss_fn=stacked_cross_entropy`; their accuracy is
the members' mean.
"""
import math
from dataclasses import dataclass, field

import torch
from torch.nn.functional import cross_entropy

from . import optim
from .regularize import decay_groups
from .validate import check_int, check_range

__all__ = ["History", "fit", "accuracy", "stacked_cross_entropy", "batches", "diverged", "DIVERGED_LOSS"]

# A 10-class cross-entropy starts at ln 10 ≈ 2.3; a loss of 1000 means the logits have blown up
# (the next steps overflow to inf or NaN), so the run is stopped and called diverged.
DIVERGED_LOSS = 1e3


def diverged(loss):
    """True if a loss value is NaN, infinite or above DIVERGED_LOSS."""
    return not math.isfinite(loss) or loss > DIVERGED_LOSS


@dataclass
class History:
    loss: list = field(default_factory=list)          # training loss, every step
    eval_steps: list = field(default_factory=list)    # steps at which the lists below were taken
    train_acc: list = field(default_factory=list)     # (empty with eval_train=False)
    test_acc: list = field(default_factory=list)
    test_loss: list = field(default_factory=list)
    val_acc: list = field(default_factory=list)       # (only when the data has a validation set)
    grad_norm: dict = field(default_factory=dict)     # parameter name -> list, every step
    activations: dict = field(default_factory=dict)   # watched module -> list of dicts
    extra: list = field(default_factory=list)         # what the callback returned, one entry per call
    diverged: bool = False
    model: object = None                              # the trained model

    @property
    def final_test_acc(self):
        """Test accuracy at the end of training (NaN if the run diverged)."""
        return self.test_acc[-1] if self.test_acc and not self.diverged else float("nan")

    @property
    def test_error(self):
        """Test error in %, at each evaluation."""
        return [100.0 * (1.0 - a) for a in self.test_acc]

    @property
    def final_loss(self):
        """Mean training loss of the last 10 steps (inf if the run diverged)."""
        return float("inf") if self.diverged else sum(self.loss[-10:]) / len(self.loss[-10:])

    @property
    def best_val_step(self):
        """Early stopping: the evaluation step with the highest validation accuracy (the first of ties)."""
        if not self.val_acc:
            raise ValueError("best_val_step: no validation accuracy recorded; expected data with x_val "
                             "(normkit.data.digits(val_size=...))")
        return self.eval_steps[max(range(len(self.val_acc)), key=self.val_acc.__getitem__)]

    @property
    def test_acc_at_best_val(self):
        """Test accuracy of the model as it was at `best_val_step` (what early stopping keeps)."""
        return self.test_acc[self.eval_steps.index(self.best_val_step)]

    @property
    def gap(self):
        """Generalization gap: train accuracy minus test accuracy at the end."""
        return self.train_acc[-1] - self.test_acc[-1]


def stacked_cross_entropy(logits, y):
    """The loss of K models trained as one: the sum over the members of each member's mean cross-entropy.

    logits: (N, classes, K), member k's logits in [:, :, k]; y: (N,) when every member has the
    same labels, or (N, K), member k's labels in [:, k]. Returns a scalar. Each member's gradient
    is then the one it gets trained alone (the members share no parameters).
    """
    if y.dim() == 1:
        y = y[:, None]
    return cross_entropy(logits, y.expand(-1, logits.shape[2]), reduction="none").mean(0).sum()


def _correct(logits, y):
    """Fraction of correct argmax predictions; (N, classes, K) logits: the mean over examples and members."""
    if logits.dim() == 3 and y.dim() == 1:
        y = y[:, None]                                  # every member has the same labels
    return (logits.argmax(1) == y).float().mean().item()


@torch.no_grad()
def accuracy(model, x, y):
    """Fraction of correct argmax predictions, with the model in eval mode.

    A model of K members ((N, classes, K) logits): the members' mean accuracy, y (N,) or (N, K).
    """
    was_training = model.training
    model.eval()
    acc = _correct(model(x), y)
    model.train(was_training)
    return acc


def batches(n, batch_size, generator):
    """Index tensors of mini-batches of range(n), endlessly: a fresh permutation every epoch.

    An epoch's last incomplete batch is skipped (its examples come first in a later epoch).
    """
    while True:
        perm = torch.randperm(n, generator=generator)
        for pos in range(0, n - batch_size + 1, batch_size):
            yield perm[pos:pos + batch_size]


def _optimizer(model, name, lr, momentum, weight_decay):
    # normkit.optim: torch.optim's updates without its first-step import of torch._dynamo (~1 s)
    if not isinstance(name, str):
        return name                                     # an optimizer built by the caller
    if name == "sgd":
        return optim.SGD(decay_groups(model, weight_decay), lr=lr, momentum=momentum)
    if name == "adam":      # L2 folded into the gradient (coupled), as torch.optim.Adam does
        return optim.Adam(decay_groups(model, weight_decay), lr=lr)
    if name == "adamw":     # decoupled weight decay (Loshchilov & Hutter 2019)
        return optim.AdamW(decay_groups(model, weight_decay), lr=lr)
    raise ValueError(f"optimizer={name!r}: expected 'sgd', 'adam', 'adamw' or an optimizer object")


def _watch(model, watch):
    modules = dict(model.named_modules())
    for name in watch:
        if name not in modules:
            raise ValueError(f"watch: no submodule named {name!r}; expected one of {list(modules)[1:]}")
    return {name: modules[name] for name in watch}


def _summary(out):
    """mean, std and the 15/50/85th percentiles of unit 0 of a watched module's output."""
    unit = out.reshape(len(out), -1)[:, 0].float()
    q15, q50, q85 = torch.quantile(unit, torch.tensor([0.15, 0.5, 0.85])).tolist()
    return {"mean": out.mean().item(), "std": out.std().item(), "q15": q15, "q50": q50, "q85": q85}


@torch.no_grad()
def _evaluate(hist, step, model, data, watched, eval_train, loss_fn):
    captured = {}
    hooks = [m.register_forward_hook(lambda m, i, o, name=name: captured.__setitem__(name, o.detach()))
             for name, m in watched.items()]
    was_training = model.training
    model.eval()
    try:
        if eval_train:
            hist.train_acc.append(_correct(model(data.x_train), data.y_train))
        if getattr(data, "x_val", None) is not None:
            hist.val_acc.append(_correct(model(data.x_val), data.y_val))
        captured.clear()                                # the watched outputs are the test set's
        logits = model(data.x_test)
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    hist.eval_steps.append(step)
    hist.test_acc.append(_correct(logits, data.y_test))
    hist.test_loss.append(loss_fn(logits, data.y_test).item())
    for name, out in captured.items():
        hist.activations[name].append(_summary(out))


def fit(model, data, steps=300, batch_size=64, lr=0.1, optimizer="sgd", momentum=0.0,
        weight_decay=0.0, schedule=None, penalty=None, augment=None, eval_every=25, eval_train=True,
        watch=(), callback=None, callback_every=1, seed=0, loss_fn=cross_entropy):
    """Train `model` on `data` (a normkit.data.Split) and return its History.

    optimizer: "sgd" (with `momentum`), "adam" or "adamw", built with `lr` and `weight_decay` on
        `regularize.decay_groups` (biases and norm parameters not decayed); or an optimizer object
        built by the caller (anything with zero_grad(), step() and param_groups).
    schedule: None (constant lr) or "cosine": lr·½(1 + cos(π·step/steps)), decaying to 0.
    penalty: optional callable model -> scalar added to the loss (e.g. an L1 penalty).
    augment: optional callable x_batch -> x_batch applied to every training batch (data
        augmentation, e.g. normkit.data.random_shift); evaluation sees the data as it is.
    eval_every: evaluate (eval mode) at steps 0, eval_every, 2·eval_every, … and at the end;
        None: at the end only. eval_train=False skips the training-set accuracy. With a
        validation set (data.x_val) its accuracy is recorded too (history.val_acc, best_val_step).
    watch: names of submodules (as in model.named_modules()) whose outputs on the test set to summarise.
    callback(model, x_batch, y_batch): called every `callback_every` steps before the update;
        what it returns is appended to history.extra.
    seed: seeds the batch order and the global RNG (dropout masks, noise) at the start.
    loss_fn(logits, y): the training loss, also recorded on the test set (history.test_loss). A
        model of K members ((N, classes, K) logits) takes loss_fn=stacked_cross_entropy; its
        accuracies are then the members' mean (labels (N,), or (N, K) for the training set).
    Stops early, with history.diverged = True, as soon as the loss is NaN, infinite or above
    DIVERGED_LOSS; the model is left in training mode.
    """
    check_int("steps", steps)
    n = len(data.x_train)
    check_int("batch_size", batch_size, 1, n, "training set size")
    check_range("lr", lr)
    if eval_every is not None:
        check_int("eval_every", eval_every)
    check_int("callback_every", callback_every)
    if schedule not in (None, "cosine"):
        raise ValueError(f"schedule={schedule!r}: expected None or 'cosine'")
    torch.manual_seed(seed)
    opt = _optimizer(model, optimizer, lr, momentum, weight_decay)
    base_lrs = [group["lr"] for group in opt.param_groups]
    watched = _watch(model, watch)
    hist = History(model=model, activations={name: [] for name in watched})
    named_params = [(k, p) for k, p in model.named_parameters() if p.requires_grad]
    hist.grad_norm = {k: [] for k, _ in named_params}
    model.train()
    order = batches(n, batch_size, torch.Generator().manual_seed(seed))
    for step in range(steps):
        if eval_every is not None and step % eval_every == 0:
            _evaluate(hist, step, model, data, watched, eval_train, loss_fn)
        idx = next(order)
        xb, yb = data.x_train[idx], data.y_train[idx]
        if augment is not None:
            xb = augment(xb)
        if callback is not None and step % callback_every == 0:
            hist.extra.append(callback(model, xb, yb))
        loss = loss_fn(model(xb), yb)
        if penalty is not None:
            loss = loss + penalty(model)
        if diverged(loss.item()):
            hist.diverged = True
            hist.loss.append(float("nan"))
            return hist
        opt.zero_grad(set_to_none=True)
        loss.backward()
        for k, p in named_params:
            hist.grad_norm[k].append(p.grad.norm().item() if p.grad is not None else 0.0)
        if schedule == "cosine":
            for group, base in zip(opt.param_groups, base_lrs):
                group["lr"] = base * 0.5 * (1 + math.cos(math.pi * step / steps))
        opt.step()
        hist.loss.append(loss.item())
    _evaluate(hist, steps, model, data, watched, eval_train, loss_fn)
    return hist
