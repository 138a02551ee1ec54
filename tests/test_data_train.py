"""normkit.data (digits, toy losses, covariate shift), normkit.train.fit and normkit.models."""
import math

import numpy as np
import pytest
import torch

import normkit as nk
from normkit.data import Quadratic2D, covariate_shift, digits, seed_loss, seed_loss_minimum


# ----------------------------------------------------------------------------- digits
def test_digits_default_split():
    d = digits()
    assert d.x_train.shape == (1300, 64) and d.x_test.shape == (497, 64)
    assert d.y_train.shape == (1300,) and d.y_test.shape == (497,)
    assert d.x_train.dtype == torch.float32 and d.y_train.dtype == torch.int64
    assert 0.0 <= d.x_train.min() and d.x_train.max() <= 1.0 and d.x_train.max() == 1.0
    assert set(d.y_train.tolist()) == set(range(10)) and set(d.y_test.tolist()) == set(range(10))
    # train and test are disjoint: no image row appears in both
    train_rows = {tuple(r) for r in d.x_train.tolist()}
    overlap = sum(tuple(r) in train_rows for r in d.x_test.tolist())
    assert overlap <= 3                         # sklearn's digits hold a handful of exact duplicates
    assert "train=(1300, 64)" in repr(d)


def test_digits_sizes_images_and_seed():
    d = digits(n_train=100, test_size=300)
    assert len(d.x_train) == 100 and len(d.x_test) == 300
    full = digits()
    img = digits(images=True)
    assert img.x_train.shape == (1300, 1, 8, 8) and img.x_test.shape == (497, 1, 8, 8)
    assert torch.equal(img.x_train.reshape(-1, 64), full.x_train)
    assert torch.equal(digits(n_train=50).x_train, full.x_train[:50])      # a prefix of the same order
    assert torch.equal(digits(seed=0).x_test, full.x_test)
    assert not torch.equal(digits(seed=1).x_test, full.x_test)


@pytest.mark.parametrize("noise", [0.1, 0.25, 0.5, 1.0])
def test_digits_label_noise_flips_exactly_that_fraction(noise):
    clean, noisy = digits(), digits(label_noise=noise)
    flipped = noisy.y_train != clean.y_train                # a flip always lands on another class
    assert flipped.sum().item() == round(noise * len(clean.y_train))
    assert torch.equal(noisy.x_train, clean.x_train)
    assert torch.equal(noisy.y_test, clean.y_test) and torch.equal(noisy.x_test, clean.x_test)
    assert noisy.y_train.min() >= 0 and noisy.y_train.max() <= 9
    if noise < 1.0:                                         # the new labels are spread over classes
        assert len(set(noisy.y_train[flipped].tolist())) == 10


def test_digits_label_noise_zero_and_small_subsets():
    assert torch.equal(digits(label_noise=0.0).y_train, digits().y_train)
    d = digits(n_train=40, label_noise=0.3)
    assert (d.y_train != digits(n_train=40).y_train).sum().item() == 12


# ----------------------------------------------------------------------------- toy losses
def test_seed_loss():
    assert seed_loss(4.5) == 1.0
    assert seed_loss(6.5) == pytest.approx(0.25 * 4 + 1)
    assert torch.allclose(seed_loss(torch.tensor([0.5, 4.5])), torch.tensor([5.0, 1.0]))


@pytest.mark.parametrize("lam", [0.0, 0.1, 0.5, 2.0, 10.0])
def test_seed_loss_minimum_is_the_argmin(lam):
    w_star = seed_loss_minimum(lam)
    w = torch.tensor(w_star, dtype=torch.float64, requires_grad=True)
    total = seed_loss(w) + 0.5 * lam * w ** 2
    (grad,) = torch.autograd.grad(total, w)
    assert abs(grad.item()) < 1e-12                          # stationary, and the loss is convex
    grid = torch.linspace(-1, 6, 70_001, dtype=torch.float64)
    best = grid[(seed_loss(grid) + 0.5 * lam * grid ** 2).argmin()].item()
    assert w_star == pytest.approx(best, abs=2e-4)
    if lam == 0.0:
        assert w_star == 4.5


