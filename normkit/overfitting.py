"""The overfitting set-up of notebook 01, which notebook 11 (the capstone) sets out to beat.

A wide MLP [PIXELS, WIDTH, CLASSES] trained with AdamW on N_TRAIN digits of which LABEL_NOISE are
mislabelled: it reaches ~100 % training accuracy by memorizing the wrong labels, and its test
accuracy pays for it. Every regularizer of the course can be switched on in `run`, alone or
combined; VAL_SIZE held-out digits (neither training nor test) choose λ, p and the stopping step,
so the test accuracy stays an honest estimate.

    split()                          the data (cached): 200 train (30 % wrong labels), 300 val, 497 test
    build(dropout=0.5, norm="batch") the model, with the regularizers that live in the network
    run(weight_decay=3.0)            train it; the History holds val_acc and test_acc every EVAL_EVERY steps
    history.test_acc_at_best_val     what early stopping keeps
"""
from functools import lru_cache

import torch
from torch import nn

from . import data, layers, models, train
from .data import CLASSES, PIXELS

__all__ = ["N_TRAIN", "LABEL_NOISE", "VAL_SIZE", "WIDTH", "STEPS", "LR", "BATCH_SIZE", "EVAL_EVERY",
           "split", "build", "run"]

N_TRAIN, LABEL_NOISE, VAL_SIZE, WIDTH = 200, 0.3, 300, 256
STEPS, LR, BATCH_SIZE, EVAL_EVERY = 250, 0.01, 32, 10


@lru_cache(maxsize=None)
def split(seed=0):
    """The digits of the set-up: N_TRAIN noisy training labels, VAL_SIZE validation, 497 test (clean)."""
    return data.digits(n_train=N_TRAIN, label_noise=LABEL_NOISE, val_size=VAL_SIZE, seed=seed)


def build(dropout=0.0, norm=None, input_noise=0.0):
    """mlp([PIXELS, WIDTH, CLASSES]) with dropout p after the hidden layer, an optional norm
    ("batch", "layer") before its ReLU, and Gaussian noise of std `input_noise` on the input."""
    net = models.mlp([PIXELS, WIDTH, CLASSES], norm=norm, dropout=dropout)
    return nn.Sequential(layers.GaussianNoise(input_noise), *net) if input_noise else net


def run(weight_decay=0.0, dropout=0.0, norm=None, input_noise=0.0, max_shift=0, steps=STEPS, seed=0,
        data_seed=0):
    """Train build(dropout, norm, input_noise) with AdamW (decoupled weight decay `weight_decay`) on
    split(data_seed), the training images shifted by up to `max_shift` pixels (data augmentation).
    `seed` fixes the initial weights, the batch order, the dropout masks, the noise and the shifts:
    the same arguments give the same History whatever ran before.
    Returns the train.History: train/val/test accuracy every EVAL_EVERY steps."""
    augment = (lambda x: data.random_shift(x, max_shift)) if max_shift else None
    torch.manual_seed(seed)                    # the initial weights (train.fit seeds the rest)
    model = build(dropout, norm, input_noise)
    return train.fit(model, split(data_seed), steps=steps, batch_size=BATCH_SIZE, lr=LR, optimizer="adamw",
                     weight_decay=weight_decay, augment=augment, eval_every=EVAL_EVERY, seed=seed)
