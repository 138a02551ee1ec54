"""normkit.why_bn (notebook 09) and the 09 exercise checkers."""
import math

import numpy as np
import pytest
import torch
from torch import nn

import normkit as nk
from normkit import why_bn as wb


def test_mlp_layout_and_he_init():
    plain, bn = wb.mlp(None), wb.mlp("batch")
    linears = [m for m in plain if isinstance(m, nn.Linear)]
    assert [m.in_features for m in linears] == wb.SIZES[:-1] and linears[-1].out_features == 10
    assert sum(isinstance(m, nk.BatchNorm1d) for m in bn) == 3 and bn[0].bias is None
    w = torch.cat([m.weight.flatten() for m in linears[:-1]])
    assert w.std().item() == pytest.approx(math.sqrt(2 / 64), rel=0.05)
    assert torch.equal(wb.mlp(None)[0].weight, plain[0].weight)               # seeded
    with pytest.raises(ValueError, match="norm"):
        wb.mlp("group")


def test_train_run_records_every_step_and_detects_divergence():
    data = nk.data.digits()
    run = wb.train_run(wb.mlp(None), data, lr=0.1, steps=7, batch_size=32)
    assert len(run.loss) == 7 and not run.diverged and 0 <= run.test_acc <= 1
    assert len(run.weight_norms) == 4 and run.final_loss == pytest.approx(sum(run.loss) / 7)
    bad = wb.train_run(wb.scale_init(wb.mlp(None), 4.0), data, lr=10.0, steps=50)
    assert bad.diverged and len(bad.loss) < 50 and bad.final_loss == math.inf
    with pytest.raises(ValueError, match="batch_size"):
        wb.train_run(wb.mlp(None), data, batch_size=0)
    with pytest.raises(ValueError, match="steps"):
        wb.train_run(wb.mlp(None), data, steps=0)


def test_train_run_is_plain_sgd():
    """The default optimizer is SGD: the same steps as torch.optim.SGD."""
    data = nk.data.digits()
    a, b = wb.mlp("batch"), wb.mlp("batch")
    ra = wb.train_run(a, data, lr=0.3, steps=5)
    rb = wb.train_run(b, data, lr=0.3, steps=5, optimizer=torch.optim.SGD(b.parameters(), lr=0.3))
    assert ra.loss == pytest.approx(rb.loss, abs=1e-6)


def test_scale_init_and_cached_sweeps():
    m = wb.mlp(None)
    w = m[0].weight.detach().clone()
    wb.scale_init(m, 0.5)
    assert torch.allclose(m[0].weight, 0.5 * w)
    runs = wb.lr_sweep([0.1], steps=5)
    inits = wb.init_sweep([1.0], lr=0.1, steps=5)
    assert runs[None, 0.1] is inits[None, 1.0] is wb.run_mlp(None, 0.1, 1.0, 5)
    with pytest.raises(ValueError, match="scale"):
        wb.scale_init(m, -1.0)


def test_noisy_batch_norm():
    torch.manual_seed(0)
    x = torch.randn(32, 5, dtype=torch.float64) * 3 + 1
    noisy, ref = wb.NoisyBatchNorm1d(5, noise=0.5).double(), nn.BatchNorm1d(5).double()
    y = noisy(x)
    z = ref(x)
    ratio = y.std(0) / z.std(0)                 # per unit: y = s·BN(x) + m, s > 0
    assert torch.allclose((y - y.mean(0)) / ratio, z - z.mean(0), atol=1e-10)
    assert not torch.allclose(y, z)
    assert torch.allclose(noisy.running_mean, ref.running_mean)
    noisy.eval(), ref.eval()
    assert torch.allclose(noisy(x), ref(x))                                 # no noise at inference
    assert torch.allclose(wb.NoisyBatchNorm1d(5, noise=0.0).double()(x), nn.BatchNorm1d(5).double()(x))
    with pytest.raises(ValueError, match="noise"):
        wb.NoisyBatchNorm1d(5, noise=-1.0)


def test_unit_drift_restores_running_statistics():
    m = wb.mlp("batch")
    x = nk.data.digits().x_train[:64]
    before = [b.clone() for b in m.buffers()]
    q15, q50, q85 = wb.unit_drift(m, 4, x)
    assert q15 <= q50 <= q85
    assert all(torch.equal(a, b) for a, b in zip(before, m.buffers()))


