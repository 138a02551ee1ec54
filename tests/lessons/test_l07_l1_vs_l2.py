"""normkit.lessons.l07_l1_vs_l2 (notebook 07): its experiments, its claims and its exercise checkers."""
import numpy as np
import pytest
import torch
from torch import nn

import normkit as nk
from normkit import optim
from normkit.lessons import l07_l1_vs_l2 as lesson
from tests.conftest import assert_checker_verdicts, assert_stub_is_a_cross
from normkit.data import Quadratic2D, seed_loss


# ----------------------------------------------------------------------------- 1-D and 2-D pictures
def test_penalized_minimum_moves_the_minimizer_and_raises_the_value():
    w = np.linspace(-2, 6, 80001)
    for lam in (0.0, 0.5, 2.0):
        w_star, value, loss = lesson.penalized_minimum(lam)
        total = seed_loss(w) + 0.5 * lam * w**2
        assert w_star == pytest.approx(w[np.argmin(total)], abs=1e-4) and value == pytest.approx(total.min(), abs=1e-8)
        assert loss == pytest.approx(seed_loss(w_star))


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0, 2.25, 4.0])
def test_seed_loss_l1_minimum_is_the_grid_minimum(alpha):
    w = np.linspace(-2, 6, 80001)
    brute = w[np.argmin(seed_loss(w) + alpha * np.abs(w))]
    assert lesson.seed_loss_l1_minimum(alpha) == pytest.approx(brute, abs=1e-4)
    with pytest.raises(ValueError, match="alpha"):
        lesson.seed_loss_l1_minimum(-1.0)


def test_level_curve_stays_on_the_contour():
    q = Quadratic2D()
    w = (0.3, -0.4)
    x, y = lesson.level_curve(q, w)
    assert np.allclose(q(x, y), q(*w), atol=1e-12)


def test_optimum_path_ridge_closed_form_and_lasso_kkt():
    q = Quadratic2D()
    lams = [0.0, 0.3, 1.0, 2.4]
    ridge, lasso = lesson.optimum_path(q, lams)
    A, ws = q.A.numpy(), q.w_star.numpy()
    for lam, r, w in zip(lams, ridge, lasso):
        assert np.allclose(r, np.linalg.solve(A + lam * np.eye(2), A @ ws))
        grad = A @ (w - ws)                                   # KKT of L + λ‖w‖₁
        for j in range(2):
            if w[j] != 0:
                assert grad[j] + lam * np.sign(w[j]) == pytest.approx(0, abs=1e-9)
            else:
                assert abs(grad[j]) <= lam + 1e-9
    assert lasso[2, 1] == 0 and lasso[3, 0] == 0 and (ridge[1:] != 0).all()


# ----------------------------------------------------------------------------- sparsity
def _reference_sweep(data, lam, penalty, steps, lr, init_std=0.01, seed=0):
    """The same training with autograd and a plain (64, 10) weight matrix."""
    g = torch.Generator().manual_seed(seed)
    W = (init_std * torch.randn(64, 10, generator=g)).requires_grad_()
    b = torch.zeros(10, requires_grad=True)
    for _ in range(steps):
        loss = nn.functional.cross_entropy(data.x_train @ W + b, data.y_train)
        if penalty == "l2":
            loss = loss + nk.regularize.l2_penalty(W, lam)
        elif penalty == "l1_subgradient":
            loss = loss + nk.regularize.l1_penalty(W, lam)
        gW, gb = torch.autograd.grad(loss, (W, b))
        with torch.no_grad():
            W -= lr * gW
            b -= lr * gb
            if penalty == "l1_prox":
                W.copy_(nk.regularize.soft_threshold(W, lr * lam))
    return W.detach(), b.detach()


@pytest.mark.parametrize("penalty", ["l1_prox", "l1_subgradient", "l2"])
def test_sparsity_sweep_matches_autograd_training(penalty):
    data = nk.data.digits()
    lams = [0.0, 1e-3, 3e-2]
    run = lesson.sparsity_sweep(data, lams, penalty, steps=15, lr=1.0)
    assert run.W.shape == (3, 64, 10) and run.b.shape == (3, 10) and run.test_acc.shape == (3,)
    for i, lam in enumerate(lams):
        W, b = _reference_sweep(data, lam, penalty, steps=15, lr=1.0)
        torch.testing.assert_close(run.W[i], W, atol=1e-5, rtol=0)
        torch.testing.assert_close(run.b[i], b, atol=1e-5, rtol=0)


def test_only_proximal_l1_makes_exact_zeros():
    data = nk.data.digits()
    lams = [0.0, 1e-3, 1e-2]
    zeros = {p: lesson.sparsity_sweep(data, lams, p, steps=60).zeros.tolist() for p in
             ("l1_prox", "l1_subgradient", "l2")}
    assert zeros["l1_prox"][0] == 0 and 0 < zeros["l1_prox"][1] < zeros["l1_prox"][2]
    assert zeros["l1_subgradient"] == [0, 0, 0] and zeros["l2"] == [0, 0, 0]
    with pytest.raises(ValueError, match="penalty"):
        lesson.sparsity_sweep(data, lams, "l3")
    with pytest.raises(ValueError, match="lam"):
        lesson.sparsity_sweep(data, [-1.0], "l2")


