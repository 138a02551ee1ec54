"""normkit.lessons.l06_dropout (notebook 06): its experiments, its claims and its exercise checkers."""
import functools

import pytest
import torch
from sklearn.metrics import roc_auc_score

import normkit as nk
from normkit.lessons import l06_dropout as lesson
from tests.conftest import assert_checker_verdicts, assert_stub_is_a_cross


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


def _tiny_sets():
    clean = nk.data.digits(n_train=96, test_size=100)
    return {"clean": clean, "noisy": nk.data.digits(n_train=96, test_size=100, label_noise=0.4)}


def test_stacked_training_equals_training_each_network_alone():
    """Without dropout's randomness (p = 0) every stacked network learns what it learns alone."""
    sets = _tiny_sets()
    grid = lesson.train_grid(sets, p=0.0, sizes=(64, 16, 16, 10), seeds=(0, 1), steps=6, batch_size=16,
                             lr=1e-2, eval_every=3)
    assert grid.test_acc.shape == (4, 2, 2, 3) and grid.eval_steps == [0, 3, 6]
    for variant, norm in (("neither", None), ("batch norm", "batch")):
        for name, data in sets.items():
            torch.manual_seed(1)
            alone = nk.models.mlp([64, 16, 16, 10], norm=norm)
            nk.train.fit(alone, data, steps=6, batch_size=16, lr=1e-2, optimizer="adam", eval_every=None)
            alone.eval()
            stacked = grid.model(variant, name, seed=1)
            for a, b in zip(alone.state_dict().values(), stacked.state_dict().values()):
                torch.testing.assert_close(a.float(), b.float(), atol=1e-5, rtol=1e-4)
            acc = nk.train.accuracy(alone, data.x_test, data.y_test)
            assert grid.final()[grid.variants.index(variant), grid.datasets.index(name), 1] == pytest.approx(acc)


def test_grid_models_are_the_stacked_ones_with_dropout_and_batch_norm():
    grid = lesson.train_grid(_tiny_sets(), p=0.5, sizes=(64, 16, 16, 10), seeds=(0,), steps=4, batch_size=16)
    x = torch.rand(7, 64)
    with torch.no_grad():
        out = grid.net(x)
        for variant, (norm, drop) in lesson.VARIANTS.items():
            m = grid.model(variant, "noisy")
            assert not m.training
            assert any(isinstance(layer, nk.Dropout) for layer in m) == drop
            assert any(isinstance(layer, nk.BatchNorm1d) for layer in m) == (norm == "batch")
            torch.testing.assert_close(m(x), out[:, :, grid.index(variant, "noisy", 0)], atol=1e-5, rtol=0)
    assert "batch norm + dropout" in grid.table() and grid.summary("dropout", "clean")["test"] > 0


def test_train_grid_wants_the_same_images():
    with pytest.raises(ValueError, match="same images"):
        lesson.train_grid({"a": nk.data.digits(n_train=96), "b": nk.data.digits(n_train=96, seed=1)}, steps=2)


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


def _variation_ratio_ref(probs):
    votes = torch.nn.functional.one_hot(probs.argmax(-1), probs.shape[-1]).sum(0)
    return 1 - votes.max(-1).values / len(probs)


@pytest.mark.parametrize("checker, good, bad", [
    (lesson.check_dropout, _dropout_ref, lambda x, p: x),
    (lesson.check_dropout, _dropout_ref, lambda x, p: x * (torch.rand_like(x) >= p)),      # forgot the scale
    (lesson.check_dropout_variance, lambda c, v, p: (c * c + v) / (1 - p) - c * c, lambda c, v, p: v / (1 - p)),
    (lesson.check_variation_ratio, _variation_ratio_ref, lambda probs: 1 - probs.mean(0).max(-1).values),
    (lesson.check_variation_ratio, _variation_ratio_ref,                 # votes for the mean's top class
     lambda probs: 1 - (probs.argmax(-1) == probs.mean(0).argmax(-1)).double().mean(0)),
])
def test_checkers_pass_and_fail(checker, good, bad, capsys):
    assert_checker_verdicts(checker, good, bad, capsys)


@pytest.mark.parametrize("checker", [lesson.check_dropout, lesson.check_dropout_variance,
                                     lesson.check_variation_ratio])
def test_checkers_turn_the_stub_into_a_cross(checker, capsys):
    assert_stub_is_a_cross(checker, capsys)


def test_checker_reports_an_exception(capsys):
    def broken(x, p):
        raise RuntimeError("oops")
    assert not lesson.check_dropout(broken)
    assert "raised RuntimeError: oops" in capsys.readouterr().out


# ----------------------------------------------------------------------------- claims of notebook 06
# Notebook scale, bands that hold on every kernel path we ran; a broken dropout or BN misses them.
CLEAN, NOISY = "clean labels", "40 % wrong labels"


@functools.lru_cache(maxsize=None)
def _grid():
    """Notebook 06's 24 networks, the dropout network on clean labels and its first hidden activations."""
    clean = nk.data.digits(n_train=400)
    grid = lesson.train_grid({CLEAN: clean, NOISY: nk.data.digits(n_train=400, label_noise=0.4)})
    model = grid.model("dropout", CLEAN, seed=0)
    return clean, grid, model, model[:2](clean.x_test).detach()


