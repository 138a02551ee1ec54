"""normkit.lessons.l09_why_batchnorm_works (notebook 09): its experiments, its claims and its exercise checkers."""
import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.functional import cross_entropy

import normkit as nk
from normkit.lessons import l09_why_batchnorm_works as lesson
from tests.conftest import assert_checker_verdicts


def test_mlp_layout_and_he_init():
    plain, bn = lesson.mlp(None), lesson.mlp("batch")
    linears = [m for m in plain if isinstance(m, nn.Linear)]
    assert [m.in_features for m in linears] == lesson.SIZES[:-1] and linears[-1].out_features == 10
    assert sum(isinstance(m, nk.BatchNorm1d) for m in bn) == 3 and bn[0].bias is None
    w = torch.cat([m.weight.flatten() for m in linears[:-1]])
    assert w.std().item() == pytest.approx(math.sqrt(2 / 64), rel=0.05)
    assert torch.equal(lesson.mlp(None)[0].weight, plain[0].weight)               # seeded
    with pytest.raises(ValueError, match="norm"):
        lesson.mlp("group")


def test_run_mlp_is_one_train_fit_run_and_detects_divergence():
    run = lesson.run_mlp("batch", lr=0.3, steps=7)
    model = lesson.mlp("batch")
    ref = nk.train.fit(model, nk.data.digits(), steps=7, optimizer=torch.optim.SGD(model.parameters(), lr=0.3))
    assert len(run.loss) == 7 and not run.diverged and 0 <= run.final_test_acc <= 1
    assert run.loss == pytest.approx(ref.loss, abs=1e-6)                # plain SGD, the same batches
    assert run.eval_steps == [7] and run.train_acc == []                # evaluated once, test set only
    assert run.final_loss == pytest.approx(sum(run.loss) / 7)
    assert len(lesson.weight_norms(run.model)) == 4
    bad = lesson.run_mlp(None, lr=10.0, scale=4.0, steps=50)
    assert bad.diverged and len(bad.loss) < 50 and bad.final_loss == math.inf
    with pytest.raises(ValueError, match="steps"):
        lesson.run_mlp(None, steps=0)


def test_scale_init():
    m = lesson.mlp(None)
    w = m[0].weight.detach().clone()
    lesson.scale_init(m, 0.5)
    assert torch.allclose(m[0].weight, 0.5 * w)
    assert lesson.weight_norms(m)[0] == pytest.approx(0.5 * w.norm().item())
    with pytest.raises(ValueError, match="scale"):
        lesson.scale_init(m, -1.0)


# ----------------------------------------------------------------------------- many runs at once
CONFIGS = [(None, 0.1, 1.0), (None, 0.3, 0.5), (None, 3.0, 1.0), (None, 10.0, 4.0),
           ("batch", 0.1, 1.0), ("batch", 0.3, 2.0), ("batch", 3.0, 0.25)]


def test_stacked_runs_equal_single_runs():
    """Each network of a stack computes what it computes alone: same losses, gradient norms, divergence,
    test accuracy and trained weights as run_mlp (one network through train.fit)."""
    stacked = lesson.train_stacked(CONFIGS, steps=15, probed=[(None, 0.1, 1.0)])
    assert list(stacked) == CONFIGS
    for config, run in stacked.items():
        ref = lesson.run_mlp(*config, steps=15)
        assert run.diverged == ref.diverged and len(run.loss) == len(ref.loss), config
        assert np.allclose(run.loss, ref.loss, rtol=1e-4, atol=1e-5, equal_nan=True), config
        assert run.grad_norm.keys() == ref.grad_norm.keys()
        for name in ref.grad_norm:
            assert np.allclose(run.grad_norm[name], ref.grad_norm[name], rtol=1e-3, atol=1e-6), (config, name)
        if ref.diverged:
            assert run.test_acc == [] and math.isnan(run.final_test_acc)
        else:
            assert run.eval_steps == [15] and run.final_test_acc == pytest.approx(ref.final_test_acc, abs=0.005)
        for a, b in zip(run.model.state_dict().values(), ref.model.state_dict().values()):
            if a.dtype.is_floating_point:
                assert torch.allclose(a, b, rtol=1e-3, atol=1e-5), config


