"""Offline data for the notebooks: digits, the seeds' toy losses, covariate shift.

Everything is small enough to train on in seconds on a laptop CPU and needs no download:
scikit-learn ships the 8×8 digits (1,797 images, 10 classes).
"""
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from .validate import check_int, check_range

__all__ = ["PIXELS", "CLASSES", "Split", "digits", "random_shift", "seed_loss", "seed_loss_minimum", "Quadratic2D",
           "covariate_shift"]

PIXELS, CLASSES = 64, 10      # the digits: 8×8 images, 10 classes (an MLP on them is [PIXELS, …, CLASSES])


@dataclass
class Split:
    """Train and test tensors: x float32 (N, 64) or (N, 1, 8, 8) in [0, 1], y int64 labels; and
    optionally a validation set, to choose hyperparameters on data that is neither."""
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    x_val: torch.Tensor = None
    y_val: torch.Tensor = None

    def __repr__(self):
        val = "" if self.x_val is None else f", val={tuple(self.x_val.shape)}"
        return (f"Split(train={tuple(self.x_train.shape)}{val}, test={tuple(self.x_test.shape)}, "
                f"classes={int(self.y_train.max()) + 1})")


@lru_cache(maxsize=1)
def _load_digits():
    # The CSV that sklearn.datasets.load_digits reads, read directly (same arrays): importing
    # sklearn.datasets pulls in scipy and costs 1–3 s of every notebook's run time.
    from importlib.util import find_spec
    from pathlib import Path
    path = Path(find_spec("sklearn").submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"
    raw = np.loadtxt(path, delimiter=",", dtype=np.float32)
    return raw[:, :-1] / 16.0, raw[:, -1].astype(np.int64)


def digits(n_train=None, test_size=497, label_noise=0.0, images=False, val_size=0, seed=0):
    """sklearn's 8×8 digits as a train/test Split (fixed shuffle per seed).

    n_train: keep only the first n_train training images (to provoke overfitting).
    label_noise: fraction of *training* labels replaced by a random other class (test stays clean).
    images: shape (N, 1, 8, 8) for CNNs instead of (N, 64).
    val_size: also hold out this many images as a validation set (x_val, y_val), taken from the end
        of the training pool, so the training and test images do not change with it.
    """
    x, y = _load_digits()
    check_int("test_size", test_size, 1, len(x) - 1)
    check_int("val_size", val_size, 0, len(x) - test_size - 1, "images left after the test set")
    max_train = len(x) - test_size - val_size
    if n_train is not None and (not isinstance(n_train, int) or not 1 <= n_train <= max_train):
        raise ValueError(f"n_train={n_train!r}: expected None or an int in [1, {max_train}]")
    check_range("label_noise", label_noise, 0.0, 1.0)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    pool = order[test_size:len(x) - val_size]
    test, train, val = order[:test_size], pool[:n_train], order[len(x) - val_size:]
    x_tr, y_tr = x[train], y[train].copy()
    flip = np.zeros(len(y_tr), dtype=bool)               # exactly round(label_noise·n) labels
    flip[rng.permutation(len(y_tr))[:round(label_noise * len(y_tr))]] = True
    y_tr[flip] = (y_tr[flip] + rng.integers(1, 10, flip.sum())) % 10   # always a wrong class
    shape = (-1, 1, 8, 8) if images else (-1, 64)
    t = torch.from_numpy
    split = Split(t(x_tr).reshape(shape), t(y_tr), t(x[test]).reshape(shape), t(y[test]))
    if val_size:
        split.x_val, split.y_val = t(x[val]).reshape(shape), t(y[val])
    return split


def random_shift(x, max_shift=1):
    """Data augmentation for the digits: move each image by a random whole number of pixels, at
    most `max_shift` left/right and up/down (uniform, drawn from torch's global RNG), filling with 0.

    x: (N, 64) or (N, 1, 8, 8); returns the same shape.
    """
    check_int("max_shift", max_shift, 0, 7)
    imgs = x.reshape(-1, 1, 8, 8)                                     # (N, 1, 8, 8)
    n, m = len(imgs), max_shift
    padded = torch.nn.functional.pad(imgs, (m, m, m, m))              # (N, 1, 8+2m, 8+2m)
    dy, dx = torch.randint(0, 2 * m + 1, (2, n))                      # offsets into the padding
    rows = (dy[:, None] + torch.arange(8))[:, :, None]                # (N, 8, 1)
    cols = (dx[:, None] + torch.arange(8))[:, None, :]                # (N, 1, 8)
    out = padded[torch.arange(n)[:, None, None], 0, rows, cols]       # (N, 8, 8)
    return out.reshape(x.shape)


def seed_loss(w):
    """The lecture's 1-D loss (seed 004): a bowl with its minimum at w = 4.5, L(w) = ¼(w − 4.5)² + 1."""
    return 0.25 * (w - 4.5) ** 2 + 1.0


def seed_loss_minimum(lam):
    """argmin_w of seed_loss(w) + ½·λ·w², in closed form: 4.5 · ½/(½ + λ)."""
    check_range("lam", lam)
    return 4.5 * 0.5 / (0.5 + lam)


class Quadratic2D:
    """L(w) = ½ (w − w_star)ᵀ A (w − w_star): elliptic contours for the L1-vs-L2 pictures."""

    def __init__(self, w_star=(2.0, 0.7), A=((1.0, 0.4), (0.4, 0.6))):
        self.w_star = torch.tensor(w_star, dtype=torch.float64)
        self.A = torch.tensor(A, dtype=torch.float64)

    def __call__(self, w1, w2):
        d1, d2 = w1 - self.w_star[0].item(), w2 - self.w_star[1].item()
        a, b, c = self.A[0, 0].item(), self.A[0, 1].item(), self.A[1, 1].item()
        return 0.5 * (a * d1 * d1 + 2 * b * d1 * d2 + c * d2 * d2)

    def grid(self, lim=3.0, n=201):
        """(W1, W2, L) on a square grid, ready for plt.contour."""
        w = np.linspace(-lim, lim, n)
        W1, W2 = np.meshgrid(w, w)
        return W1, W2, self(W1, W2)

    def ridge(self, lam):
        """argmin L(w) + ½λ‖w‖²  = (A + λI)⁻¹ A w_star."""
        check_range("lam", lam)
        return torch.linalg.solve(self.A + lam * torch.eye(2, dtype=torch.float64), self.A @ self.w_star)

    def lasso(self, lam, steps=2000):
        """argmin L(w) + λ‖w‖₁ by proximal gradient descent (ISTA): gradient step, soft-threshold."""
        from .regularize import soft_threshold
        check_range("lam", lam)
        lr = 1.0 / torch.linalg.eigvalsh(self.A).max()
        w = torch.zeros(2, dtype=torch.float64)
        for _ in range(steps):
            w = soft_threshold(w - lr * (self.A @ (w - self.w_star)), float(lr * lam))
        return w


def covariate_shift(n=500, shift=0.0, seed=0):
    """Two-class points whose *input* distribution moves with `shift`; the labelling rule does not.

    x ~ N((shift, 0), I) and y = 1[x₂ > sin(1.5·x₁)]: a model trained at shift = 0 sees only
    part of the curved boundary, so its accuracy drops as the test inputs move away (seed 001's
    black cats vs coloured cats). Returns (x float32 (n, 2), y int64 (n,)).
    The shift moves x₁ only, along the boundary: moving x₂ as well would lift the points above
    the curve, where every label is 1 and a shift would cost nothing (measured).
    """
    check_int("n", n)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, generator=g)
    x[:, 0] += shift
    y = (x[:, 1] > torch.sin(1.5 * x[:, 0])).long()
    return x, y
