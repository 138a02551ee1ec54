"""normkit.lessons.l04_train_vs_inference (notebook 04): its experiments, its claims and its exercise checkers."""
import itertools
import math

import pytest
import torch

import normkit as nk
from normkit.lessons import l04_train_vs_inference as lesson
from tests.conftest import assert_checker_verdicts, assert_close, randn


# ----------------------------------------------------------------------------- running statistics
@pytest.mark.parametrize("momentum", [0.1, 0.5, None])
def test_running_stats_trace_matches_torch_batchnorm(momentum):
    pop = randn(50, 2, seed=8, offset=3.0)
    trace = lesson.running_stats_trace(pop, momentum=momentum, batch_size=8, steps=12, seed=3)
    ref = torch.nn.BatchNorm1d(2, momentum=momentum, affine=False, dtype=torch.float64)
    order = nk.train.batches(50, 8, torch.Generator().manual_seed(3))
    for step, idx in enumerate(itertools.islice(order, 12), start=1):
        ref(pop[idx])
        assert_close(trace.running_mean[step], ref.running_mean)
        assert_close(trace.running_var[step], ref.running_var)
        assert_close(trace.batch_var[step - 1], pop[idx].var(0))
        assert_close(trace.batch_var_biased[step - 1], pop[idx].var(0, correction=0))
    assert trace.running_mean.shape == (13, 2) and trace.batch_mean.shape == (12, 2)


def test_running_stats_trace_bad_batch_size():
    with pytest.raises(ValueError, match="batch_size=1"):
        lesson.running_stats_trace(torch.randn(20), batch_size=1)


def test_keras_convention_is_pytorch_with_one_minus_momentum():
    pop = randn(64, seed=9, offset=5.0)
    trace = lesson.running_stats_trace(pop, momentum=0.1, batch_size=16, steps=20)
    assert_close(lesson.keras_moving_average(trace.batch_mean, 0.9, 0.0), trace.running_mean)
    assert_close(lesson.keras_moving_average(trace.batch_var, 0.9, 1.0), trace.running_var)
    with pytest.raises(ValueError, match="momentum"):
        lesson.keras_moving_average(trace.batch_mean, 1.5)


def test_ema_steps_to_forget():
    assert lesson.ema_steps_to_forget(0.1) == 44          # 0.9**44 < 0.01 <= 0.9**43
    assert 0.9 ** 44 < 0.01 <= 0.9 ** 43
    assert lesson.ema_steps_to_forget(0.01) == 459
    assert lesson.ema_steps_to_forget(1.0) == 1 and lesson.ema_steps_to_forget(0.0) == math.inf


def test_prediction_by_company_eval_is_batch_independent_and_model_untouched():
    torch.manual_seed(0)
    model = nk.models.mlp([6, 8, 3], norm="batch")
    model.train()
    model(torch.randn(16, 6))                          # running statistics away from (0, 1)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x0 = torch.randn(6)
    companions = [torch.randn(5, 6), torch.randn(5, 6) + 3, torch.randn(1, 6)]
    p_train, p_eval = lesson.prediction_by_company(model, x0, 1, companions)
    assert len(p_train) == len(p_eval) == 3
    assert max(p_eval) - min(p_eval) < 1e-6
    assert max(p_train) - min(p_train) > 1e-3
    assert model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_placement_experiment_runs_both_placements():
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(60, 64, generator=g), torch.randint(0, 10, (60,), generator=g)
    data = nk.data.Split(x[:40], y[:40], x[40:], y[40:])
    out = lesson.placement_experiment(data, seeds=(0, 1), sizes=(64, 8, 10), steps=3, batch_size=8)
    assert set(out) == {"before", "after"}
    assert all(len(v) == 2 and all(0.0 <= a <= 1.0 for a in v) for v in out.values())


# ----------------------------------------------------------------------------- checkers
def _bn_train(x, gamma, beta, eps=1e-5):
    return gamma * (x - x.mean(0)) / torch.sqrt(x.var(0, correction=0) + eps) + beta