def test_mosaic_places_each_column():
    W = torch.arange(640.0).view(64, 10)
    m = lesson.mosaic(W)
    assert m.shape == (17, 44)
    assert np.array_equal(m[:8, :8], W[:, 0].view(8, 8).numpy())
    assert np.array_equal(m[9:17, 36:44], W[:, 9].view(8, 8).numpy())
    assert np.isnan(m[8]).all() and np.isnan(m[:, 8]).all()
    two = lesson.mosaic(W, -W)
    assert two.shape == (36, 44) and np.isnan(two[17:19]).all()
    assert np.array_equal(two[19:], -m, equal_nan=True)


# ----------------------------------------------------------------------------- biases
def test_fit_line_matches_normal_equations_and_bias_exclusion():
    x, y = lesson.offset_regression()
    w0, b0 = lesson.fit_line(x, y, 0.0)
    X = torch.stack([x, torch.ones_like(x)], 1)
    ls = torch.linalg.lstsq(X, y[:, None]).solution.flatten().tolist()
    assert (w0, b0) == pytest.approx(ls)
    w, b = lesson.fit_line(x, y, 1.0)                       # bias free: b = mean(y) − w·mean(x)
    assert b == pytest.approx((y.mean() - w * x.mean()).item())
    w2, b2 = lesson.fit_line(x, y, 1.0, penalize_bias=True)
    assert b2 < 0.6 * b                                  # the penalized bias is pulled toward 0
    with pytest.raises(ValueError, match="lam"):
        lesson.fit_line(x, y, -0.1)


# ----------------------------------------------------------------------------- Adam + L2 vs AdamW
@pytest.mark.parametrize("cls", [optim.Adam, optim.AdamW, torch.optim.Adam, torch.optim.AdamW])
def test_effective_decay(cls):
    torch.manual_seed(0)
    model = nk.models.mlp([6, 5, 3]).double()
    opt = cls(nk.regularize.decay_groups(model, 0.1), lr=0.01)
    x, y = torch.randn(8, 6, dtype=torch.float64), torch.randint(0, 3, (8,))
    for _ in range(3):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    rms, rate = lesson.effective_decay(opt)
    assert rms.shape == rate.shape == (6 * 5 + 5 * 3,)               # weights only, no biases
    if cls in (optim.AdamW, torch.optim.AdamW):
        assert torch.allclose(rate, torch.full_like(rate, 0.01 * 0.1))
    else:
        assert torch.allclose(rate, 0.01 * 0.1 / (rms + 1e-8))


def test_adam_vs_adamw_and_bn_weight_norm_run():
    out = lesson.adam_vs_adamw(steps=5)
    assert set(out) == {"adam", "adamw"}
    rms, rate, run = out["adamw"]
    assert len(run.loss) == 5 and rate.numel() == 64 * 64 + 64 * 10
    assert out["adam"][1].std() > 0 and (rate == rate[0]).all()
    (_, sq0), (_, sq1) = lesson.bn_weight_norm_run(0.0, steps=20), lesson.bn_weight_norm_run(0.05, steps=20)
    assert len(sq0) == 20 and sq0[0] == sq1[0]
    assert sq1[-1] < sq1[0] < sq0[-1]                   # decay shrinks it; without decay it grows


# ----------------------------------------------------------------------------- checkers
RIGHT_AND_WRONG = [
    (lesson.check_l1_minimum, lambda a: max(4.5 - 2 * a, 0.0), lambda a: 4.5 / (1 + 2 * a)),
    (lesson.check_elastic_net_step, lambda w, t1, t2: nk.regularize.soft_threshold(w, t1) / (1 + t2),
     lambda w, t1, t2: nk.regularize.soft_threshold(w, t1) - t2 * w),
    (lesson.check_elastic_net_step, lambda w, t1, t2: nk.regularize.soft_threshold(w, t1) / (1 + t2),
     lambda w, t1, t2: nk.regularize.soft_threshold(w / (1 + t2), t1)),
    (lesson.check_weight_penalty,
     lambda m, lam: nk.regularize.l2_penalty(nk.regularize.decay_groups(m, 0.0)[0]["params"], lam),
     lambda m, lam: nk.regularize.l2_penalty(m, lam)),
]


@pytest.mark.parametrize("checker,right,wrong", RIGHT_AND_WRONG, ids=lambda v: getattr(v, "__name__", ""))
def test_checker_accepts_the_right_answer_and_rejects_a_wrong_one(checker, right, wrong, capsys):
    assert_checker_verdicts(checker, right, wrong, capsys)


