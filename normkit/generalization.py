"""Generalization error as an experiment (notebook 01).

The generalization error (일반화 오류) of the seeds is the gap between training and test
performance. These helpers train the small MLP of `normkit.models` on a few of the 8×8 digits
and measure that gap:

- `generalization_gap(model, split)`: train accuracy minus test accuracy, now.
- `overfit_run(n_train, width, ...)`: one training on the first `n_train` digits; its History
  holds both accuracy curves (`train_acc`, `test_acc`) and the final gap (`History.gap`).
- `gap_grid(sizes, widths, ...)`: one run per (training-set size, width), cached, for sliders.
- `ensemble_predict(models, x)`: average the models' probabilities (the fourth family).
"""
import functools

import torch

from . import data, models, train

__all__ = ["generalization_gap", "overfit_run", "gap_grid", "ensemble_predict"]


def generalization_gap(model, split):
    """Train accuracy minus test accuracy of `model` on a `normkit.data.Split` (eval mode)."""
    return (train.accuracy(model, split.x_train, split.y_train)
            - train.accuracy(model, split.x_test, split.y_test))


def overfit_run(n_train, width, steps=150, lr=0.01, batch_size=32, label_noise=0.0, eval_every=10,
                seed=0):
    """Train mlp([64, width, 10]) (ReLU) with Adam on the first `n_train` training digits.

    The test set is the same 497 digits for every n_train, so runs are comparable. label_noise
    replaces that fraction of the training labels by a wrong class (0.9: uniformly random labels).
    Returns the `normkit.train.History` (accuracies every `eval_every` steps).
    """
    if not isinstance(width, int) or width < 1:
        raise ValueError(f"width={width!r}: expected a positive int")
    split = data.digits(n_train=n_train, label_noise=label_noise)
    torch.manual_seed(seed)
    model = models.mlp([64, width, 10])
    return train.fit(model, split, steps=steps, batch_size=min(batch_size, n_train), lr=lr,
                     optimizer="adam", eval_every=eval_every, seed=seed)


@functools.lru_cache(maxsize=None)
def gap_grid(sizes, widths, steps=150, seed=0):
    """{(n_train, width): History} for every training-set size and width (tuples; cached)."""
    return {(n, w): overfit_run(n, w, steps=steps, seed=seed) for n in sizes for w in widths}


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
