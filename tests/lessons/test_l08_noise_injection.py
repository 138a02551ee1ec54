"""normkit.lessons.l08_noise_injection (notebook 08): its experiments, its claims and its exercise checkers."""
import math

import pytest
import torch
from sklearn.linear_model import Ridge

import normkit as nk
from normkit.lessons import l08_noise_injection as lesson
from tests.conftest import assert_stub_is_a_cross


# ---------------------------------------------------------------------------- noise injection
def test_regression_is_standardized():
    x, y, w = lesson.regression(n=30, d=4)
    assert x.shape == (30, 4) and y.shape == (30,) and w.shape == (4,)
    torch.testing.assert_close(x.mean(0), torch.zeros(4, dtype=torch.float64))
    torch.testing.assert_close(x.var(0, unbiased=False), torch.ones(4, dtype=torch.float64))
    with pytest.raises(ValueError, match="correlation"):
        lesson.regression(correlation=1.5)


def test_ridge_matches_sklearn_with_alpha_n_lambda():
    x, y, _ = lesson.regression()
    for lam in (0.0, 0.1, 2.0):
        w, b = lesson.ridge(x, y, lam)
        sk = Ridge(alpha=len(x) * lam).fit(x.numpy(), y.numpy())
        torch.testing.assert_close(w, torch.from_numpy(sk.coef_))
        assert b.item() == pytest.approx(sk.intercept_)
    ws, bs = lesson.ridge(x, y, torch.tensor([0.1, 2.0]))
    torch.testing.assert_close(ws[1], lesson.ridge(x, y, 2.0)[0])
    with pytest.raises(ValueError, match="lam"):
        lesson.ridge(x, y, -1.0)


def test_input_noise_training_lands_on_ridge_and_weight_noise_on_ols():
    x, y, _ = lesson.regression()
    sig = [0.0, 0.5, 1.0]
    w, _ = lesson.train_linear_with_noise(x, y, sig, where="input")
    ridge_w, _ = lesson.ridge(x, y, torch.tensor(sig) ** 2)
    assert (w - ridge_w).abs().max() < 0.03
    lam = lesson.fit_lambda(x, y, w[1:])
    torch.testing.assert_close(lam, torch.tensor([0.25, 1.0], dtype=torch.float64), rtol=0.1, atol=0)
    ww, _ = lesson.train_linear_with_noise(x, y, [0.5], where="weight")
    assert (ww[0] - lesson.ridge(x, y, 0.0)[0]).abs().max() < 0.03
    with pytest.raises(ValueError, match="where"):
        lesson.train_linear_with_noise(x, y, sig, where="output")
    with pytest.raises(ValueError, match="copies"):
        lesson.train_linear_with_noise(x, y, sig, copies=0)


def test_fit_lambda_recovers_exact_ridge():
    x, y, _ = lesson.regression()
    w, _ = lesson.ridge(x, y, torch.tensor([0.01, 0.1, 1.0]))
    lams = torch.logspace(-3, 1, 401, dtype=torch.float64)
    torch.testing.assert_close(lesson.fit_lambda(x, y, w, lams), torch.tensor([0.01, 0.1, 1.0], dtype=torch.float64))


def test_expected_noisy_loss_against_monte_carlo():
    x, y, w = lesson.regression()
    g = torch.Generator().manual_seed(5)
    eps = 0.7 * torch.randn(20_000, *x.shape, generator=g, dtype=torch.float64)
    mc = (0.5 * (y - (x + eps) @ w - 0.3) ** 2).mean()
    assert lesson.expected_noisy_loss(w, 0.3, x, y, 0.7).item() == pytest.approx(mc.item(), rel=0.01)
    with pytest.raises(ValueError, match="sigma"):
        lesson.expected_noisy_loss(w, 0.3, x, y, -1.0)


def test_weight_noise_penalty_exact_for_quadratic_and_close_for_tiny_net():
    A = torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))

    def quad(thetas):
        return 0.5 * ((thetas @ A) * thetas).sum(-1)
    measured, predicted = lesson.weight_noise_penalty(quad, torch.ones(3, dtype=torch.float64), [0.1, 1.0],
                                                      samples=50_000)
    torch.testing.assert_close(predicted, torch.tensor([0.03, 3.0]))
    torch.testing.assert_close(measured, predicted, rtol=0.03, atol=0)
    loss_fn, theta = lesson.tiny_net(steps=200)
    assert theta.shape == (25,) and loss_fn(theta[None]).item() < 0.05
    m, p = lesson.weight_noise_penalty(loss_fn, theta, [0.01])
    assert m.item() == pytest.approx(p.item(), rel=0.1)


def test_bn_noise_reconstructs_batch_norm():
    z = torch.randn(300, generator=torch.Generator().manual_seed(6), dtype=torch.float64) * 3 + 1
    mult, add = lesson.bn_noise(z, 10, n_batches=30, seed=7)
    assert mult.shape == add.shape == (30,)
    # rebuild the first mini-batch exactly as bn_noise draws it (training's epoch sampler)
    idx = next(nk.train.batches(300, 10, torch.Generator().manual_seed(7)))
    batch = z[idx]
    u = (batch - z.mean()) / z.var(unbiased=False).sqrt()
    bn = torch.nn.functional.batch_norm(batch[:, None], None, None, training=True, eps=1e-300)[:, 0]
    torch.testing.assert_close(mult[0] * u + add[0], bn)
    with pytest.raises(ValueError, match="batch_size"):
        lesson.bn_noise(z, 1)