def test_noisy_bn_runs():
    out = wb.noisy_bn_runs(steps=10, probe_every=5)
    assert list(out) == ["standard", "batch norm", "noisy batch norm"]
    for run in out.values():
        assert len(run.extra) == 2 and len(run.extra[0]) == 3 and len(run.loss) == 10


def test_gradient_change_on_a_quadratic():
    A = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=torch.float64)
    w = torch.tensor([1.0, -2.0], dtype=torch.float64)
    expected = (0.1 * A @ A @ w).norm().item()                 # ∇ = Aw, so Δ∇ = A·(0.1·Aw)
    assert wb.gradient_change(lambda v: 0.5 * v @ A @ v, w, 0.1) == pytest.approx(expected)


def test_smoothness_probes_do_not_change_training():
    probed = wb.smoothness_run("batch", lr=0.1, steps=10, probe_every=5)
    plain = wb.train_run(wb.mlp("batch"), nk.data.digits(), lr=0.1, steps=10)
    assert probed.loss == plain.loss and probed.test_acc == plain.test_acc
    assert len(probed.extra) == 2
    for p in probed.extra:
        assert p.loss_min <= p.loss_max and p.grad_change > 0 and p.beta > 0


def test_probe_beta_of_a_quadratic_model():
    """For a linear model with squared loss the gradient is linear in w: β is exact."""
    x = torch.eye(3, dtype=torch.float64)
    y = torch.zeros(3, dtype=torch.long)
    model = nn.Sequential(nn.Linear(3, 2, bias=False)).double()
    p = wb._probe(model, x, y, [0.1, 0.2])
    assert 0 < p.beta < 1.0                  # cross-entropy's Hessian has norm ≤ ½·‖x‖² = ½


# ----------------------------------------------------------------------------- checkers
def _gradient_change(f, w, step):
    w = w.detach().requires_grad_(True)
    g, = torch.autograd.grad(f(w), w)
    w2 = (w - step * g).detach().requires_grad_(True)
    g2, = torch.autograd.grad(f(w2), w2)
    return (g2 - g).norm().item()


RIGHT_AND_WRONG = [
    (nk.check.max_stable_lr, lambda h: 2 / h, lambda h: 1 / h),
    (nk.check.gradient_change, _gradient_change, lambda f, w, s: _gradient_change(f, w, 2 * s)),
]


@pytest.mark.parametrize("checker,right,wrong", RIGHT_AND_WRONG, ids=lambda v: getattr(v, "__name__", ""))
def test_checker_accepts_the_right_answer_and_rejects_a_wrong_one(checker, right, wrong, capsys):
    assert checker(right)
    assert capsys.readouterr().out.startswith("✓ ")
    assert not checker(wrong)
    out = capsys.readouterr().out
    assert out.startswith("✗ ") and "expected" in out and "got" in out


def test_which_norm_checker(capsys):
    assert nk.check.which_norm({1: "batch", 2: "group", 3: "Layer Norm", 4: "instance"})
    assert capsys.readouterr().out.startswith("✓ ")
    assert nk.check.which_norm({1: "batch", 2: "sync_batch", 3: "rms", 4: "instance"})
    capsys.readouterr()
    result = nk.check.which_norm({1: "batch", 2: "batch", 3: "layer", 4: "instance"})
    out = capsys.readouterr().out
    assert not result and out.startswith("✗ ") and "scenario 2 (got 'batch')" in out
    assert not nk.check.which_norm(["batch"])
    assert set(nk.check.WHICH_NORM_SCENARIOS) == {1, 2, 3, 4}


# ----------------------------------------------------------------------------- claims of notebook 09
# What the notebook's prose says, at notebook scale, with bands that hold on every kernel path we
# ran (AVX-512, AVX2, default; see README "Tests") and that a broken BN or optimizer misses.
LRS = [0.03, 0.1, 0.3, 1.0, 3.0, 10.0]