RIGHT_AND_WRONG = [
    (lesson.check_running_mean, lambda rm, b, m: (1 - m) * rm + m * b.mean(0),
     lambda rm, b, m: m * rm + (1 - m) * b.mean(0)),                      # Keras' m with torch's value
    (lesson.check_running_var, lambda rv, b, m: (1 - m) * rv + m * b.var(0),
     lambda rv, b, m: (1 - m) * rv + m * b.var(0, correction=0)),         # biased: wrong
    (lesson.check_bn_inference, lambda x, rm, rv, g, b, eps=1e-5: g * (x - rm) / torch.sqrt(rv + eps) + b,
     lambda x, rm, rv, g, b, eps=1e-5: _bn_train(x, g, b, eps)),          # batch statistics: wrong
]


@pytest.mark.parametrize("checker,right,wrong", RIGHT_AND_WRONG, ids=lambda v: getattr(v, "__name__", ""))
def test_checker_accepts_the_right_answer_and_rejects_a_wrong_one(checker, right, wrong, capsys):
    assert_checker_verdicts(checker, right, wrong, capsys)


def test_checker_reports_an_exception_and_a_wrong_shape(capsys):
    def broken(*args):
        raise RuntimeError("not yet")
    assert not lesson.check_running_mean(broken)
    assert "✗ running_mean: your function raised RuntimeError: not yet" in capsys.readouterr().out
    assert not lesson.check_running_mean(lambda rm, b, m: b)
    assert "expected a tensor of shape (5,)" in capsys.readouterr().out


# ----------------------------------------------------------------------------- claims of notebook 04
@pytest.fixture(scope="module")
def trained_bn_mlp():
    """Notebook 04's forgetting-eval() model: 150 SGD steps of a 64-32-10 MLP with BN."""
    data = nk.data.digits()
    torch.manual_seed(0)
    model = nk.models.mlp([64, 32, 10], norm="batch")
    hist = nk.train.fit(model, data, steps=150, batch_size=32, lr=0.1, eval_every=150)
    return data, model, hist


def test_claim_forgetting_eval_makes_a_prediction_depend_on_the_batch(trained_bn_mlp):
    """'In eval mode the answer is the same in every batch (about 0.97); in training mode among 31
    other 6s it falls to about 0.35, in a batch of two to about 0.14, among copies of itself lower.'"""
    data, model, hist = trained_bn_mlp
    assert 0.93 < hist.final_test_acc < 0.98
    x0, label = data.x_test[0], data.y_test[0].item()
    company = [data.x_test[1:32], data.x_test[data.y_test == label][1:32],
               data.x_test[data.y_test == (label + 1) % 10][:31], data.x_test[1:2], x0.repeat(31, 1)]
    p_train, p_eval = lesson.prediction_by_company(model, x0, label, company)
    assert max(p_eval) - min(p_eval) < 1e-6 and 0.93 < p_eval[0] < 0.99
    assert p_train[0] > 0.85 and 0.2 < p_train[1] < 0.5 and p_train[3] < 0.3 and p_train[4] < 0.2


def test_claim_bn_placement_is_within_the_noise_of_five_seeds():
    """'after − before is about −0.5 to −0.8 points, standard error about 0.5 points: less than two
    standard errors from zero; a benchmark-sized gain for "after" (+2.5 points) would have shown.'"""
    acc = lesson.placement_experiment(nk.data.digits(), seeds=(0, 1, 2, 3, 4), sizes=(64, 32, 32, 10),
                                      steps=100, batch_size=32, lr=0.1)
    before, after = torch.tensor(acc["before"]), torch.tensor(acc["after"])
    assert not torch.equal(before, after)                           # the placements really differ
    diff = after - before
    se = diff.std() / 5 ** 0.5
    assert 0.93 < before.mean() < 0.98 and 0.93 < after.mean() < 0.98
    assert -0.012 < diff.mean() < 0.0 and abs(diff.mean()) < 2 * se and 0.002 < se < 0.01
