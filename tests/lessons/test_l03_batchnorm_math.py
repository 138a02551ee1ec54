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
    linear, dead = lesson.activation_regions(torch.tensor([-2.0, -0.5, 0.5, 3.0]))
    assert (linear, dead) == (0.5, 0.5)
    linear, dead = lesson.activation_regions(torch.randn(200_000, generator=torch.Generator().manual_seed(0)))
    assert abs(linear - 0.6827) < 0.005 and abs(dead - 0.5) < 0.005   # N(0, 1): P(|y| < 1), P(y < 0)


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
    return gamma * (x - x.mean(0)) / torch.sqrt(x.var(0, correction=0) + eps) + beta


def _bn_backward(dout, x, gamma, eps=1e-5):
    s = 1 / torch.sqrt(x.var(0, correction=0) + eps)
    xhat, h = (x - x.mean(0)) * s, dout * gamma
    return s * (h - h.mean(0) - xhat * (h * xhat).mean(0))


RIGHT_AND_WRONG = [
    (lesson.check_batch_norm_train, _bn_train, lambda x, g, b, eps=1e-5: _bn_train(x, g, b, eps) * 1.01),
    (lesson.check_identity_params,
     lambda x, eps: ((x.var(0, correction=0) + eps).sqrt(), x.mean(0)),
     lambda x, eps: (x.std(0), x.mean(0))),                               # unbiased and no ε: wrong
    (lesson.check_batch_norm_backward, _bn_backward, lambda dout, x, gamma, eps=1e-5: dout * gamma),
]


@pytest.mark.parametrize("checker,right,wrong", RIGHT_AND_WRONG, ids=lambda v: getattr(v, "__name__", ""))
def test_checker_accepts_the_right_answer_and_rejects_a_wrong_one(checker, right, wrong, capsys):
    assert_checker_verdicts(checker, right, wrong, capsys)


def test_checker_reports_an_unanswered_exercise(capsys):
    """A stub that returns None gets a ✗ line, never a traceback."""
    assert not lesson.check_batch_norm_train(lambda x, gamma, beta, eps: None)
    assert "✗ batch_norm_train: expected a tensor of shape (16, 5), got None" in capsys.readouterr().out
    assert not lesson.check_identity_params(lambda x, eps: None)
    assert "✗ identity_params (γ then β): your function raised TypeError" in capsys.readouterr().out
