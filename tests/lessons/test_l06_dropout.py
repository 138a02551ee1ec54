"""normkit.lessons.l06_dropout (notebook 06): its experiments, its claims and its exercise checkers."""
import functools

import pytest
import torch
from sklearn.metrics import roc_auc_score

import normkit as nk
from normkit.lessons import l06_dropout as lesson


# ------------------------------------------------------------------------------------ dropout
def test_dropout_train_variance_matches_torch_dropout():
    g = torch.Generator().manual_seed(123)       # not the global seed: the mask must not reuse x's stream
    x = torch.rand(400_000, generator=g, dtype=torch.float64) * 2      # mean 1, var 1/3
    out = torch.nn.functional.dropout(x, 0.3, training=True)
    predicted = lesson.dropout_train_variance(x.mean(), x.var(), 0.3)
    assert abs(out.var().item() - predicted.item()) / predicted.item() < 0.01


def test_dropout_train_variance_zero_mean_is_one_over_keep():
    assert lesson.dropout_train_variance(0.0, 2.0, 0.5) == pytest.approx(4.0)
    with pytest.raises(ValueError, match="p=1"):
        lesson.dropout_train_variance(0.0, 1.0, 1.0)


def test_variance_shift_follows_formula_and_vanishes_without_dropout():
    x = torch.relu(torch.randn(2000, 16, generator=torch.Generator().manual_seed(1)) + 0.3)
    r = lesson.variance_shift(x, 0.5, steps=200)
    assert r["shift"] == pytest.approx(r["predicted_shift"], rel=0.05)
    assert r["predicted_out_var"] == pytest.approx(r["eval_out_var"].mean().item(), rel=0.05)
    r0 = lesson.variance_shift(x, 0.0, steps=200)
    assert r0["shift"] == pytest.approx(1.0, abs=0.05)
    with pytest.raises(ValueError, match="x: expected"):
        lesson.variance_shift(x[0], 0.5)


def _bn_dropout_model():
    torch.manual_seed(0)
    return nk.models.mlp([8, 16, 16, 3], norm="batch", dropout=0.5)


def test_bn_input_variance_and_recalibrate():
    model = _bn_dropout_model()
    x = torch.randn(256, 8, generator=torch.Generator().manual_seed(2))
    model.train()
    with torch.no_grad():
        for i in range(50):
            model(x[torch.randint(256, (32,), generator=torch.Generator().manual_seed(i))])
    bn = model[5]
    running, real = lesson.bn_input_variance(model, bn, x)
    assert model.training                         # mode restored
    assert (running / real).mean() > 1.1          # dropout before it inflated the running variance
    lesson.recalibrate_bn(model, x, batch_size=32)
    assert not model.training
    running, real = lesson.bn_input_variance(model, bn, x)
    assert (running / real).mean().item() == pytest.approx(1.0, abs=0.1)
    assert bn.momentum == 0.1                     # restored


def test_mc_dropout_keeps_bn_in_eval_and_samples_differ():
    model = _bn_dropout_model()
    x = torch.randn(10, 8)
    probs = lesson.mc_dropout(model, x, samples=7, seed=3)
    assert probs.shape == (7, 10, 3)
    torch.testing.assert_close(probs.sum(-1), torch.ones(7, 10))
    assert (probs[0] - probs[1]).abs().max() > 0  # dropout active
    assert not model.training and all(not m.training for m in model.modules())
    torch.testing.assert_close(lesson.mc_dropout(model, x, samples=7, seed=3), probs)   # seeded
    with pytest.raises(ValueError, match="samples"):
        lesson.mc_dropout(model, x, samples=0)


def test_predictive_spread_against_definitions():
    probs = torch.softmax(torch.randn(5, 4, 3, dtype=torch.float64), -1)
    s = lesson.predictive_spread(probs)
    mean = probs.mean(0)
    h = -(mean * mean.log()).sum(-1)
    each = -(probs * probs.log()).sum(-1).mean(0)
    torch.testing.assert_close(s["entropy"], h)
    torch.testing.assert_close(s["mutual_info"], h - each)
    top = mean.argmax(-1)
    torch.testing.assert_close(s["top_std"], probs[:, torch.arange(4), top].std(0))
    same = lesson.predictive_spread(probs[:1].expand(5, 4, 3))
    torch.testing.assert_close(same["mutual_info"], torch.zeros(4, dtype=torch.float64))
    with pytest.raises(ValueError, match="probs"):
        lesson.predictive_spread(mean)


def test_auroc_matches_sklearn():
    g = torch.Generator().manual_seed(4)
    a, b = torch.randn(50, generator=g), torch.randn(60, generator=g) + 0.7
    a[:5] = b[:5]                                # some ties
    expected = roc_auc_score([0] * 50 + [1] * 60, torch.cat([a, b]).numpy())
    assert lesson.auroc(a, b) == pytest.approx(expected)


def test_compare_dropout_runs_both():
    data = nk.data.digits(n_train=64, test_size=100)
    runs = lesson.compare_dropout(data, p=0.5, sizes=(64, 16, 10), steps=4, batch_size=16, eval_every=2)
    assert set(runs) == {0.0, 0.5}
    assert len(runs[0.5].test_acc) == 3
    assert any(isinstance(m, nk.Dropout) for m in runs[0.5].model.modules())
    assert not any(isinstance(m, nk.Dropout) for m in runs[0.0].model.modules())