def test_a_noisy_network_alone_in_its_stack_draws_the_same_noise_as_alone():
    config = (("noisy", 0.5), 0.3, 1.0)
    run, ref = lesson.train_stacked([config], steps=15)[config], lesson.run_mlp(*config, steps=15)
    assert run.loss == pytest.approx(ref.loss, rel=1e-4)                # recording draws no training noise


def test_records_and_probes_do_not_change_training():
    configs = [("batch", 0.3, 1.0), (("noisy", 0.5), 0.3, 1.0)]
    recorded = lesson.train_stacked(configs, steps=20, probed=configs)
    bare = lesson.train_stacked(configs, steps=20, record_every=1000)
    for c in configs:
        assert recorded[c].loss == bare[c].loss
        assert [r.step for r in recorded[c].extra] == [0, 5, 10, 15]
        assert len(lesson.probes(recorded[c])) == 2 and len(lesson.probes(bare[c])) == 0
        q = lesson.unit_percentiles(recorded[c])
        assert q.shape == (4, 3) and np.all(q[:, 0] <= q[:, 1]) and np.all(q[:, 1] <= q[:, 2])
    for p in lesson.probes(recorded[configs[0]]):
        assert p.loss_min <= p.loss_max and p.grad_change > 0 and p.beta > 0


def test_stack_refuses_mixed_layouts_and_takes_batch_and_noisy_norms_together():
    with pytest.raises(ValueError, match="one layout"):
        lesson._stack([lesson.mlp(None), lesson.mlp("batch")])
    nets = [lesson.mlp("batch"), lesson.mlp(("noisy", 0.5))]
    stack = lesson._stack(nets)
    assert stack.layers[1].noise.tolist() == [0.0] * 64 + [0.5] * 64       # each network's own noise, per unit
    x = torch.rand(8, 64)
    for k, net in enumerate(nets):                                           # eval: no noise, each network alone
        assert torch.allclose(stack.eval()(x)[:, :, k], net.eval()(x), atol=1e-5)
    assert isinstance(stack, nk.models.Stack) and stack.train()(x).shape == (8, 10, 2)


def test_experiments_hold_every_run_of_the_notebook():
    runs = lesson.experiments()
    assert len(runs) == 23 and runs is lesson.experiments()                       # cached
    for norm in (None, "batch"):
        assert all((norm, lr, 1.0) in runs for lr in lesson.LRS)
        assert all((norm, 0.1, s) in runs for s in lesson.SCALES)
        assert len(lesson.probes(runs[norm, 0.1, 1.0])) == 10
    assert all((norm, lr, 1.0) in runs for norm, lr in lesson.NOISY)


def test_noisy_batch_norm():
    torch.manual_seed(0)
    x = torch.randn(32, 5, dtype=torch.float64) * 3 + 1
    noisy, ref = lesson.NoisyBatchNorm1d(5, noise=0.5).double(), nn.BatchNorm1d(5).double()
    y = noisy(x)
    z = ref(x)
    ratio = y.std(0) / z.std(0)                 # per unit: y = s·BN(x) + m, s > 0
    assert torch.allclose((y - y.mean(0)) / ratio, z - z.mean(0), atol=1e-10)
    assert not torch.allclose(y, z)
    assert torch.allclose(noisy.running_mean, ref.running_mean)
    noisy.eval(), ref.eval()
    assert torch.allclose(noisy(x), ref(x))                                 # no noise at inference
    assert torch.allclose(lesson.NoisyBatchNorm1d(5, noise=0.0).double()(x), nn.BatchNorm1d(5).double()(x))
    with pytest.raises(ValueError, match="noise"):
        lesson.NoisyBatchNorm1d(5, noise=-1.0)


