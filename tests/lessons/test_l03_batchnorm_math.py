"""normkit.lessons.l03_batchnorm_math (notebook 03): its experiments and its exercise checkers."""
import pytest
import torch
import torch.nn.functional as TF

import normkit as nk
from normkit.lessons import l03_batchnorm_math as lesson
from tests.conftest import assert_checker_verdicts, assert_close, randn


# ----------------------------------------------------------------------------- batch norm, step by step
def test_batch_norm_steps_matches_torch_forward_and_backward():
    x = randn(9, 4, offset=2.0, scale=3.0, seed=1)
    gamma, beta = randn(4, seed=2) + 1.5, randn(4, seed=3)
    s = lesson.batch_norm_steps(x, gamma, beta, eps=1e-5)
    assert_close(s.y, TF.batch_norm(x, None, None, gamma, beta, training=True, eps=1e-5))
    assert_close(s.mu, x.mean(0))
    assert_close(s.var, x.var(0, correction=0))
    xl, dout = x.clone().requires_grad_(True), randn(9, 4, seed=4)
    lesson.batch_norm_steps(xl, gamma, beta).y.backward(dout)
    _, cache = nk.manual.batch_norm_forward(x, gamma, beta)
    assert_close(nk.manual.batch_norm_backward(dout, cache)[0], xl.grad)


def test_batch_norm_steps_defaults_and_bad_input():
    s = lesson.batch_norm_steps(randn(5, 3, seed=5))
    assert_close(s.y, s.xhat)
    with pytest.raises(ValueError, match="x: expected an \\(m, D\\) mini-batch"):
        lesson.batch_norm_steps(torch.randn(1, 3))
    with pytest.raises(ValueError, match="eps"):
        lesson.batch_norm_steps(torch.randn(4, 3), eps=-1.0)


def test_hidden_preactivations_is_a_seeded_linear_layer():
    x = torch.rand(10, 64)
    z = lesson.hidden_preactivations(x, n_units=3, seed=7)
    torch.manual_seed(7)
    layer = torch.nn.Linear(64, 3)
    assert z.shape == (10, 3) and not z.requires_grad
    assert_close(z, layer(x))


def test_activation_regions():
    linear, zero = lesson.activation_regions(torch.tensor([-2.0, -0.5, 0.5, 3.0]))
    assert (linear, zero) == (0.5, 0.5)
    linear, zero = lesson.activation_regions(torch.randn(200_000, generator=torch.Generator().manual_seed(0)))
    assert abs(linear - 0.6827) < 0.005 and abs(zero - 0.5) < 0.005   # N(0, 1): P(|y| < 1), P(y < 0)


def test_skewness_and_kurtosis():
    g = torch.Generator().manual_seed(3)
    gauss = torch.randn(200_000, 2, generator=g, dtype=torch.float64)
    assert torch.allclose(lesson.skewness(gauss), torch.zeros(2, dtype=torch.float64), atol=0.03)
    assert torch.allclose(lesson.kurtosis(gauss), torch.full((2,), 3.0, dtype=torch.float64), atol=0.05)
    uniform = torch.rand(200_000, generator=g, dtype=torch.float64)
    assert abs(lesson.kurtosis(uniform).item() - 1.8) < 0.02                   # 9/5
    expo = torch.empty(200_000, dtype=torch.float64).exponential_(generator=g)
    assert abs(lesson.skewness(expo).item() - 2.0) < 0.1                        # the exponential: 2 and 9
    x = torch.tensor([1.0, 2.0, 4.0, 10.0])
    assert lesson.kurtosis(3 * x - 7).item() == pytest.approx(lesson.kurtosis(x).item())   # affine-invariant


def test_active_and_dead_share():
    z = torch.tensor([[1.0, -1.0, 0.0], [-2.0, -0.5, 3.0], [0.5, -3.0, -1.0]])
    assert torch.allclose(lesson.active_share(z), torch.tensor([2 / 3, 0.0, 1 / 3], dtype=torch.float64))
    assert lesson.dead_share(z) == pytest.approx(1 / 3)


def test_dead_unit_experiment_gradients_vanish_exactly_on_dead_units():
    x, y = torch.rand(50, 8, generator=torch.Generator().manual_seed(1)), torch.arange(50) % 3
    out = lesson.dead_unit_experiment(x, y, bias_shift=-1.0, n_units=20)
    assert set(out) == {"default init", "shifted", "shifted + BN"}
    for active, grad in out.values():
        assert active.shape == grad.shape == (20,)
        assert torch.equal(active == 0, grad == 0)          # zero gradient exactly where the unit is dead