@pytest.mark.parametrize("lam", [0.0, 0.3, 1.0, 4.0])
def test_quadratic_ridge_closed_form(lam):
    q = Quadratic2D()
    A, w_star = q.A.numpy(), q.w_star.numpy()
    expected = np.linalg.solve(A + lam * np.eye(2), A @ w_star)
    np.testing.assert_allclose(q.ridge(lam).numpy(), expected, rtol=1e-12, atol=1e-14)
    w = q.ridge(lam).clone().requires_grad_(True)            # ∇(L + ½λ‖w‖²) = 0 there
    loss = q(w[0], w[1]) + 0.5 * lam * (w * w).sum()
    (grad,) = torch.autograd.grad(loss, w)
    assert grad.abs().max() < 1e-12
    if lam > 0:
        assert np.linalg.norm(expected) < np.linalg.norm(w_star)     # shrinks toward 0, no exact zeros
        assert (expected != 0).all()


def test_quadratic_lasso():
    q = Quadratic2D()
    torch.testing.assert_close(q.lasso(0.0), q.w_star, atol=1e-8, rtol=0)
    w = q.lasso(1.0)                          # hits the w₂ = 0 axis: an exact zero
    assert w[1].item() == 0.0 and w[0].item() != 0.0
    torch.testing.assert_close(w, torch.tensor([1.28, 0.0], dtype=torch.float64), atol=1e-8, rtol=0)
    assert torch.equal(q.lasso(5.0), torch.zeros(2, dtype=torch.float64))
    for lam in (0.2, 0.7, 1.5):               # KKT conditions of the L1 problem
        w = q.lasso(lam)
        grad = q.A @ (w - q.w_star)
        for i in range(2):
            if w[i] != 0:
                assert abs(grad[i].item() + lam * math.copysign(1, w[i].item())) < 1e-8
            else:
                assert abs(grad[i].item()) <= lam + 1e-8


def test_quadratic_grid():
    q = Quadratic2D()
    W1, W2, L = q.grid(lim=3.0, n=61)
    assert W1.shape == W2.shape == L.shape == (61, 61)
    i, j = np.unravel_index(L.argmin(), L.shape)
    assert abs(W1[i, j] - 2.0) <= 0.05 and abs(W2[i, j] - 0.7) <= 0.05
    assert q(2.0, 0.7) == 0.0 and q(0.0, 0.0) > 0


# ----------------------------------------------------------------------------- covariate shift
def test_covariate_shift():
    x, y = covariate_shift(n=300, shift=0.0, seed=1)
    assert x.shape == (300, 2) and y.shape == (300,)
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.equal(y, (x[:, 1] > torch.sin(1.5 * x[:, 0])).long())     # the fixed labelling rule
    assert 0 < y.sum() < 300
    x2, y2 = covariate_shift(n=300, shift=0.0, seed=1)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    xs, ys = covariate_shift(n=4000, shift=2.5, seed=2)
    assert abs(xs[:, 0].mean().item() - 2.5) < 0.1           # the inputs move along x₁ ...
    assert abs(xs[:, 1].mean().item()) < 0.1                 # (x ~ N((shift, 0), I))
    assert torch.equal(ys, (xs[:, 1] > torch.sin(1.5 * xs[:, 0])).long())   # ... the rule does not
    x0, _ = covariate_shift(n=4000, shift=0.0, seed=2)
    torch.testing.assert_close(xs[:, 0] - x0[:, 0], torch.full((4000,), 2.5))
    assert abs(xs.std(0) - 1).max() < 0.1


def test_digits_loader_equals_sklearn():
    from sklearn.datasets import load_digits
    x, y = nk.data._load_digits()
    d = load_digits()
    assert np.array_equal(x, d.data.astype(np.float32) / 16.0) and np.array_equal(y, d.target)


# ----------------------------------------------------------------------------- train.fit
@pytest.fixture(scope="module")
def small_digits():
    return digits(n_train=400, test_size=300)


def test_fit_improves_and_history_is_consistent(small_digits):
    torch.manual_seed(0)
    model = nk.models.mlp([64, 32, 10], norm="batch")
    steps, every = 60, 20
    h = nk.train.fit(model, small_digits, steps=steps, batch_size=32, lr=0.1, eval_every=every,
                     watch=["1"])
    assert not h.diverged
    assert len(h.loss) == steps and all(math.isfinite(v) for v in h.loss)
    assert h.eval_steps == [0, 20, 40, 60]
    assert len(h.train_acc) == len(h.test_acc) == len(h.test_loss) == len(h.eval_steps)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert list(h.grad_norm) == trainable
    assert all(len(v) == steps and all(g >= 0 for g in v) for v in h.grad_norm.values())
    assert len(h.activations["1"]) == len(h.eval_steps)
    assert set(h.activations["1"][0]) == {"mean", "std", "q15", "q50", "q85"}
    assert h.test_acc[-1] > h.test_acc[0] + 0.3 and h.final_test_acc == h.test_acc[-1]
    assert np.mean(h.loss[-10:]) < np.mean(h.loss[:10]) - 0.5
    assert h.gap == pytest.approx(h.train_acc[-1] - h.test_acc[-1])
    assert model.training                                      # fit leaves the model in train mode
    assert nk.train.accuracy(model, small_digits.x_test, small_digits.y_test) == pytest.approx(h.test_acc[-1])