def test_probe_measures_each_step_size_and_leaves_the_model_alone():
    model = lesson.run_mlp("batch", lr=0.1, steps=10).model
    x, y = nk.data.digits().x_train[:64], nk.data.digits().y_train[:64]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    probe = lesson._probe(model, x, y, [0.05, 0.4])
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    params = list(model.parameters())
    g = torch.autograd.grad(cross_entropy(model(x), y), params)
    model.load_state_dict(before)
    losses, betas = [], []
    for eta in (0.05, 0.4):                            # one step size at a time, by hand
        moved = lesson.mlp("batch")
        moved.load_state_dict(before)
        with torch.no_grad():
            for p, gi in zip(moved.parameters(), g):
                p.sub_(eta * gi)
        loss = cross_entropy(moved(x), y)
        g2 = torch.autograd.grad(loss, list(moved.parameters()))
        change = torch.sqrt(sum(((a - b) ** 2).sum() for a, b in zip(g2, g))).item()
        losses.append(loss.item())
        betas.append(change / (eta * torch.sqrt(sum((gi ** 2).sum() for gi in g)).item()))
    assert probe.loss_min == pytest.approx(min(losses), rel=1e-5)
    assert probe.loss_max == pytest.approx(max(losses), rel=1e-5)
    assert probe.beta == pytest.approx(max(betas), rel=1e-4)


def test_probe_beta_of_a_quadratic_model():
    """For a linear model with squared loss the gradient is linear in w: β is exact."""
    x = torch.eye(3, dtype=torch.float64)
    y = torch.zeros(3, dtype=torch.long)
    model = nn.Sequential(nn.Linear(3, 2, bias=False)).double()
    p = lesson._probe(model, x, y, [0.1, 0.2])
    assert 0 < p.beta < 1.0                  # cross-entropy's Hessian has norm ≤ ½·‖x‖² = ½


# ----------------------------------------------------------------------------- diagnostics
def test_layer_health_is_each_relus_input_and_its_gradient():
    model = lesson.mlp("batch")
    x, y = nk.data.digits().x_train[:32], nk.data.digits().y_train[:32]
    before = [b.clone() for b in model.buffers()]
    health = lesson.layer_health(model, x, y)
    assert len(health) == 3 and all(torch.equal(a, b) for a, b in zip(before, model.buffers()))
    assert all(p.grad is None for p in model.parameters())
    h2 = model[:5](x)                                        # input of the second ReLU, by hand
    assert torch.allclose(health[1].pre, h2.detach(), atol=1e-6)
    out = torch.relu(h2)
    out.retain_grad()
    cross_entropy(model[6:](out), y).backward()
    assert torch.allclose(health[1].grad, out.grad, atol=1e-7)
    crafted = lesson.LayerHealth(torch.tensor([[1.0, -1.0, -2.0], [-1.0, -1.0, 3.0]]), torch.zeros(2, 3))
    assert crafted.inactive == pytest.approx(4 / 6) and crafted.dead == pytest.approx(1 / 3)


def test_update_ratios_read_the_recorded_norms():
    config = ("batch", 0.3, 1.0)
    run = lesson.train_stacked([config], steps=12)[config]
    steps, ratios = lesson.update_ratios(run, 0.3)
    assert list(steps) == [0, 5, 10] and ratios.shape == (4, 3)
    r = run.extra[1]
    assert ratios[1, 1] == pytest.approx(math.log10(0.3 * run.grad_norm["3.weight"][5] / r.weight_norm["3.weight"]))
    assert r.weight_norm["0.weight"] == pytest.approx(lesson.mlp("batch")[0].weight.norm().item(), rel=0.1)


# ----------------------------------------------------------------------------- batch statistics
def test_batch_means_draw_batches_as_training_does():
    values = torch.arange(20, dtype=torch.float64)
    order = nk.train.batches(20, 4, torch.Generator().manual_seed(3))
    expected = torch.stack([values[next(order)].mean() for _ in range(12)])
    assert torch.equal(lesson.batch_means(values, 4, n_batches=12, seed=3), expected)