def test_variance_spread_matches_sampling():
    """The formula for sd(σ²_B)/σ², checked by sampling from a Gaussian (κ = 3) and a Laplace (κ = 6)."""
    g = torch.Generator().manual_seed(0)
    gauss = torch.randn(20000, 16, generator=g, dtype=torch.float64)
    u = torch.rand(20000, 16, generator=g, dtype=torch.float64) - 0.5
    laplace = -u.sign() * torch.log1p(-2 * u.abs())
    for draws, kappa in ((gauss, 3.0), (laplace, 6.0)):
        for b in (2, 4, 16):
            measured = draws[:, :b].var(1, correction=0).std() / draws.var()
            assert abs(measured / lesson.variance_spread(kappa, b) - 1) < 0.06, (kappa, b)
    assert lesson.variance_spread(3.0, 2).item() == pytest.approx(2 ** -0.5)      # √(2(B−1))/B at B = 2
    assert lesson.variance_spread(3.0, 10_000).item() == pytest.approx((2 / 10_000) ** 0.5, rel=1e-3)


def test_batch_stat_spread_shrinks_like_one_over_sqrt_b():
    pop = torch.randn(4000, generator=torch.Generator().manual_seed(1))
    spread = lesson.batch_stat_spread(pop, (4, 64), n_batches=400, seed=0)
    means4, vars4 = spread[4]
    assert means4.shape == vars4.shape == (400,)
    ratio = spread[4][0].std() / spread[64][0].std()
    assert 3.0 < ratio < 5.3                       # √(64/4) = 4
    with pytest.raises(ValueError, match="batch_sizes"):
        lesson.batch_stat_spread(pop, (1, 4))


# ----------------------------------------------------------------------------- checkers
def _bn_train(x, gamma, beta, eps=1e-5):
    dims, shape = (0, 2, 3), (1, -1, 1, 1)
    mean, var = x.mean(dims, keepdim=True), x.var(dims, correction=0, keepdim=True)
    return gamma.view(shape) * (x - mean) / torch.sqrt(var + eps) + beta.view(shape)


def _bn_backward(dout, x, gamma, eps=1e-5):
    dims = (0, 2, 3)
    s = 1 / torch.sqrt(x.var(dims, correction=0, keepdim=True) + eps)
    xhat, h = (x - x.mean(dims, keepdim=True)) * s, dout * gamma.view(1, -1, 1, 1)
    return s * (h - h.mean(dims, keepdim=True) - xhat * (h * xhat).mean(dims, keepdim=True))


def _bn_backward_over_n_only(dout, x, gamma, eps=1e-5):     # the 2-D formula applied over N alone: wrong
    s = 1 / torch.sqrt(x.var(0, correction=0) + eps)
    xhat, h = (x - x.mean(0)) * s, dout * gamma.view(1, -1, 1, 1)
    return s * (h - h.mean(0) - xhat * (h * xhat).mean(0))


RIGHT_AND_WRONG = [
    (lesson.check_batch_norm_train, _bn_train,
     lambda x, g, b, eps=1e-5: g.view(1, -1, 1, 1) * (x - x.mean(0)) / torch.sqrt(x.var(0, correction=0) + eps)
     + b.view(1, -1, 1, 1)),                                               # statistics over N only
    (lesson.check_identity_params,
     lambda x, eps: ((x.var(0, correction=0) + eps).sqrt(), x.mean(0)),
     lambda x, eps: (x.std(0), x.mean(0))),                               # unbiased and no ε: wrong
    (lesson.check_batch_norm_backward, _bn_backward, _bn_backward_over_n_only),
]


@pytest.mark.parametrize("checker,right,wrong", RIGHT_AND_WRONG, ids=lambda v: getattr(v, "__name__", ""))
def test_checker_accepts_the_right_answer_and_rejects_a_wrong_one(checker, right, wrong, capsys):
    assert_checker_verdicts(checker, right, wrong, capsys)


def test_checker_reports_an_unanswered_exercise(capsys):
    """A stub that returns None gets a ✗ line, never a traceback."""
    assert not lesson.check_batch_norm_train(lambda x, gamma, beta, eps: None)
    out = capsys.readouterr().out
    assert "✗ batch_norm_train (N, C, H, W): expected a tensor of shape (6, 3, 4, 5), got None" in out
    assert not lesson.check_identity_params(lambda x, eps: None)
    assert "✗ identity_params (γ then β): expected a tensor of shape (10,), got None" in capsys.readouterr().out
    assert not lesson.check_batch_norm_backward(lambda dout, x, gamma, eps: None)
    assert "✗ batch_norm_backward (N, C, H, W): expected a tensor of shape (6, 3, 4, 5), got None" \
        in capsys.readouterr().out
    assert not lesson.check_identity_params(lambda x, eps: x.std(0))        # not a (γ, β) pair
    assert "✗ identity_params (γ then β): your function raised ValueError" in capsys.readouterr().out


