"""Notebook 01 (generalization and regularization): the generalization error as an experiment.

The generalization error (일반화 오류) of the seeds is the gap between training and test
performance. This module trains the small MLP of `normkit.models` on a few of the 8×8 digits
and measures that gap:

- `generalization_gap(model, split)`: train accuracy minus test accuracy, now.
- `overfit_run(n_train, width, ...)`: one training on the first `n_train` digits; its History
  holds both accuracy curves (`train_acc`, `test_acc`) and the final gap (`History.gap`).
- `gap_grid(sizes, widths, ...)`: one run per (training-set size, width), cached, for sliders.
- `ensemble_predict(models, x)`: average the models' probabilities (the fourth family).
- the exercise checkers `check_generalization_gap`, `check_ensemble_predict`.
"""
import functools

import torch

from .. import check, data, models, train
from ..data import CLASSES, PIXELS
from ..validate import check_int

__all__ = ["generalization_gap", "overfit_run", "gap_grid", "ensemble_predict",
           "check_generalization_gap", "check_ensemble_predict"]


# ----------------------------------------------------------------------------- the gap
def generalization_gap(model, split):
    """Train accuracy minus test accuracy of `model` on a `normkit.data.Split` (eval mode)."""
    return (train.accuracy(model, split.x_train, split.y_train)
            - train.accuracy(model, split.x_test, split.y_test))


def overfit_run(n_train, width, steps=150, lr=0.01, batch_size=32, label_noise=0.0, eval_every=10,
                seed=0):
    """Train mlp([PIXELS, width, CLASSES]) (ReLU) with Adam on the first `n_train` training digits.

    The test set is the same 497 digits for every n_train, so runs are comparable. label_noise
    replaces that fraction of the training labels by a wrong class (0.9: uniformly random labels).
    Returns the `normkit.train.History` (accuracies every `eval_every` steps).
    """
    check_int("width", width)
    split = data.digits(n_train=n_train, label_noise=label_noise)
    torch.manual_seed(seed)
    model = models.mlp([PIXELS, width, CLASSES])
    return train.fit(model, split, steps=steps, batch_size=min(batch_size, n_train), lr=lr,
                     optimizer="adam", eval_every=eval_every, seed=seed)


@functools.lru_cache(maxsize=None)
def gap_grid(sizes, widths, steps=150, seed=0):
    """{(n_train, width): History} for every training-set size and width (tuples; cached)."""
    return {(n, w): overfit_run(n, w, steps=steps, seed=seed) for n in sizes for w in widths}


# ----------------------------------------------------------------------------- the fourth family
@torch.no_grad()
def ensemble_predict(models, x):
    """Class predictions of an ensemble: the argmax of the models' mean softmax probabilities."""
    if not models:
        raise ValueError("models=[]: expected at least one model")
    probs = []
    for m in models:
        was_training = m.training
        m.eval()
        probs.append(torch.softmax(m(x), dim=1))
        m.train(was_training)
    return torch.stack(probs).mean(0).argmax(1)


# ----------------------------------------------------------------------------- exercise checkers
def check_generalization_gap(fn):
    """Exercise: fn(model, split) -> train accuracy − test accuracy (a number).

    Checked on a seeded MLP that overfits 30 digits, so the two accuracies differ clearly.
    """
    split = data.digits(n_train=30, seed=1)
    with torch.random.fork_rng():                # seeded, without touching the notebook's RNG
        torch.manual_seed(20)
        model = models.mlp([PIXELS, 32, CLASSES])
        train.fit(model, split, steps=60, batch_size=30, lr=0.01, optimizer="adam", eval_every=60,
                  seed=20)
    expected = (train.accuracy(model, split.x_train, split.y_train)
                - train.accuracy(model, split.x_test, split.y_test))
    return check.exercise_number("generalization_gap", fn, (model, split), expected,
                                 "train accuracy − test accuracy (eval mode)", atol=1e-6)


def check_ensemble_predict(fn):
    """Exercise: fn(models, x) -> predicted classes, argmax of the mean softmax.

    Three seeded MLPs of different confidence (so averaging logits or voting gives other answers).
    """
    x = data.digits(n_train=200, seed=2).x_train.double()
    with torch.random.fork_rng(), torch.no_grad():
        torch.manual_seed(21)
        nets = [models.mlp([PIXELS, 16, CLASSES]).double() for _ in range(3)]
        for net, scale in zip(nets, (0.5, 3.0, 8.0)):
            net[-1].weight.mul_(scale)
    with torch.no_grad():
        expected = torch.stack([torch.softmax(net(x), 1) for net in nets]).mean(0).argmax(1)
        try:
            got = fn(nets, x.clone())
            got = None if got is None else torch.as_tensor(got).detach().long().flatten()
        except Exception as e:  # noqa: BLE001 (a student's error becomes the ✗ line)
            return check.raised("ensemble_predict", e)
    if got is None or got.shape != expected.shape:
        return check.failed("ensemble_predict", f"expected {len(expected)} class indices, "
                            f"got {None if got is None else tuple(got.shape)}")
    wrong = (got != expected).nonzero().flatten()
    if len(wrong) == 0:
        return check.passed("ensemble_predict",
                            f"all {len(expected)} predictions match the argmax of the mean softmax")
    i = wrong[0].item()
    return check.failed("ensemble_predict",
                        f"{len(wrong)} of {len(expected)} predictions differ from the argmax of the mean "
                        f"softmax (image {i}: expected class {expected[i].item()}, got {got[i].item()})",
                        float(len(wrong)))