def test_kurtosis():
    assert lesson.kurtosis(torch.tensor([-1.0, 1.0, -1.0, 1.0])) == pytest.approx(1.0)
    g = torch.randn(200_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert lesson.kurtosis(g) == pytest.approx(3.0, abs=0.05)
    assert lesson.unit_values().shape == (1300,)


# ----------------------------------------------------------------------------- checkers
def _gradient_change(f, w, step):
    w = w.detach().requires_grad_(True)
    g, = torch.autograd.grad(f(w), w)
    w2 = (w - step * g).detach().requires_grad_(True)
    g2, = torch.autograd.grad(f(w2), w2)
    return (g2 - g).norm().item()


RIGHT_AND_WRONG = [
    (lesson.check_max_stable_lr, lambda h: 2 / h, lambda h: 1 / h),
    (lesson.check_gradient_change, _gradient_change, lambda f, w, s: _gradient_change(f, w, 2 * s)),
]


@pytest.mark.parametrize("checker,right,wrong", RIGHT_AND_WRONG, ids=lambda v: getattr(v, "__name__", ""))
def test_checker_accepts_the_right_answer_and_rejects_a_wrong_one(checker, right, wrong, capsys):
    assert_checker_verdicts(checker, right, wrong, capsys)


def test_which_norm_checker(capsys):
    assert lesson.check_which_norm({1: "batch", 2: "group", 3: "Layer Norm", 4: "instance"})
    assert capsys.readouterr().out.startswith("✓ ")
    assert lesson.check_which_norm({1: "batch", 2: "sync_batch", 3: "rms", 4: "instance"})
    capsys.readouterr()
    result = lesson.check_which_norm({1: "batch", 2: "batch", 3: "layer", 4: "instance"})
    out = capsys.readouterr().out
    assert not result and out.startswith("✗ ") and "scenario 2 (got 'batch')" in out
    assert not lesson.check_which_norm(["batch"])
    assert set(lesson.WHICH_NORM_SCENARIOS) == {1, 2, 3, 4}


def test_checkers_print_a_cross_for_the_students_stubs(capsys):
    """The notebook's stubs (functions returning None, the placeholder dict of None) give ✗, not an error."""
    assert not lesson.check_max_stable_lr(lambda h: None)
    assert not lesson.check_gradient_change(lambda f, w, step: None)
    assert not lesson.check_which_norm({1: None, 2: None, 3: None, 4: None})
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3 and all(line.startswith("✗ ") for line in out)
    assert "raised" not in "".join(out)


# ----------------------------------------------------------------------------- claims of notebook 09
# What the notebook's prose says, at notebook scale, with bands that hold on every kernel path we
# ran (AVX-512, AVX2, default; see README "Tests") and that a broken BN or optimizer misses.
@pytest.fixture(scope="module")
def runs():
    return lesson.experiments()


def test_claim_bn_widens_the_usable_learning_rates(runs):
    """'Without BN best around 0.3, fails at 1 and diverges above; with BN it trains at every rate
    up to 3, better than the plain network at each rate where both train; at 10 near chance.'"""
    lrs = lesson.LRS
    plain = {lr: runs[None, lr, 1.0] for lr in lrs}
    bn = {lr: runs["batch", lr, 1.0] for lr in lrs}
    assert max((r.final_test_acc, lr) for lr, r in plain.items() if not r.diverged)[1] == 0.3
    assert 0.85 < plain[0.3].final_test_acc < 0.93
    assert not plain[1.0].diverged and plain[1.0].final_test_acc < 0.5           # 0.10–0.30 across CPUs
    assert plain[3.0].diverged and plain[10.0].diverged
    assert all(not bn[lr].diverged and bn[lr].final_test_acc > 0.85 for lr in lrs[:5])
    assert all(bn[lr].final_test_acc > plain[lr].final_test_acc for lr in lrs[:4])
    assert bn[1.0].final_test_acc > 0.97 and bn[10.0].final_test_acc < 0.2


def test_claim_large_steps_grow_the_weights_feeding_bn(runs):
    """'A too-large step makes the weights feeding BN longer': ‖W₁‖ grows with the learning rate."""
    w0 = lesson.mlp("batch")[0].weight.norm().item()
    growth = [lesson.weight_norms(runs["batch", lr, 1.0].model)[0] / w0 for lr in (0.1, 1.0, 3.0)]
    assert growth[0] == pytest.approx(1.0, abs=0.02) and 1.02 < growth[1] < growth[2]
    assert 1.3 < growth[2] ** 2 < 3.0                                        # ≈ 2.1 measured


def test_claim_bn_makes_the_initial_scale_matter_less(runs):
    """'Without BN only s = 1 and 2 train well; s = 0.25 hardly moves; s = 4 diverges. With BN every
    scale trains, the accuracy falling gently as s grows.' (and, section 5: s = 0.5 reaches ~0.55)"""
    scales = lesson.SCALES
    plain = [runs[None, 0.1, s] for s in scales]
    bn = [runs["batch", 0.1, s].final_test_acc for s in scales]
    assert plain[0].final_test_acc < 0.2 and 0.4 < plain[1].final_test_acc < 0.7 and plain[4].diverged
    assert min(plain[2].final_test_acc, plain[3].final_test_acc) > 0.83
    assert min(bn) > 0.8 and bn == sorted(bn, reverse=True)


def test_claim_noisy_bn_trains_about_as_well_as_bn(runs):
    """Santurkar et al.: 'noisy BN trains nearly as well as BN (within about three points) and clearly
    better than the standard network, while its unit's distribution moves far more'; at lr 1 it still
    trains where the standard network fails; at strength 1 it trains clearly worse."""
    noisy = {"standard": runs[None, 0.3, 1.0], "batch norm": runs["batch", 0.3, 1.0],
             "noisy": runs[("noisy", 0.5), 0.3, 1.0]}
    moves = {k: np.abs(np.diff(lesson.unit_percentiles(r)[:, 1])).mean() for k, r in noisy.items()}
    acc = {k: r.final_test_acc for k, r in noisy.items()}
    assert moves["noisy"] > 2 * moves["standard"] > 5 * moves["batch norm"]       # 0.65, 0.26, 0.02
    # noisy BN's accuracy depends on its noise draws: 0.962 here (0.948–0.970 with other draws of the
    # same init and batches); BN 0.978, standard 0.889
    assert acc["batch norm"] - 0.04 < acc["noisy"] and acc["noisy"] > acc["standard"] + 0.03
    assert runs[("noisy", 0.5), 1.0, 1.0].final_test_acc > 0.9 and runs[None, 1.0, 1.0].final_test_acc < 0.5
    assert runs[("noisy", 1.0), 0.3, 1.0].final_test_acc < acc["batch norm"] - 0.2


def test_claim_bn_smooths_the_loss_along_the_step(runs):
    """'With BN the loss varies far less along the step, the gradient changes far less, and the
    effective β is several times smaller' (medians over steps 20–90)."""
    med = {}
    for norm in (None, "batch"):
        pr = lesson.probes(runs[norm, 0.1, 1.0])[2:]
        med[norm] = [np.median([p.loss_max - p.loss_min for p in pr]),
                     np.median([p.grad_change for p in pr]), np.median([p.beta for p in pr])]
    loss_range, grad_change, beta = (med[None][k] / med["batch"][k] for k in range(3))
    assert loss_range > 4 and grad_change > 5 and beta > 2


def test_claim_a_small_init_shrinks_the_layers_without_bn():
    """Section 5 at initialization, s = 0.5: 'without BN each layer's activations are about half as
    wide as the previous layer's (0.37, 0.20, 0.13) and the gradients halve from layer 3 back to
    layer 1; with BN every layer has sd 1 and the gradients keep one scale.'"""
    x, y = nk.data.digits().x_train[:512], nk.data.digits().y_train[:512]
    plain, bn = (lesson.layer_health(lesson.scale_init(lesson.mlp(norm), 0.5), x, y) for norm in (None, "batch"))
    act = [h.pre.std().item() for h in plain]
    grad = [h.grad.std().item() for h in plain]
    assert 0.3 < act[0] < 0.45 and all(0.4 < b / a < 0.75 for a, b in zip(act, act[1:]))
    assert all(0.35 < a / b < 0.7 for a, b in zip(grad, grad[1:]))
    assert all(0.95 < h.pre.std().item() < 1.05 for h in bn)
    bn_grad = [h.grad.std().item() for h in bn]
    assert max(bn_grad) / min(bn_grad) < 1.8


def test_claim_update_ratios_and_dead_units_without_bn(runs):
    """Section 5 during training: 'without BN at s = 0.25 the first three layers change by about
    10^-3.4 per step, ten times less than the last layer; with BN the same initial weights update at
    about 10^-1.7 in every layer, together. Without BN at lr 1 the ratios wander more than with BN,
    and about half of the units or more are dead in every layer; with BN none is dead (about half of
    the inputs active). The runs that train well sit between about -2.5 and -1.2.'"""
    _, slow = lesson.update_ratios(runs[None, 0.1, 0.25], 0.1)
    med = np.median(slow, 1)                                                      # -3.39 -3.44 -3.26 -2.39
    assert np.all((-3.7 < med[:3]) & (med[:3] < -3.1)) and med[3] > med[:3].max() + 0.6
    _, together = lesson.update_ratios(runs["batch", 0.1, 0.25], 0.1)
    med = np.median(together, 1)                                                  # -1.52 -1.66 -1.82 -1.91
    assert np.all((-2.2 < med) & (med < -1.3)) and med.max() - med.min() < 0.6

    def late_spread(run, lr):                # how far each layer's ratio wanders from step 20 on
        steps, r = lesson.update_ratios(run, lr)
        r = r[:, steps >= 20]
        return (r.max(1) - r.min(1)).max()
    # 2.7 (AVX-512) or 1.2 (default kernels): the plain run at lr 1 is chaotic; BN 0.84 on both
    assert late_spread(runs[None, 1.0, 1.0], 1.0) > 1.1 * late_spread(runs["batch", 1.0, 1.0], 1.0)
    x, y = nk.data.digits().x_train[:512], nk.data.digits().y_train[:512]
    plain = lesson.layer_health(runs[None, 1.0, 1.0].model, x, y)
    bn = lesson.layer_health(runs["batch", 1.0, 1.0].model, x, y)
    assert all(h.dead > 0.35 for h in plain) and np.mean([h.dead for h in plain]) > 0.45   # 47–75 % on both
    assert all(h.dead == 0 and 0.4 < h.inactive < 0.6 for h in bn)
    good = [(norm, lr) for norm in (None, "batch") for lr in lesson.LRS if runs[norm, lr, 1.0].final_test_acc > 0.95]
    assert len(good) >= 3
    for norm, lr in good:
        med = np.median(lesson.update_ratios(runs[norm, lr, 1.0], lr)[1], 1)          # -2.6 to -1.2 measured
        assert np.all((-2.8 < med) & (med < -1.0)), (norm, lr, med)


def test_claim_batch_size_and_the_gaussian():
    """Seed 002's box: 'the pixel's κ is 1.33, and so is its batch-norm output's; sd(μ_B)·√B/σ stays
    between 0.95 and 1.05 from B = 2 to 128; κ of μ_B rises from 2.2 at B = 2 toward 3 (about 2.8 at
    B = 64), and the histogram of μ_B at B = 64 lies on the Gaussian while B = 4 does not.'"""
    unit = lesson.unit_values()
    sd = unit.std(unbiased=False).item()
    assert 1.25 < lesson.kurtosis(unit) < 1.4
    out = nk.functional.batch_norm(unit[:, None], None, None, training=True)[:, 0]
    assert lesson.kurtosis(out) == pytest.approx(lesson.kurtosis(unit), abs=1e-6)
    means = {b: lesson.batch_means(unit, b) for b in (2, 4, 8, 16, 32, 64, 128)}
    assert all(0.94 < m.std().item() * b ** 0.5 / sd < 1.05 for b, m in means.items())
    assert lesson.kurtosis(means[2]) < 2.4 and 2.5 < lesson.kurtosis(means[64]) < 3.3

    def distance_to_gaussian(b):
        edges = np.linspace(-4, 4, 41)
        mid = (edges[:-1] + edges[1:]) / 2
        z = ((means[b] - unit.mean()) / (sd / b ** 0.5)).numpy()
        density, _ = np.histogram(z, bins=edges, density=True)
        return np.abs(density - np.exp(-mid ** 2 / 2) / math.sqrt(2 * math.pi)).sum() * (edges[1] - edges[0])
    assert distance_to_gaussian(64) < 0.5 * distance_to_gaussian(4)                # 0.09 vs 0.27