def test_fit_is_reproducible_and_uses_the_seed(small_digits):
    def run(seed):
        torch.manual_seed(0)
        model = nk.models.mlp([64, 16, 10])
        return nk.train.fit(model, small_digits, steps=15, batch_size=16, lr=0.05, eval_every=5,
                            seed=seed).loss
    a, b, c = run(0), run(0), run(1)
    assert a == b and a != c


def test_fit_diverges_on_a_huge_learning_rate(small_digits):
    torch.manual_seed(0)
    model = nk.models.mlp([64, 32, 10])
    h = nk.train.fit(model, small_digits, steps=50, lr=1e15, eval_every=10)
    assert h.diverged
    assert len(h.loss) < 50 and math.isnan(h.loss[-1])
    assert all(math.isfinite(v) for v in h.loss[:-1])
    assert h.eval_steps[-1] < 50                    # no final evaluation after divergence


def test_fit_with_weight_decay_and_penalty(small_digits):
    torch.manual_seed(0)
    model = nk.models.mlp([64, 16, 10], norm="layer", dropout=0.2)
    calls = []

    def penalty(m):
        calls.append(1)
        return nk.regularize.l1_penalty(m, 1e-4)
    h = nk.train.fit(model, small_digits, steps=10, batch_size=16, optimizer="adamw", lr=1e-2,
                     weight_decay=1e-2, penalty=penalty, eval_every=5)
    assert len(calls) == 10 and len(h.loss) == 10 and not h.diverged


def test_fit_sampler_is_one_permutation_per_epoch():
    gen = torch.Generator().manual_seed(3)
    order = nk.train.batches(10, 3, gen)
    epochs = [torch.cat([next(order) for _ in range(3)]) for _ in range(4)]   # 3 batches of 3 per epoch of 10
    for e in epochs:
        assert len(set(e.tolist())) == 9                  # no repeats within an epoch, one left over
    assert len({tuple(e.tolist()) for e in epochs}) == 4  # reshuffled every epoch


def test_fit_takes_an_optimizer_object_and_a_cosine_schedule(small_digits):
    torch.manual_seed(0)
    model = nk.models.mlp([64, 16, 10])
    opt = nk.optim.SGD(model.parameters(), lr=0.2)
    seen = []
    h = nk.train.fit(model, small_digits, steps=8, batch_size=16, optimizer=opt, schedule="cosine",
                     eval_every=None, callback=lambda m, x, y: seen.append(opt.param_groups[0]["lr"]) or len(x))
    lrs = [0.2 * 0.5 * (1 + math.cos(math.pi * t / 8)) for t in range(8)]
    assert seen[0] == 0.2 and seen[1:] == pytest.approx(lrs[:-1])   # callback runs before each step's update
    assert opt.param_groups[0]["lr"] == pytest.approx(lrs[-1])
    assert h.extra == [16] * 8 and h.eval_steps == [8] and len(h.train_acc) == 1
    assert h.model is model and h.final_loss == pytest.approx(np.mean(h.loss[-10:]))
    assert h.test_error == pytest.approx([100 * (1 - h.test_acc[0])])


def test_fit_eval_train_false_and_callback_every(small_digits):
    torch.manual_seed(0)
    h = nk.train.fit(nk.models.mlp([64, 16, 10]), small_digits, steps=10, batch_size=16, eval_every=4,
                     eval_train=False, callback=lambda m, x, y: 1, callback_every=3)
    assert h.eval_steps == [0, 4, 8, 10] and h.train_acc == [] and len(h.test_acc) == 4
    assert h.extra == [1] * 4                          # steps 0, 3, 6, 9


