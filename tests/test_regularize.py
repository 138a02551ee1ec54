"""normkit.regularize (penalties, parameter groups, soft-threshold) and normkit.check.compare."""
import warnings

import pytest
import torch
import torch.nn.functional as TF
from torch import nn

import normkit as nk
from normkit.check import compare
from normkit.regularize import decay_groups, l1_penalty, l2_penalty, soft_threshold

from .conftest import DTYPES, randn


# ----------------------------------------------------------------------------- penalties
def test_l2_penalty_is_half_lambda_sum_of_squares():
    params = [torch.tensor([1.0, -2.0]), torch.tensor([[3.0]])]
    assert l2_penalty(params, 0.1).item() == pytest.approx(0.5 * 0.1 * (1 + 4 + 9), rel=1e-7)
    assert l2_penalty(torch.tensor([2.0, 2.0]), 1.0).item() == pytest.approx(4.0)     # a tensor
    assert float(l2_penalty(params, 0.0)) == 0.0


def test_l1_penalty_is_lambda_sum_of_abs():
    params = [torch.tensor([1.0, -2.0]), torch.tensor([[-3.0]])]
    assert l1_penalty(params, 0.5).item() == pytest.approx(0.5 * 6.0)
    assert l1_penalty(iter(params), 2.0).item() == pytest.approx(12.0)               # any iterable


def test_penalties_over_a_module_and_their_gradients():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)).double()
    expected_l2 = 0.5 * 0.3 * sum((p.detach() ** 2).sum() for p in model.parameters())
    torch.testing.assert_close(l2_penalty(model, 0.3).detach(), expected_l2)
    l2_penalty(model, 0.3).backward()
    for p in model.parameters():                      # ∂(½λΣw²)/∂w = λw: weight decay
        torch.testing.assert_close(p.grad, 0.3 * p.detach())
        p.grad = None
    l1_penalty(model, 0.2).backward()
    for p in model.parameters():                      # ∂(λΣ|w|)/∂w = λ·sign(w)
        torch.testing.assert_close(p.grad, 0.2 * p.detach().sign())


def test_l2_penalty_step_equals_sgd_weight_decay():
    torch.manual_seed(1)
    a = nn.Linear(5, 3).double()
    b = nn.Linear(5, 3).double()
    b.load_state_dict(a.state_dict())
    x, y = randn(8, 5), randn(8, 3, seed=1)
    opt_a = torch.optim.SGD(a.parameters(), lr=0.1)
    opt_b = torch.optim.SGD(b.parameters(), lr=0.1, weight_decay=0.05)
    (TF.mse_loss(a(x), y) + l2_penalty(a, 0.05)).backward()
    TF.mse_loss(b(x), y).backward()
    opt_a.step()
    opt_b.step()
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, atol=1e-14, rtol=0)


# ----------------------------------------------------------------------------- decay_groups
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.bn = nk.BatchNorm2d(4)
        self.tbn = nn.BatchNorm2d(4)
        self.gn = nk.GroupNorm(2, 4)
        self.tgn = nn.GroupNorm(2, 4)
        self.ln = nn.LayerNorm(4)
        self.nln = nk.LayerNorm(4)
        self.rms = nn.RMSNorm(4)
        self.inorm = nk.InstanceNorm2d(4, affine=True)
        self.fc = nn.Linear(4, 3)
        self.head = nn.Linear(3, 3, bias=False)
        self.frozen = nn.Linear(3, 3)
        self.frozen.requires_grad_(False)


def test_decay_groups_split():
    net = Net()
    groups = decay_groups(net, 5e-4)
    assert [g["weight_decay"] for g in groups] == [5e-4, 0.0]
    decay = {id(p) for p in groups[0]["params"]}
    no_decay = {id(p) for p in groups[1]["params"]}
    names = {id(p): n for n, p in net.named_parameters()}
    assert {names[i] for i in decay} == {"conv.weight", "fc.weight", "head.weight"}
    assert {names[i] for i in no_decay} == {
        "conv.bias", "fc.bias", "bn.weight", "bn.bias", "tbn.weight", "tbn.bias", "gn.weight", "gn.bias",
        "tgn.weight", "tgn.bias", "ln.weight", "ln.bias", "nln.weight", "nln.bias", "rms.weight",
        "inorm.weight", "inorm.bias"}
    # every trainable parameter exactly once, frozen ones not at all
    listed = groups[0]["params"] + groups[1]["params"]
    assert len(listed) == len({id(p) for p in listed})
    assert {id(p) for p in listed} == {id(p) for p in net.parameters() if p.requires_grad}


def test_decay_groups_tied_weights_appear_once():
    model = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 4))
    model[2].weight = model[0].weight                 # tied
    groups = decay_groups(model, 0.1)
    listed = groups[0]["params"] + groups[1]["params"]
    assert len(listed) == len({id(p) for p in listed}) == len(list(model.parameters())) == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")                # torch warns on duplicate parameters
        torch.optim.SGD(groups, lr=0.1)