def test_claim_dropout_resists_label_noise():
    """'Without dropout the training accuracy on the noisy labels climbs far above 0.6 and the test
    accuracy, after an early peak, falls; with dropout the training accuracy stays near 0.6 and the
    test accuracy stays high; it learns more slowly at the start.' (means of three seeds)"""
    _, grid, *_ = _grid()
    plain, drop = grid.summary("neither", NOISY), grid.summary("dropout", NOISY)
    assert plain["train"] > 0.75 and plain["best_test"] - plain["test"] > 0.12     # 0.84; 0.83 → 0.62
    assert drop["train"] < 0.68 and drop["test"] > plain["test"] + 0.12            # 0.60; 0.81
    assert drop["test"] > 0.75
    d, early = grid.datasets.index(NOISY), grid.eval_steps.index(25)
    curves = {v: grid.test_acc[grid.variants.index(v), d].mean(0) for v in ("neither", "dropout")}
    assert curves["dropout"][early] < curves["neither"][early] - 0.03              # 0.59 vs 0.69


def test_claim_batch_norm_vs_dropout_depends_on_the_labels():
    """'Clean labels: batch norm best, a few points above dropout and neither. 40 % wrong labels:
    batch norm alone the worst, below neither, training accuracy about 1.0; dropout, alone or with
    batch norm, near 0.8; batch norm loses to dropout by more than 0.15.'"""
    _, grid, *_ = _grid()
    final = {(v, d): grid.final()[grid.variants.index(v), grid.datasets.index(d)].mean().item()
             for v in lesson.VARIANTS for d in (CLEAN, NOISY)}
    assert final["batch norm", CLEAN] > max(final["dropout", CLEAN], final["neither", CLEAN]) + 0.015
    assert final["batch norm", NOISY] < final["neither", NOISY]
    assert final["dropout", NOISY] > final["batch norm", NOISY] + 0.15
    assert min(final["dropout", NOISY], final["batch norm + dropout", NOISY]) > 0.72
    assert grid.summary("batch norm", NOISY)["train"] > 0.95


def test_claim_inverted_dropout_keeps_the_mean_not_the_variance():
    """Seed 003's box: train/eval mean ≈ 1 at every p; variance ratio above 2 at p = 0.5, above 10 at 0.9."""
    *_, a = _grid()
    ps = [round(0.1 * k, 1) for k in range(10)]
    mean_ratio, var_ratio = lesson.dropout_moments(a, ps)
    assert all(abs(m - 1) < 0.05 for m in mean_ratio[:6]) and abs(mean_ratio[9] - 1) < 0.1
    assert var_ratio[5] > 2 and var_ratio[9] > 10 and var_ratio == sorted(var_ratio)


def test_claim_mc_dropout_flags_unfamiliar_inputs_better_than_one_pass():
    clean, _, model, _ = _grid()
    assert 0.9 < nk.train.accuracy(model, clean.x_test, clean.y_test) < 0.97
    g = torch.Generator().manual_seed(0)
    x_in = clean.x_test
    for x_out in (x_in[:, torch.randperm(64, generator=g)], torch.rand(x_in.shape, generator=g)):
        mi_in, mi_out = (lesson.predictive_spread(lesson.mc_dropout(model, v, samples=30))["mutual_info"]
                         for v in (x_in, x_out))
        with torch.no_grad():
            one_in, one_out = (1 - torch.softmax(model(v), 1).max(1).values for v in (x_in, x_out))
        mc, one = lesson.auroc(mi_in, mi_out), lesson.auroc(one_in, one_out)
        assert mc > 0.9 and mc > one + 0.08                                 # 0.97 vs 0.74–0.76


def test_claim_variance_shift_follows_li_et_al():
    """Dropout before BN: running var / real var as Li et al.'s formula, above 1/(1 − p) for ReLU units."""
    *_, a = _grid()
    for p in (0.1, 0.5, 0.8):
        r = lesson.variance_shift(a, p, steps=50)
        assert r["shift"] == pytest.approx(r["predicted_shift"], rel=0.06)
        assert r["shift"] > 1 / (1 - p) and r["eval_out_var"].mean() < 1


def test_claim_recalibrating_bn_removes_the_shift_in_a_trained_net():
    clean, grid, *_ = _grid()
    model = grid.model("batch norm + dropout", CLEAN, seed=0)
    bn2 = model[5]
    before = lesson.bn_input_variance(model, bn2, clean.x_test)
    acc_before = nk.train.accuracy(model, clean.x_test, clean.y_test)
    lesson.recalibrate_bn(model, clean.x_train)
    after = lesson.bn_input_variance(model, bn2, clean.x_test)
    acc_after = nk.train.accuracy(model, clean.x_test, clean.y_test)
    shift_before, shift_after = ((run / real).mean().item() for run, real in (before, after))
    assert 1.1 < shift_before < 1.5 and abs(shift_after - 1) < 0.08 and abs(acc_after - acc_before) < 0.02