def test_diverged_is_one_definition():
    assert not nk.train.diverged(2.3) and not nk.train.diverged(nk.train.DIVERGED_LOSS)
    assert all(nk.train.diverged(v) for v in (float("nan"), float("inf"), 1001.0))


def test_fit_stops_when_the_loss_passes_the_divergence_bound(small_digits):
    torch.manual_seed(0)
    h = nk.train.fit(nk.models.mlp([64, 10]), small_digits, steps=5, batch_size=16, eval_every=None,
                     penalty=lambda m: torch.tensor(2e3))     # finite but above DIVERGED_LOSS
    assert h.diverged and len(h.loss) == 1 and math.isnan(h.loss[0])
    assert math.isinf(h.final_loss) and math.isnan(h.final_test_acc)


def test_accuracy_restores_mode():
    model = nk.models.mlp([4, 3])
    x, y = torch.randn(10, 4), torch.zeros(10, dtype=torch.long)
    model.train()
    nk.train.accuracy(model, x, y)
    assert model.training
    model.eval()
    assert 0.0 <= nk.train.accuracy(model, x, y) <= 1.0
    assert not model.training



class _Stack(torch.nn.Module):
    """K members side by side: (N, classes, K) logits."""

    def __init__(self, members):
        super().__init__()
        self.members = torch.nn.ModuleList(members)

    def forward(self, x):
        return torch.stack([m(x) for m in self.members], 2)


def test_fit_evaluates_a_stack_as_its_members_mean(small_digits):
    torch.manual_seed(0)
    stack = _Stack([nk.models.mlp([64, 16, 10], norm="batch") for _ in range(3)])
    h = nk.train.fit(stack, small_digits, steps=20, batch_size=32, lr=0.1, eval_every=None,
                     loss_fn=nk.train.stacked_cross_entropy)
    d = small_digits
    for acc, x, y in ((h.test_acc[-1], d.x_test, d.y_test), (h.train_acc[-1], d.x_train, d.y_train)):
        each = [nk.train.accuracy(m, x, y) for m in stack.members]
        assert len(set(each)) > 1                       # the members differ
        assert acc == pytest.approx(sum(each) / 3, abs=1e-6)
        assert nk.train.accuracy(stack, x, y) == pytest.approx(acc, abs=1e-6)
    with torch.no_grad():
        stack.eval()
        ref = sum(torch.nn.functional.cross_entropy(m(d.x_test), d.y_test) for m in stack.members)
    assert h.test_loss[-1] == pytest.approx(ref.item(), rel=1e-5)


def test_stacked_cross_entropy_is_the_sum_of_the_members():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(7, 5, 3, generator=g, dtype=torch.float64)
    y = torch.randint(0, 5, (7,), generator=g)
    ce = torch.nn.functional.cross_entropy
    ref = sum(ce(logits[:, :, k], y) for k in range(3))
    assert torch.allclose(nk.train.stacked_cross_entropy(logits, y), ref)
    y_own = torch.randint(0, 5, (7, 3), generator=g)             # member k's labels in [:, k]
    ref = sum(ce(logits[:, :, k], y_own[:, k]) for k in range(3))
    assert torch.allclose(nk.train.stacked_cross_entropy(logits, y_own), ref)


# ----------------------------------------------------------------------------- models
def test_mlp_structure():
    from torch import nn
    plain = nk.models.mlp([64, 32, 16, 10], activation="tanh", dropout=0.3)
    types = [type(m).__name__ for m in plain]
    assert types == ["Linear", "Tanh", "Dropout", "Linear", "Tanh", "Dropout", "Linear"]
    assert isinstance(plain[2], nk.Dropout) and plain[2].p == 0.3
    bn = nk.models.mlp([64, 32, 10], norm="batch")
    assert [type(m).__name__ for m in bn] == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert bn[0].bias is None and isinstance(bn[1], nk.BatchNorm1d)   # β replaces the bias
    after = nk.models.mlp([64, 32, 10], norm="layer", norm_after_activation=True)
    assert [type(m).__name__ for m in after] == ["Linear", "ReLU", "LayerNorm", "Linear"]
    assert after[0].bias is not None
    custom = nk.models.mlp([8, 4, 2], norm=lambda w: nk.GroupNorm(2, w))
    assert isinstance(custom[1], nk.GroupNorm)
    assert plain(torch.randn(5, 64)).shape == (5, 10)
    assert all(not isinstance(m, (nn.BatchNorm1d, nn.LayerNorm, nn.Dropout)) for m in bn.modules())


