"""A tiny training loop that records what the notebooks plot.

`fit` runs mini-batch training for a fixed number of steps and returns a `History`: the loss of
every step, train/test accuracy every `eval_every` steps, gradient norms per parameter, and for
the modules named in `watch` the distribution of their output (mean, std, and the 15/50/85th
percentiles of unit 0, as in Ioffe & Szegedy's Fig. 1).
"""
import math
from dataclasses import dataclass, field

import torch
from torch.nn.functional import cross_entropy

from . import optim
from .validate import check_range
from .regularize import decay_groups

__all__ = ["History", "fit", "accuracy"]


@dataclass
class History:
    loss: list = field(default_factory=list)          # training loss, every step
    eval_steps: list = field(default_factory=list)    # steps at which the lists below were taken
    train_acc: list = field(default_factory=list)
    test_acc: list = field(default_factory=list)
    test_loss: list = field(default_factory=list)
    grad_norm: dict = field(default_factory=dict)     # parameter name -> list, every step
    activations: dict = field(default_factory=dict)   # watched module -> list of dicts
    diverged: bool = False

    @property
    def final_test_acc(self):
        return self.test_acc[-1] if self.test_acc else float("nan")

    @property
    def gap(self):
        """Generalization gap: train accuracy minus test accuracy at the end."""
        return self.train_acc[-1] - self.test_acc[-1]


@torch.no_grad()
def accuracy(model, x, y):
    """Fraction of correct argmax predictions, with the model in eval mode."""
    was_training = model.training
    model.eval()
    acc = (model(x).argmax(1) == y).float().mean().item()
    model.train(was_training)
    return acc


def _optimizer(model, name, lr, momentum, weight_decay):
    # normkit.optim: torch.optim's updates without its first-step import of torch._dynamo (~1 s)
    if name == "sgd":
        return optim.SGD(decay_groups(model, weight_decay), lr=lr, momentum=momentum)
    if name == "adam":      # L2 folded into the gradient (coupled), as torch.optim.Adam does
        return optim.Adam(decay_groups(model, weight_decay), lr=lr)
    if name == "adamw":     # decoupled weight decay (Loshchilov & Hutter 2019)
        return optim.AdamW(decay_groups(model, weight_decay), lr=lr)
    raise ValueError(f"optimizer={name!r}: expected 'sgd', 'adam' or 'adamw'")


def fit(model, data, steps=300, batch_size=64, lr=0.1, optimizer="sgd", momentum=0.0,
        weight_decay=0.0, penalty=None, eval_every=25, watch=(), seed=0, loss_fn=cross_entropy):
    """Train `model` on `data` (a normkit.data.Split) and return its History.

    penalty: optional callable model -> scalar added to the loss (e.g. an L1 penalty).
    watch: names of submodules (as in model.named_modules()) whose outputs to summarise.
    Stops early, with history.diverged = True, if the loss becomes NaN or infinite.
    """
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps={steps!r}: expected a positive int")
    n = len(data.x_train)
    if not isinstance(batch_size, int) or not 1 <= batch_size <= n:
        raise ValueError(f"batch_size={batch_size!r}: expected an int in [1, {n}] (training set size)")
    check_range("lr", lr)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    opt = _optimizer(model, optimizer, lr, momentum, weight_decay)
    hist = History()
    modules = dict(model.named_modules())
    for name in watch:
        if name not in modules:
            raise ValueError(f"watch: no submodule named {name!r}; expected one of {list(modules)[1:]}")
        hist.activations[name] = []
    named_params = [(k, p) for k, p in model.named_parameters() if p.requires_grad]
    for k, _ in named_params:
        hist.grad_norm[k] = []

    def evaluate(step):
        captured = {}
        hooks = [modules[name].register_forward_hook(
            lambda m, i, o, name=name: captured.__setitem__(name, o.detach())) for name in watch]
        hist.eval_steps.append(step)
        hist.train_acc.append(accuracy(model, data.x_train, data.y_train))
        was_training = model.training
        model.eval()
        with torch.no_grad():
            logits = model(data.x_test)
        model.train(was_training)
        for h in hooks:
            h.remove()
        hist.test_acc.append((logits.argmax(1) == data.y_test).float().mean().item())
        hist.test_loss.append(loss_fn(logits, data.y_test).item())
        qs = torch.tensor([0.15, 0.5, 0.85])
        for name, out in captured.items():
            unit = out.reshape(len(out), -1)[:, 0].float()
            q15, q50, q85 = torch.quantile(unit, qs).tolist()
            hist.activations[name].append({"mean": out.mean().item(), "std": out.std().item(),
                                           "q15": q15, "q50": q50, "q85": q85})

    model.train()
    perm, pos = torch.randperm(n, generator=gen), 0
    for step in range(steps):
        if step % eval_every == 0:
            evaluate(step)
        if pos + batch_size > n:
            perm, pos = torch.randperm(n, generator=gen), 0
        idx = perm[pos:pos + batch_size]
        pos += batch_size
        loss = loss_fn(model(data.x_train[idx]), data.y_train[idx])
        if penalty is not None:
            loss = loss + penalty(model)
        if not math.isfinite(loss.item()):
            hist.diverged = True
            hist.loss.append(float("nan"))
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        for k, p in named_params:
            hist.grad_norm[k].append(p.grad.norm().item() if p.grad is not None else 0.0)
        opt.step()
        hist.loss.append(loss.item())
    if not hist.diverged:
        evaluate(steps)
    return hist
