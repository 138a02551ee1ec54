"""normkit.lessons.l01_generalization_and_regularization (notebook 01): its experiments, its claims and
its exercise checkers."""
import pytest
import torch

import normkit as nk
from normkit.lessons import l01_generalization_and_regularization as lesson


def test_generalization_gap_is_train_minus_test_accuracy():
    split = nk.data.digits(n_train=40, test_size=200)
    model = nk.models.mlp([64, 16, 10])
    nk.train.fit(model, split, steps=30, batch_size=20, lr=0.01, optimizer="adam", eval_every=30)
    model.train()
    with torch.no_grad():
        acc_train = (model.eval()(split.x_train).argmax(1) == split.y_train).double().mean().item()
        acc_test = (model(split.x_test).argmax(1) == split.y_test).double().mean().item()
    model.train()
    assert lesson.generalization_gap(model, split) == pytest.approx(acc_train - acc_test, abs=1e-6)
    assert model.training                                   # the mode is restored


def test_overfit_run_memorizes_a_small_set_and_is_deterministic():
    h = lesson.overfit_run(30, 64, steps=60, eval_every=20)
    assert h.eval_steps == [0, 20, 40, 60]
    assert h.train_acc[-1] == 1.0 and h.gap > 0.1           # memorized; clearly worse on new digits
    assert h.test_acc == lesson.overfit_run(30, 64, steps=60, eval_every=20).test_acc


def test_overfit_run_random_labels_are_not_learnable():
    h = lesson.overfit_run(100, 128, steps=60, eval_every=60, label_noise=0.9)
    assert h.final_test_acc < 0.3


def test_overfit_run_rejects_a_bad_width():
    with pytest.raises(ValueError, match=r"^width=0"):
        lesson.overfit_run(30, 0)


def test_gap_grid_has_one_cached_run_per_pair():
    grid = lesson.gap_grid((20, 40), (8, 16), steps=10)
    assert set(grid) == {(20, 8), (20, 16), (40, 8), (40, 16)}
    assert grid[40, 16].eval_steps[-1] == 10
    assert lesson.gap_grid((20, 40), (8, 16), steps=10) is grid


def test_ensemble_predict_is_the_argmax_of_the_mean_softmax():
    torch.manual_seed(1)
    models = [nk.models.mlp([64, 8, 10]) for _ in range(3)]
    x = nk.data.digits(n_train=50).x_train
    models[0].train()
    with torch.no_grad():
        ref = torch.stack([torch.nn.functional.softmax(m(x), 1) for m in models]).mean(0).argmax(1)
    assert torch.equal(lesson.ensemble_predict(models, x), ref)
    assert models[0].training and models[1].training        # modes restored
    with torch.no_grad():
        assert torch.equal(lesson.ensemble_predict(models[:1], x), models[0](x).argmax(1))
    with pytest.raises(ValueError, match=r"^models=\[\]"):
        lesson.ensemble_predict([], x)


def test_check_generalization_gap(capsys):
    assert lesson.check_generalization_gap(lesson.generalization_gap)
    assert capsys.readouterr().out.startswith("✓ generalization_gap")
    assert not lesson.check_generalization_gap(lambda m, s: -lesson.generalization_gap(m, s))
    out = capsys.readouterr().out
    assert out.startswith("✗ generalization_gap: expected") and "got -" in out
    assert not lesson.check_generalization_gap(lambda m, s: None)
    assert "got None" in capsys.readouterr().out
    result = lesson.check_generalization_gap(lambda m, s: 1 / 0)
    assert not result and result._ipython_display_() is None
    assert "raised ZeroDivisionError" in capsys.readouterr().out


def test_check_ensemble_predict(capsys):
    assert lesson.check_ensemble_predict(lesson.ensemble_predict)
    assert capsys.readouterr().out.startswith("✓ ensemble_predict")
    mean_logits = lambda ms, x: torch.stack([m(x) for m in ms]).mean(0).argmax(1)   # not the same
    assert not lesson.check_ensemble_predict(mean_logits)
    out = capsys.readouterr().out
    assert out.startswith("✗ ensemble_predict:") and "expected class" in out and "got" in out
    assert not lesson.check_ensemble_predict(lambda ms, x: None)
    assert "got None" in capsys.readouterr().out


# ----------------------------------------------------------------------------- claims of notebook 01
def test_claim_a_wide_mlp_memorizes_50_digits():
    h = lesson.overfit_run(n_train=50, width=256)
    assert h.train_acc[-1] == 1.0 and 0.8 < h.final_test_acc < 0.9 and 0.1 < h.gap < 0.2


def test_claim_more_data_closes_the_gap_width_alone_does_not():
    """'For every width the gap shrinks as the training set grows, from about 0.4–0.5 at 20 images to
    0.04 or less at 1,300; widths 16–256 memorize up to 100 images; width 256 is within 0.01 of
    width 64 or better; the narrowest net has small gaps by underfitting (test accuracy ≤ about 0.6).'"""
    sizes, widths = (20, 50, 100, 200, 500, 1300), (4, 16, 64, 256)
    grid = lesson.gap_grid(sizes, widths)
    for w in widths:
        gaps = [grid[n, w].gap for n in sizes]
        assert gaps[-1] <= 0.05 and gaps[-1] < gaps[0] - 0.3
    for w in (16, 64, 256):
        assert 0.35 < grid[20, w].gap < 0.5 and all(grid[n, w].train_acc[-1] == 1.0 for n in (20, 50, 100))
        assert [grid[n, w].gap for n in sizes[:4]] == sorted((grid[n, w].gap for n in sizes[:4]), reverse=True)
    assert all(grid[n, 256].final_test_acc >= grid[n, 64].final_test_acc - 0.015 for n in sizes)
    assert all(grid[n, 64].final_test_acc > grid[n, 16].final_test_acc for n in sizes)
    assert max(grid[n, 4].final_test_acc for n in sizes) < 0.7


def test_claim_the_same_network_fits_random_labels():
    noise = lesson.overfit_run(200, 256, steps=300, label_noise=0.9)
    assert noise.train_acc[-1] == 1.0 and noise.final_test_acc < 0.15