# ----------------------------------------------------------------------------- claims of notebook 03
@pytest.fixture(scope="module")
def digits_units():
    data = nk.data.digits()
    return data, lesson.hidden_preactivations(data.x_train, n_units=4)


def test_claim_standardizing_fixes_two_moments_not_the_shape(digits_units):
    """'Over all 1,300 training digits each unit's skewness and kurtosis are the same before and after
    standardizing; 53 % of unit 0's x̂ lies below 0, not 50 %; about two thirds in the sigmoid's linear region.'"""
    _, z_all = digits_units
    xhat = lesson.batch_norm_steps(z_all).xhat
    assert torch.allclose(lesson.skewness(xhat), lesson.skewness(z_all), atol=1e-3)
    assert torch.allclose(lesson.kurtosis(xhat), lesson.kurtosis(z_all), atol=1e-3)
    assert (lesson.kurtosis(z_all) - 3).abs().max() > 0.3                 # not Gaussian
    linear, zero = lesson.activation_regions(xhat[:, 0])
    assert 0.515 < zero < 0.55 and 0.62 < linear < 0.68


def test_claim_dead_units_without_batch_norm_none_with_it(digits_units):
    """'Default init: half of all outputs 0, only 2 of 100 units dead. Biases shifted by −0.5: 59 dead, their
    weight gradient exactly 0. Shifted + BN: every unit outputs > 0 on 40–55 % of the digits, none dead.'"""
    data, _ = digits_units
    out = lesson.dead_unit_experiment(data.x_train, data.y_train, bias_shift=-0.5)
    (a0, _), (a1, g1), (a2, g2) = out["default init"], out["shifted"], out["shifted + BN"]
    assert 0.45 < 1 - a0.mean() < 0.56 and (a0 == 0).sum() <= 5
    assert 50 <= (a1 == 0).sum() <= 68 and torch.equal(g1 == 0, a1 == 0)
    assert (a2 == 0).sum() == 0 and a2.min() > 0.35 and a2.max() < 0.6 and (g2 == 0).sum() == 0
    assert 0.45 < 1 - a2.mean() < 0.55


def test_claim_variance_spread_follows_the_kurtosis(digits_units):
    """'Unit 0 has κ ≈ 2.34, so √((κ−1)/B) ≈ 1.16/√B lies near 1/√B; Gaussian data would give √(2/B).
    At B = 2 the exact formula predicts 0.65, measured 0.65; √((κ−1)/B) would give 0.82.
    sd(μ_B) follows σ/√B.'"""
    _, z_all = digits_units
    pop = z_all[:, 0]
    kappa = lesson.kurtosis(pop).item()
    assert 2.2 < kappa < 2.5
    b_values = (2, 4, 8, 16, 32, 64, 128)
    spread = lesson.batch_stat_spread(pop, b_values, n_batches=500)
    var = pop.var(correction=0)
    for b in b_values:
        sd_var = (spread[b][1].std() / var).item()
        sd_mu = (spread[b][0].std() / var.sqrt()).item()
        assert 0.85 < sd_var / lesson.variance_spread(kappa, b).item() < 1.12, b
        assert 0.85 < sd_mu * b ** 0.5 < 1.12, b
        if b >= 8:      # the Gaussian prediction would be about 20 % too high for this unit
            assert sd_var < 0.92 * lesson.variance_spread(3.0, b).item(), b
    assert 0.6 < (spread[2][1].std() / var).item() < 0.7 and 0.8 < ((kappa - 1) / 2) ** 0.5 < 0.84
    for b in (2, 4):        # σ²_B is biased low by (B − 1)/B: about half at B = 2
        assert abs((spread[b][1].mean() / var).item() - (b - 1) / b) < 0.05
    big = lesson.batch_stat_spread(pop, (256,), n_batches=500)[256]      # without replacement from 1,300:
    assert (big[0].std() / var.sqrt()).item() < 256 ** -0.5                 # a little under the lines
    assert (big[1].std() / var).item() < lesson.variance_spread(kappa, 256).item()