@pytest.mark.parametrize("checker", [lesson.check_l1_minimum, lesson.check_elastic_net_step,
                                     lesson.check_weight_penalty])
def test_checkers_turn_the_stub_into_a_cross(checker, capsys):
    assert_stub_is_a_cross(checker, capsys)


def test_weight_penalty_checker_leaves_the_global_rng_alone():
    torch.manual_seed(3)
    before = torch.get_rng_state()
    lesson.check_weight_penalty(lambda m, lam: 0.0)
    assert torch.equal(before, torch.get_rng_state())


# ----------------------------------------------------------------------------- claims of notebook 07
def test_claim_lambda_is_a_strength_on_the_penalty():
    """07's 손실율 box: the gradients printed are exactly λw (L2) and λ·sign(w) (L1), λ = 0.1."""
    w = torch.tensor([3.0, -0.5, 0.02, 1.5], dtype=torch.float64, requires_grad=True)
    for penalty, expected in ((nk.regularize.l2_penalty, 0.1 * w), (nk.regularize.l1_penalty, 0.1 * torch.sign(w))):
        grad, = torch.autograd.grad(penalty(w, 0.1), w)
        torch.testing.assert_close(grad, expected.detach())


def test_claim_the_minimizer_moves_to_zero_while_the_minimum_value_rises():
    """07's box on «훨씬 작은 최소값»: w* falls from 4.5 toward 0, min of L + ½λw² rises from 1.00, L(w*) too."""
    rows = [lesson.penalized_minimum(lam) for lam in (0.0, 0.5, 1.0, 2.0, 3.0)]
    w_star, value, loss = (list(col) for col in zip(*rows))
    assert w_star[0] == 4.5 and w_star == sorted(w_star, reverse=True) and w_star[-1] < 1
    assert value[0] == 1.0 and value == sorted(value) and loss == sorted(loss) and loss[2] > 3
    assert w_star[2] == pytest.approx(1.5)


def test_claim_only_proximal_l1_zeroes_weights_at_notebook_scale():
    """'Only the proximal L1 run produces exact zeros, and more of them as λ grows; L1 by subgradient
    reaches about the same accuracy up to λ = 0.01 with no exact zero; L2 zeroes none; no λ > 0
    does clearly better than λ = 0 (a test image or two at most).'"""
    digits = nk.data.digits()
    lams = [0.0, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2]
    s = {p: lesson.sparsity_sweep(digits, lams, p) for p in ("l1_prox", "l1_subgradient", "l2")}
    prox = s["l1_prox"].zeros.tolist()
    assert prox[0] == 0 and prox == sorted(prox) and prox[1] > 50 and prox[-1] > 500
    assert s["l1_subgradient"].zeros.sum() == 0 and s["l2"].zeros.sum() == 0
    assert (s["l1_subgradient"].test_acc[:6] - s["l1_prox"].test_acc[:6]).abs().max() < 0.02
    assert s["l2"].test_acc.min() > 0.9 and s["l1_prox"].test_acc[0] > 0.94
    for run in s.values():                                      # λ = 0 is the same model in every sweep
        assert run.test_acc[1:].max() <= run.test_acc[0] + 0.0045     # 2 of 497 test images


def test_claim_adam_l2_decays_unevenly_adamw_uniformly():
    """'Adam + L2 decays each weight by a different fraction, spread over orders of magnitude, all far
    above AdamW's single ηλ; the fastest are weights of rarely lit pixels; accuracy within two points.'"""
    decay = lesson.adam_vs_adamw(lam=1e-2, lr=1e-3, steps=150)
    (_, adam, run_adam), (_, adamw, run_adamw) = decay["adam"], decay["adamw"]
    q10, q90 = torch.quantile(adam, torch.tensor([0.1, 0.9])).tolist()
    assert q90 / q10 > 20 and q10 > 10 * 1e-5
    torch.testing.assert_close(adamw, torch.full_like(adamw, 1e-5))
    rare = (nk.data.digits().x_train != 0).float().mean(0) < 0.02
    first = adam[:64 * 64].view(64, 64)
    fast = (adam > 0.1).sum().item()
    assert fast > 100 and (first[:, rare] > 0.1).sum().item() > 0.5 * fast
    assert abs(run_adam.final_test_acc - run_adamw.final_test_acc) < 0.04


def test_claim_weight_decay_keeps_the_effective_learning_rate_up_under_bn():
    """'Without decay ‖w_j‖² creeps up (about 0.33 → 0.39); with λ = 10⁻² it falls to about 0.10 and
    the effective rate more than triples.'"""
    (_, plain), (_, decayed) = (lesson.bn_weight_norm_run(wd, lr=0.5, steps=200) for wd in (0.0, 1e-2))
    assert plain[0] == pytest.approx(0.33, abs=0.01) and 0.35 < plain[-1] < 0.43
    assert 0.07 < decayed[-1] < 0.13 and decayed[0] / decayed[-1] > 3