def test_dropout_moments_keep_the_mean_and_follow_the_variance_formula():
    x = torch.rand(100_000, generator=torch.Generator().manual_seed(9), dtype=torch.float64) + 0.5
    mean_ratio, var_ratio = lesson.dropout_moments(x, [0.0, 0.5])
    assert mean_ratio[0] == 1.0 and var_ratio[0] == 1.0
    assert mean_ratio[1] == pytest.approx(1.0, abs=0.01)
    expected = lesson.dropout_train_variance(x.mean(), x.var(), 0.5) / x.var()
    assert var_ratio[1] == pytest.approx(expected.item(), rel=0.02)


# ------------------------------------------------------------------------------------ checkers
def _dropout_ref(x, p):
    return x * (torch.rand_like(x) >= p) / (1 - p)


def _entropy_ref(probs):
    m = probs.mean(0)
    return -(m * m.log()).sum(-1)


@pytest.mark.parametrize("checker, good, bad", [
    (lesson.check_dropout, _dropout_ref, lambda x, p: x),
    (lesson.check_dropout, _dropout_ref, lambda x, p: x * (torch.rand_like(x) >= p)),      # forgot the scale
    (lesson.check_dropout_variance, lambda c, v, p: (c * c + v) / (1 - p) - c * c, lambda c, v, p: v / (1 - p)),
    (lesson.check_predictive_entropy, _entropy_ref, lambda probs: _entropy_ref(probs[:1])),
])
def test_checkers_pass_and_fail(checker, good, bad, capsys):
    assert checker(good)
    assert capsys.readouterr().out.startswith("✓")
    assert not checker(bad)
    assert capsys.readouterr().out.startswith("✗")


def test_checker_reports_an_exception(capsys):
    def broken(x, p):
        raise RuntimeError("oops")
    assert not lesson.check_dropout(broken)
    assert "raised RuntimeError: oops" in capsys.readouterr().out


# ----------------------------------------------------------------------------- claims of notebook 06
# Notebook scale, bands that hold on every kernel path we ran; a broken dropout or BN misses them.
@functools.lru_cache(maxsize=None)
def _clean_dropout_model():
    """Notebook 06's MLP with dropout 0.5, trained on 400 clean digits; its first hidden activations."""
    clean = nk.data.digits(n_train=400)
    torch.manual_seed(0)
    model = nk.models.mlp([64, 128, 128, 10], dropout=0.5)
    hist = nk.train.fit(model, clean, steps=400, batch_size=64, lr=3e-3, optimizer="adam", eval_every=400)
    model.eval()
    return clean, model, hist, model[:2](clean.x_test).detach()


def test_claim_dropout_resists_label_noise():
    """'Without dropout the training accuracy on the noisy labels climbs far above 0.6 and the test
    accuracy, after an early peak, falls; with dropout the test accuracy stays high.'"""
    runs = lesson.compare_dropout(nk.data.digits(n_train=400, label_noise=0.4), p=0.5, steps=500)
    plain, drop = runs[0.0], runs[0.5]
    assert plain.train_acc[-1] > 0.95 and max(plain.test_acc) - plain.final_test_acc > 0.2
    assert drop.train_acc[-1] < 0.8 and drop.final_test_acc > plain.final_test_acc + 0.15
    assert drop.final_test_acc > 0.75                                      # 0.81 measured


def test_claim_mc_dropout_flags_unfamiliar_inputs_better_than_one_pass():
    clean, model, hist, _ = _clean_dropout_model()
    assert 0.92 < hist.final_test_acc < 0.97
    g = torch.Generator().manual_seed(0)
    x_in = clean.x_test
    for x_out in (x_in[:, torch.randperm(64, generator=g)], torch.rand(x_in.shape, generator=g)):
        mi_in, mi_out = (lesson.predictive_spread(lesson.mc_dropout(model, v, samples=50))["mutual_info"]
                         for v in (x_in, x_out))
        with torch.no_grad():
            one_in, one_out = (1 - torch.softmax(model(v), 1).max(1).values for v in (x_in, x_out))
        mc, one = lesson.auroc(mi_in, mi_out), lesson.auroc(one_in, one_out)
        assert mc > 0.9 and mc > one + 0.03                                 # 0.94–0.95 vs 0.80–0.88


def test_claim_variance_shift_follows_li_et_al():
    """Dropout before BN: running var / real var as Li et al.'s formula, above 1/(1 − p) for ReLU units."""
    *_, a = _clean_dropout_model()
    for p in (0.1, 0.5, 0.8):
        r = lesson.variance_shift(a, p)
        assert r["shift"] == pytest.approx(r["predicted_shift"], rel=0.03)
        assert r["shift"] > 1 / (1 - p) and r["eval_out_var"].mean() < 1


def test_claim_recalibrating_bn_removes_the_shift_in_a_trained_net():
    clean = nk.data.digits(n_train=400)
    torch.manual_seed(0)
    model = nk.models.mlp([64, 128, 128, 10], norm="batch", dropout=0.5)
    nk.train.fit(model, clean, steps=400, batch_size=64, lr=3e-3, optimizer="adam", eval_every=400)
    bn2 = model[5]
    before = lesson.bn_input_variance(model, bn2, clean.x_test)
    acc_before = nk.train.accuracy(model, clean.x_test, clean.y_test)
    lesson.recalibrate_bn(model, clean.x_train)
    after = lesson.bn_input_variance(model, bn2, clean.x_test)
    acc_after = nk.train.accuracy(model, clean.x_test, clean.y_test)
    shift_before, shift_after = ((run / real).mean().item() for run, real in (before, after))
    assert 1.1 < shift_before < 1.5 and abs(shift_after - 1) < 0.06 and abs(acc_after - acc_before) < 0.02