def test_claim_bn_widens_the_usable_learning_rates():
    """'Without BN best around 0.3, fails at 1 and diverges above; with BN it trains at every rate
    up to 3, better than the plain network at each rate where both train; at 10 near chance.'"""
    runs = wb.lr_sweep(LRS)
    plain = {lr: runs[None, lr] for lr in LRS}
    bn = {lr: runs["batch", lr] for lr in LRS}
    assert max((r.test_acc, lr) for lr, r in plain.items() if not r.diverged)[1] == 0.3
    assert 0.85 < plain[0.3].test_acc < 0.93
    assert not plain[1.0].diverged and plain[1.0].test_acc < 0.5           # 0.18–0.29 across CPUs
    assert plain[3.0].diverged and plain[10.0].diverged
    assert all(not bn[lr].diverged and bn[lr].test_acc > 0.85 for lr in LRS[:5])
    assert all(bn[lr].test_acc > plain[lr].test_acc for lr in LRS[:4])
    assert bn[1.0].test_acc > 0.97 and bn[10.0].test_acc < 0.2


def test_claim_large_steps_grow_the_weights_feeding_bn():
    """'A too-large step makes the weights feeding BN longer': ‖W₁‖ grows with the learning rate."""
    runs = wb.lr_sweep(LRS)
    w0 = wb.mlp("batch")[0].weight.norm().item()
    growth = [runs["batch", lr].weight_norms[0] / w0 for lr in (0.1, 1.0, 3.0)]
    assert growth[0] == pytest.approx(1.0, abs=0.02) and 1.02 < growth[1] < growth[2]
    assert 1.3 < growth[2] ** 2 < 3.0                                        # ≈ 2.1 measured


def test_claim_bn_makes_the_initial_scale_matter_less():
    """'Without BN only s = 1 and 2 train well; s = 0.25 hardly moves; s = 4 diverges. With BN every
    scale trains, the accuracy falling gently as s grows.'"""
    scales = [0.25, 0.5, 1.0, 2.0, 4.0]
    runs = wb.init_sweep(scales, lr=0.1)
    plain = [runs[None, s] for s in scales]
    bn = [runs["batch", s].test_acc for s in scales]
    assert plain[0].test_acc < 0.2 and plain[1].test_acc < 0.7 and plain[4].diverged
    assert min(plain[2].test_acc, plain[3].test_acc) > 0.83
    assert min(bn) > 0.8 and bn == sorted(bn, reverse=True)


def test_claim_noisy_bn_trains_about_as_well_as_bn():
    """Santurkar et al.: 'noisy BN trains about as well as BN and better than the standard network,
    while its unit's distribution moves far more'; at strength 1 it trains clearly worse."""
    noisy = wb.noisy_bn_runs(lr=0.3, noise=0.5)
    moves = {k: np.abs(np.diff(np.array(r.extra)[:, 1])).mean() for k, r in noisy.items()}
    acc = {k: r.test_acc for k, r in noisy.items()}
    assert moves["noisy batch norm"] > 2 * moves["standard"] > 10 * moves["batch norm"]
    assert acc["batch norm"] - 0.03 < acc["noisy batch norm"] and acc["noisy batch norm"] > acc["standard"] + 0.03
    at_lr_1 = {k: wb.run_mlp(norm, lr=1.0).test_acc for k, norm in (("plain", None), ("bn", "batch"),
                                                                        ("noisy", ("noisy", 0.5)))}
    assert at_lr_1["noisy"] > 0.9 and at_lr_1["plain"] < 0.5
    assert wb.run_mlp(("noisy", 1.0), lr=0.3).test_acc < acc["batch norm"] - 0.2


def test_claim_bn_smooths_the_loss_along_the_step():
    """'With BN the loss varies far less along the step, the gradient changes far less, and the
    effective β is several times smaller' (medians over steps 20–90)."""
    med = {}
    for norm in (None, "batch"):
        pr = wb.smoothness_run(norm, lr=0.1, probe_every=10).extra[2:]
        med[norm] = [np.median([p.loss_max - p.loss_min for p in pr]),
                     np.median([p.grad_change for p in pr]), np.median([p.beta for p in pr])]
    loss_range, grad_change, beta = (med[None][k] / med["batch"][k] for k in range(3))
    assert loss_range > 4 and grad_change > 5 and beta > 2