def test_spread_is_std_for_gaussian():
    v = torch.randn(200_000, generator=torch.Generator().manual_seed(8)) * 2
    assert lesson.spread(v) == pytest.approx(2.0, rel=0.02)


def test_one_epoch_counts_steps_and_refuses_bad_sizes():
    rows = lesson.one_epoch([650, 1300], epochs=2)
    assert [r["steps"] for r in rows] == [4, 2]
    assert all(0 <= r["test_acc"] <= 1 and r["seconds"] > 0 for r in rows)
    with pytest.raises(ValueError, match="batch_size"):
        lesson.one_epoch([1])


def test_tiny_net_is_deterministic():
    a = lesson.tiny_net(steps=50)[1]
    b = lesson.tiny_net(steps=50)[1]
    torch.testing.assert_close(a, b)
    assert not math.isnan(a.sum().item())


# ------------------------------------------------------------------------------------ checkers
def _bn_terms_ref(z, mu, sigma):
    sb = z.var(correction=0).sqrt()
    return sigma / sb, (mu - z.mean()) / sb


@pytest.mark.parametrize("checker, good, bad", [
    (lesson.check_noisy_mse, lambda w, b, x, y, s: ((y - x @ w - b) ** 2).mean() + (s**2 * w * w).sum(),
     lambda w, b, x, y, s: ((y - x @ w - b) ** 2).mean() + 0.5 * (s**2 * w * w).sum()),
    (lesson.check_noisy_mse, lambda w, b, x, y, s: ((y - x @ w - b) ** 2).mean() + (s**2 * w * w).sum(),
     lambda w, b, x, y, s: ((y - x @ w - b) ** 2).mean() + (s**2).mean() * (w * w).sum()),     # isotropic
    (lesson.check_bn_noise, _bn_terms_ref, lambda z, mu, sigma: (1.0, 0.0)),
])
def test_checkers_pass_and_fail(checker, good, bad, capsys):
    assert checker(good)
    assert capsys.readouterr().out.startswith("✓")
    assert not checker(bad)
    assert capsys.readouterr().out.startswith("✗")


@pytest.mark.parametrize("checker", [lesson.check_noisy_mse, lesson.check_bn_noise])
def test_checkers_turn_the_stub_into_a_cross(checker, capsys):
    assert_stub_is_a_cross(checker, capsys)


# ----------------------------------------------------------------------------- claims of notebook 08
# Notebook scale, bands that hold on every kernel path we ran.
def test_claim_input_noise_is_ridge_and_weight_noise_is_not():
    """Bishop 1995 on notebook 08's regression: training with input noise σ lands on ridge with
    λ = σ² (fitted λ within a few %); weight noise leaves ‖w‖ at the OLS value; for a tanh net the
    weight-noise penalty is ½σ²·tr ∇²L at small σ."""
    x, y, _ = lesson.regression()
    sigmas = [0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0]
    w_noise, _ = lesson.train_linear_with_noise(x, y, sigmas, where="input")
    lam_fit = torch.as_tensor(lesson.fit_lambda(x, y, w_noise), dtype=torch.float64)
    torch.testing.assert_close(lam_fit, torch.tensor(sigmas, dtype=torch.float64) ** 2, rtol=0.03, atol=0.002)
    w_ridge, _ = lesson.ridge(x, y, torch.tensor(sigmas) ** 2)
    assert (w_noise - w_ridge).abs().max() < 0.02
    w_weight, _ = lesson.train_linear_with_noise(x, y, sigmas, where="weight")
    ols = lesson.ridge(x, y, 0.0)[0].norm()
    assert (w_weight.norm(dim=1) - ols).abs().max() < 0.05 < ols - w_noise.norm(dim=1)[-1]
    loss_fn, theta = lesson.tiny_net()
    measured, predicted = lesson.weight_noise_penalty(loss_fn, theta, [0.003, 0.01])
    torch.testing.assert_close(torch.as_tensor(measured), torch.as_tensor(predicted), rtol=0.03, atol=0)


def test_claim_batch_norm_noise_falls_like_one_over_sqrt_m():
    """Notebook 08's BN-noise slide: both noise terms shrink like 1/√m (a 16× larger batch, about 4×
    less spread), and a batch of 2 comes out as ±1 whatever its values."""
    digits = nk.data.digits()
    z = digits.x_train @ torch.randn(64, generator=torch.Generator().manual_seed(0))
    spr = {m: [lesson.spread(v) for v in lesson.bn_noise(z, m)] for m in (8, 128)}
    for k in (0, 1):
        assert 3.2 < spr[8][k] / spr[128][k] < 5.5                 # √16 = 4; measured 5.2, 4.9
    pair = nk.functional.batch_norm(z[:2, None], None, None, training=True).flatten()
    torch.testing.assert_close(pair.abs(), torch.ones(2), rtol=1e-4, atol=0)


def test_claim_a_larger_batch_takes_fewer_steps_per_epoch_and_learns_less_per_epoch():
    """Notebook 08's seed-004 box: one epoch of 1,300 images is 130 / 26 / 5 steps at B = 10 / 50 / 260;
    the epoch takes less time at B = 260 than at B = 10, and at the same learning rate the test accuracy after it
    falls from above 90 % to below 50 %."""
    rows = lesson.one_epoch([10, 50, 260])
    assert [r["steps"] for r in rows] == [130, 26, 5]
    acc = [r["test_acc"] for r in rows]
    assert acc[0] > 0.9 and acc[0] > acc[1] > acc[2] and acc[2] < 0.5      # 0.93, 0.87, 0.28
    assert rows[2]["seconds"] < rows[0]["seconds"]          # 5 steps vs 130: robust even on a busy machine