@pytest.mark.parametrize("norm", [None, "batch", "group", "layer", "instance"])
def test_cnn_shapes(norm):
    model = nk.models.cnn(norm=norm, channels=8, groups=4)
    out = model(torch.randn(3, 1, 8, 8))
    assert out.shape == (3, 10)
    convs = [m for m in model if isinstance(m, torch.nn.Conv2d)]
    assert all((c.bias is None) == (norm is not None) for c in convs)
    norms = [m for m in model if type(m).__module__ == "normkit.layers"]
    assert len(norms) == (0 if norm is None else 2)


def test_digits_validation_set_is_held_out_and_leaves_train_and_test_alone():
    base, with_val = digits(n_train=100), digits(n_train=100, val_size=300)
    assert base.x_val is None and "val" not in repr(base)
    assert torch.equal(base.x_train, with_val.x_train) and torch.equal(base.x_test, with_val.x_test)
    assert with_val.x_val.shape == (300, 64) and with_val.y_val.shape == (300,)
    rows = {tuple(r.tolist()) for r in torch.cat([with_val.x_train, with_val.x_test])}
    assert not any(tuple(r.tolist()) in rows for r in with_val.x_val[:50]), "validation images reused"
    with pytest.raises(ValueError, match="n_train=1300"):
        digits(n_train=1300, val_size=1)
    with pytest.raises(ValueError, match="val_size"):
        digits(val_size=-1)


def test_random_shift_moves_whole_images_by_at_most_max_shift():
    torch.manual_seed(0)
    x = torch.zeros(200, 1, 8, 8)
    x[:, 0, 3, 4] = 1.0                                   # one lit pixel at (3, 4)
    out = nk.data.random_shift(x, max_shift=2)
    assert out.shape == x.shape and torch.equal(out.sum((1, 2, 3)), torch.ones(200))   # moved, not lost
    rows, cols = out[:, 0].nonzero()[:, 1], out[:, 0].nonzero()[:, 2]
    assert set((rows - 3).tolist()) == set(range(-2, 3)) == set((cols - 4).tolist())
    assert nk.data.random_shift(x.reshape(200, 64), 0).equal(x.reshape(200, 64))     # flat input, no shift
    edge = torch.zeros(1, 64)
    edge[0, 0] = 1.0
    assert nk.data.random_shift(edge.expand(500, 64), 1).sum() < 500        # pushed out: zero fill
    with pytest.raises(ValueError, match="max_shift"):
        nk.data.random_shift(x, max_shift=8)


def test_fit_augments_training_batches_only_and_records_validation(small_digits):
    split = digits(n_train=64, val_size=100)
    seen = []

    def augment(xb):
        seen.append(xb.shape)
        return xb.flip(1)
    h = nk.train.fit(nk.models.mlp([64, 16, 10]), split, steps=12, batch_size=16, lr=0.1, eval_every=4,
                     augment=augment)
    assert seen == [(16, 64)] * 12
    assert len(h.val_acc) == len(h.test_acc) == len(h.eval_steps) == 4
    assert h.best_val_step == h.eval_steps[max(range(4), key=h.val_acc.__getitem__)]
    assert h.test_acc_at_best_val == h.test_acc[h.eval_steps.index(h.best_val_step)]
    no_val = nk.train.fit(nk.models.mlp([64, 10]), small_digits, steps=2, batch_size=8, eval_every=1)
    with pytest.raises(ValueError, match="x_val"):
        _ = no_val.best_val_step


def test_overfitting_setup_is_the_documented_one():
    """The set-up 01 and 11 share: 200 digits with 30 % wrong labels, 300 validation, 497 test."""
    from normkit import overfitting
    split = overfitting.split()
    assert (len(split.x_train), len(split.x_val), len(split.x_test)) == (200, 300, 497)
    clean = digits(n_train=200, val_size=300)
    assert (split.y_train != clean.y_train).float().mean().item() == pytest.approx(0.3)
    net = overfitting.build(dropout=0.5, norm="batch", input_noise=0.2)
    kinds = [type(m).__name__ for m in net]
    assert kinds == ["GaussianNoise", "Linear", "BatchNorm1d", "ReLU", "Dropout", "Linear"]
    h = overfitting.run(weight_decay=1.0, max_shift=1, steps=20)
    assert h.eval_steps == [0, 10, 20] and len(h.val_acc) == 3