def test_decay_groups_in_an_optimizer_decays_only_weights():
    model = nn.Sequential(nn.Linear(3, 3), nk.BatchNorm1d(3))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD(decay_groups(model, 0.5), lr=1.0)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)                  # only the decay term moves anything
    opt.step()
    after = dict(model.named_parameters())
    torch.testing.assert_close(after["0.weight"].detach(), before["0.weight"] * 0.5)
    for n in ("0.bias", "1.weight", "1.bias"):
        assert torch.equal(after[n].detach(), before[n]), n


# ----------------------------------------------------------------------------- soft_threshold
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("t", [0.0, 0.1, 0.5, 2.0])
def test_soft_threshold_equals_softshrink(dtype, t):
    w = randn(1000, dtype=dtype, scale=1.0)
    out = soft_threshold(w, t)
    assert out.dtype == dtype
    assert torch.equal(out, TF.softshrink(w, t))
    small = w.abs() <= t
    assert torch.equal(out[small], torch.zeros_like(out[small]))      # exact zeros
    assert torch.equal(out[~small].sign(), w[~small].sign())
    assert torch.equal(out[~small], w[~small] - t * w[~small].sign())


def test_soft_threshold_known_values_and_prox_property():
    w = torch.tensor([-3.0, -1.0, -0.5, 0.0, 0.25, 1.0, 4.0], dtype=torch.float64)
    assert soft_threshold(w, 1.0).tolist() == [-2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 3.0]
    # the proximal step: argmin_z ½(z − w)² + t|z|, checked on a grid
    z = torch.linspace(-5, 5, 100_001, dtype=torch.float64)
    for wi in w.tolist():
        obj = 0.5 * (z - wi) ** 2 + 0.7 * z.abs()
        assert soft_threshold(torch.tensor(wi), 0.7).item() == pytest.approx(z[obj.argmin()].item(), abs=1e-4)


# ----------------------------------------------------------------------------- check.compare
def _one_line(capsys):
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.endswith("\n"), repr(out)
    return out.strip()


def test_compare_prints_a_bound_not_the_digits_of_rounding(capsys):
    """0 and 9e-16 (two CPUs' rounding of one computation) print the same line."""
    x = randn(3, 4)
    result = compare("bn", x, x.clone())
    assert bool(result) is True and result.max_abs_diff == 0.0     # truthy result, silent in a cell
    assert _one_line(capsys) == "bn: equal up to rounding (max abs diff ≤ 1e-12)"
    assert bool(compare("bn", x, x + 9e-16)) is True
    assert _one_line(capsys) == "bn: equal up to rounding (max abs diff ≤ 1e-12)"
    x32 = x.float()
    assert bool(compare("ln", x32, x32 + 3e-8)) is True
    assert _one_line(capsys) == "ln: equal up to rounding (max abs diff ≤ 1e-06)"


def test_compare_close_is_within_atol_but_above_rounding(capsys):
    x64 = randn(3, 4)
    assert bool(compare("tiny", x64, x64 + 1e-11)) is True          # float64 atol 1e-10
    assert _one_line(capsys) == "tiny: close (max abs diff ≤ 1e-10)"
    assert bool(compare("custom", x64, x64 + 1e-3, atol=1e-2)) is True
    assert _one_line(capsys) == "custom: close (max abs diff ≤ 1e-02)"


def test_compare_different(capsys):
    x = randn(3, 4)
    result = compare("gn", x, x + 1e-6)                              # float64: atol 1e-10
    assert bool(result) is False and result.max_abs_diff == pytest.approx(1e-6, rel=1e-6)
    line = _one_line(capsys)
    assert line.startswith("gn: DIFFERENT") and "1.00e-06" in line
    assert bool(compare("gn32", x.float(), x.float() + 1e-3)) is False
    assert _one_line(capsys).startswith("gn32: DIFFERENT")


def test_compare_shape_mismatch_and_nan(capsys):
    assert bool(compare("s", torch.zeros(3), torch.zeros(4))) is False
    line = _one_line(capsys)
    assert "DIFFERENT" in line and "(3,)" in line and "(4,)" in line
    assert bool(compare("nan", torch.tensor([float("nan")]), torch.tensor([0.0]))) is False
    assert "DIFFERENT" in _one_line(capsys)


def test_compare_accepts_numbers_and_grad_tensors(capsys):
    assert bool(compare("scalar", 1.5, torch.tensor(1.5))) is True
    assert _one_line(capsys).startswith("scalar: equal up to rounding")
    w = torch.ones(2, requires_grad=True)
    assert bool(compare("grad", w * 2, torch.full((2,), 2.0))) is True
    assert _one_line(capsys).startswith("grad: equal up to rounding")
