"""normkit.functional against torch.nn.functional: forward, backward, running statistics.

Every comparison uses the same inputs, the same affine parameters and the same upstream gradient
for both implementations, in float32 and float64, over several shapes (odd sizes included).
"""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from torch import nn

import normkit as nk
import normkit.functional as F

from .conftest import DTYPES, assert_close, grads_of, leaf, randn, rstd_max

def _compare_grads(ours, ref, cond):
    """Same set of gradients, each close to torch's; tolerance × the conditioning 1/std."""
    for g_ours, g_ref in zip(ours, ref, strict=True):
        if g_ref is None:
            assert g_ours is None
        else:
            assert_close(g_ours, g_ref, factor=4 * cond)


# ----------------------------------------------------------------------------- batch norm
BN_SHAPES = [(7, 3), (4, 5, 9), (3, 4, 5, 7), (2, 3, 2, 3, 3)]
AFFINE = ["weight+bias", "weight", "bias", "none"]


def _affine(c, dtype, which, seed=10):
    w = randn(c, dtype=dtype, seed=seed) * 0.5 + 1.0 if "weight" in which else None
    b = randn(c, dtype=dtype, seed=seed + 1) if "bias" in which else None
    return w, b


def _running(c, dtype):
    return randn(c, dtype=dtype, seed=20), torch.rand(c, generator=torch.Generator().manual_seed(21),
                                                      dtype=torch.float64).to(dtype) + 0.5


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", BN_SHAPES)
@pytest.mark.parametrize("affine", AFFINE)
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_forward_backward(dtype, shape, affine, training):
    c = shape[1]
    x = randn(*shape, dtype=dtype, scale=2.0, offset=0.7)
    w, b = _affine(c, dtype, affine)
    rm, rv = _running(c, dtype)
    ours_rm, ours_rv, ref_rm, ref_rv = rm.clone(), rv.clone(), rm.clone(), rv.clone()
    xa, wa, ba = leaf(x), leaf(w), leaf(b)
    xb, wb, bb = leaf(x), leaf(w), leaf(b)

    y = F.batch_norm(xa, ours_rm, ours_rv, wa, ba, training, 0.3, 1e-5)
    r = TF.batch_norm(xb, ref_rm, ref_rv, wb, bb, training, 0.3, 1e-5)
    assert y.shape == r.shape and y.dtype == r.dtype
    assert_close(y, r)
    assert_close(ours_rm, ref_rm)
    assert_close(ours_rv, ref_rv)
    if training:   # the buffers really moved (biased vs unbiased variance would differ here)
        assert not torch.equal(ours_rv, rv)
    else:
        assert torch.equal(ours_rm, rm) and torch.equal(ours_rv, rv)

    up = randn(*shape, dtype=dtype, seed=30)
    cond = rstd_max(x.transpose(0, 1).reshape(c, -1)) if training else 1.0
    _compare_grads(grads_of(y, up, xa, wa, ba), grads_of(r, up, xb, wb, bb), cond)


@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_norm_training_without_running_stats(dtype):
    x = randn(6, 4, 5, dtype=dtype, scale=3.0, offset=-2.0)
    assert_close(F.batch_norm(x, None, None, training=True),
                 TF.batch_norm(x, None, None, training=True))
    # Normalized per channel: mean 0, biased variance 1 (up to eps).
    y = F.batch_norm(x, None, None, training=True, eps=0.0).double()
    torch.testing.assert_close(y.mean((0, 2)), torch.zeros(4, dtype=torch.float64), atol=1e-6, rtol=0)
    torch.testing.assert_close(y.var((0, 2), unbiased=False), torch.ones(4, dtype=torch.float64),
                               atol=1e-5, rtol=0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("momentum", [0.0, 0.1, 0.5, 1.0])
def test_batch_norm_running_stats_over_steps(dtype, momentum):
    c = 3
    ours_rm, ours_rv = torch.zeros(c, dtype=dtype), torch.ones(c, dtype=dtype)
    ref_rm, ref_rv = ours_rm.clone(), ours_rv.clone()
    for step, n in enumerate([4, 7, 2, 5, 3, 6]):       # batch size varies: unbiased n/(n−1) varies
        x = randn(n, c, 5, dtype=dtype, scale=1 + step, offset=step - 2, seed=step)
        F.batch_norm(x, ours_rm, ours_rv, training=True, momentum=momentum)
        TF.batch_norm(x, ref_rm, ref_rv, training=True, momentum=momentum)
    assert_close(ours_rm, ref_rm)
    assert_close(ours_rv, ref_rv)
    if momentum == 0.0:
        assert torch.equal(ours_rm, torch.zeros(c, dtype=dtype))
    # momentum 1: the running variance is exactly the last batch's unbiased variance
    if momentum == 1.0:
        last = randn(6, c, 5, dtype=dtype, scale=6, offset=3, seed=5)
        assert_close(ours_rv, last.transpose(0, 1).reshape(c, -1).var(1, unbiased=True), factor=10)


# ----------------------------------------------------------------------------- layer norm
LN_CASES = [((5, 7), 7), ((5, 7), (7,)), ((3, 4, 6), (6,)), ((3, 4, 6), (4, 6)),
            ((2, 3, 4, 5), (4, 5)), ((2, 3, 4, 5), (3, 4, 5)), ((3, 1), (1,)), ((9,), (9,))]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,normalized_shape", LN_CASES)
@pytest.mark.parametrize("affine", AFFINE)
def test_layer_norm_forward_backward(dtype, shape, normalized_shape, affine):
    ns = (normalized_shape,) if isinstance(normalized_shape, int) else normalized_shape
    x = randn(*shape, dtype=dtype, scale=3.0, offset=1.5)
    w = randn(*ns, dtype=dtype, seed=11) * 0.5 + 1 if "weight" in affine else None
    b = randn(*ns, dtype=dtype, seed=12) if "bias" in affine else None
    xa, wa, ba = leaf(x), leaf(w), leaf(b)
    xb, wb, bb = leaf(x), leaf(w), leaf(b)
    y = F.layer_norm(xa, normalized_shape, wa, ba, 1e-5)
    r = TF.layer_norm(xb, ns, wb, bb, 1e-5)
    assert_close(y, r)
    up = randn(*shape, dtype=dtype, seed=31)
    cond = rstd_max(x.reshape(-1, math.prod(ns)))
    _compare_grads(grads_of(y, up, xa, wa, ba), grads_of(r, up, xb, wb, bb), cond)


# ----------------------------------------------------------------------------- group norm
GN_CASES = [((4, 6), 1), ((4, 6), 3), ((4, 6), 6), ((3, 6, 5), 2), ((3, 6, 5), 6),
            ((2, 6, 3, 5), 1), ((2, 6, 3, 5), 3), ((2, 6, 3, 5), 6), ((2, 4, 3, 2, 3), 2)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,groups", GN_CASES)
@pytest.mark.parametrize("affine", ["weight+bias", "weight", "none"])
def test_group_norm_forward_backward(dtype, shape, groups, affine):
    c = shape[1]
    x = randn(*shape, dtype=dtype, scale=2.0, offset=-1.0)
    w, b = _affine(c, dtype, affine)
    xa, wa, ba = leaf(x), leaf(w), leaf(b)
    xb, wb, bb = leaf(x), leaf(w), leaf(b)
    y = F.group_norm(xa, groups, wa, ba, 1e-5)
    r = TF.group_norm(xb, groups, wb, bb, 1e-5)
    cond = rstd_max(x.reshape(shape[0] * groups, -1))
    wmax = 1.0 if w is None else w.abs().max().item()
    assert_close(y, r, scale=cond * x.abs().max().item() * wmax)
    if x[0, 0].numel() == 1 and groups == shape[1]:
        # one value per group: x̂ = 0 exactly, so y is β (torch is off by rounding × 1/√eps here)
        expected = torch.zeros_like(x) if b is None else b.expand_as(x)
        assert torch.equal(y, expected)
    up = randn(*shape, dtype=dtype, seed=32)
    _compare_grads(grads_of(y, up, xa, wa, ba), grads_of(r, up, xb, wb, bb), cond)


# ----------------------------------------------------------------------------- instance norm
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(3, 4, 7), (2, 3, 5, 6), (1, 2, 3, 3), (2, 3, 2, 3, 2)])
@pytest.mark.parametrize("affine", ["weight+bias", "none"])
@pytest.mark.parametrize("use_input_stats,with_running", [(True, True), (True, False), (False, True)])
def test_instance_norm_forward_backward(dtype, shape, affine, use_input_stats, with_running):
    c = shape[1]
    x = randn(*shape, dtype=dtype, scale=2.0, offset=0.3)
    w, b = _affine(c, dtype, affine)
    rm, rv = _running(c, dtype) if with_running else (None, None)
    ours_rm, ours_rv = (rm.clone(), rv.clone()) if with_running else (None, None)
    ref_rm, ref_rv = (rm.clone(), rv.clone()) if with_running else (None, None)
    xa, wa, ba = leaf(x), leaf(w), leaf(b)
    xb, wb, bb = leaf(x), leaf(w), leaf(b)
    y = F.instance_norm(xa, ours_rm, ours_rv, wa, ba, use_input_stats, 0.2, 1e-5)
    r = TF.instance_norm(xb, ref_rm, ref_rv, wb, bb, use_input_stats, 0.2, 1e-5)
    assert_close(y, r)
    if with_running:
        assert_close(ours_rm, ref_rm)
        assert_close(ours_rv, ref_rv)
        assert torch.equal(ours_rv, rv) != use_input_stats     # moved iff statistics were used
    up = randn(*shape, dtype=dtype, seed=33)
    cond = rstd_max(x.reshape(shape[0] * c, -1)) if use_input_stats else 1.0
    _compare_grads(grads_of(y, up, xa, wa, ba), grads_of(r, up, xb, wb, bb), cond)


# ----------------------------------------------------------------------------- RMS norm
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,normalized_shape", [((5, 7), 7), ((3, 4, 6), (4, 6)), ((2, 3, 5), (5,)),
                                                    ((4, 1), (1,))])
@pytest.mark.parametrize("eps", [None, 1e-6, 0.5])
@pytest.mark.parametrize("with_weight", [True, False])
def test_rms_norm_forward_backward(dtype, shape, normalized_shape, eps, with_weight):
    ns = (normalized_shape,) if isinstance(normalized_shape, int) else normalized_shape
    x = randn(*shape, dtype=dtype, scale=0.5, offset=0.2)
    w = randn(*ns, dtype=dtype, seed=13) + 1 if with_weight else None
    xa, wa = leaf(x), leaf(w)
    xb, wb = leaf(x), leaf(w)
    y = F.rms_norm(xa, normalized_shape, wa, eps)
    r = TF.rms_norm(xb, ns, wb, eps)
    assert_close(y, r)
    up = randn(*shape, dtype=dtype, seed=34)
    _compare_grads(grads_of(y, up, xa, wa), grads_of(r, up, xb, wb), 1.0)


def test_rms_norm_eps_none_is_dtype_eps():
    """eps=None means finfo(dtype).eps: visible on an input whose mean square is of that order."""
    for dtype in DTYPES:
        tiny = math.sqrt(torch.finfo(dtype).eps)
        x = torch.full((2, 4), tiny, dtype=dtype)
        y = F.rms_norm(x, (4,))
        expected = tiny / math.sqrt(tiny * tiny + torch.finfo(dtype).eps)      # = 1/√2
        torch.testing.assert_close(y, torch.full_like(x, expected), atol=1e-6, rtol=0)
        assert_close(y, TF.rms_norm(x, (4,)))


# ----------------------------------------------------------------------------- layouts
def test_non_contiguous_inputs_match_torch():
    x = randn(3, 4, 5, 6)
    cl = x.to(memory_format=torch.channels_last)
    assert_close(F.batch_norm(cl, None, None, training=True), TF.batch_norm(x, None, None, training=True))
    assert_close(F.group_norm(cl, 2), TF.group_norm(x, 2))
    assert_close(F.instance_norm(cl), TF.instance_norm(x))
    t = x.transpose(1, 3)                         # (3, 6, 5, 4), not contiguous
    assert_close(F.layer_norm(t, (5, 4)), TF.layer_norm(t.contiguous(), (5, 4)))
    assert_close(F.rms_norm(t, (4,)), TF.rms_norm(t.contiguous(), (4,)))
    s = x[:, :, ::2, 1:]                          # strided slice
    assert_close(F.batch_norm(s, None, None, training=True),
                 TF.batch_norm(s.contiguous(), None, None, training=True))
    # gradients flow back in the caller's layout
    xa = leaf(cl)
    F.batch_norm(xa, None, None, training=True).backward(randn(3, 4, 5, 6, seed=1))
    xb = leaf(x)
    TF.batch_norm(xb, None, None, training=True).backward(randn(3, 4, 5, 6, seed=1))
    assert_close(xa.grad, xb.grad)


def test_input_is_not_modified():
    x = randn(4, 3, 5)
    before = x.clone()
    for fn in (lambda t: F.batch_norm(t, None, None, training=True), lambda t: F.layer_norm(t, (5,)),
               lambda t: F.group_norm(t, 3), lambda t: F.instance_norm(t), lambda t: F.rms_norm(t, 5),
               lambda t: F.dropout(t, 0.5), lambda t: F.gaussian_noise(t, 1.0)):
        fn(x)
        assert torch.equal(x, before)
    x2 = randn(4, 5)            # 2-D: layer/RMS norm hand the input itself to the engine
    before = x2.clone()
    for grad in (True, False):
        with torch.set_grad_enabled(grad):
            for fn in (lambda t: F.layer_norm(t, (5,), randn(5), randn(5, seed=1)),
                       lambda t: F.rms_norm(t, (5,), randn(5))):
                fn(x2)
                assert torch.equal(x2, before)


def test_two_dim_non_contiguous_layer_and_rms_norm_match_torch():
    """A transposed (rows, m) input goes to the engine as it is (no reshape): same values and
    gradients as torch, in float64."""
    x = randn(6, 5).t()
    w, b, up = randn(6, seed=1), randn(6, seed=2), randn(6, 5, seed=3).t()
    for fn in (lambda m, t, w, b: m.layer_norm(t, (6,), w, b), lambda m, t, w, b: m.rms_norm(t, (6,), w) + b):
        ours, ref = [(leaf(x), leaf(w), leaf(b)) for _ in range(2)]
        y, r = fn(F, *ours), fn(TF, *ref)
        assert_close(y, r)
        for g, h in zip(grads_of(y, up, *ours), grads_of(r, up, *ref), strict=True):
            assert_close(g, h)


# ----------------------------------------------------------------------------- dropout
N_STAT = 400_000


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_dropout_fraction_dropped(p):
    torch.manual_seed(1)
    y = F.dropout(torch.ones(N_STAT), p)
    frac = (y == 0).double().mean().item()
    sigma = math.sqrt(p * (1 - p) / N_STAT)
    assert abs(frac - p) < 5 * sigma, (frac, p)
    # each half of the tensor too (no position-dependent mask)
    for half in y.chunk(2):
        assert abs((half == 0).double().mean().item() - p) < 5 * sigma * math.sqrt(2)
    # inverted dropout keeps the expected value
    assert abs(y.double().mean().item() - 1.0) < 5 * math.sqrt(p / (1 - p) / N_STAT)


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5, 0.75])
def test_dropout_survivors_scaled_exactly(p):
    x = randn(1000, 50) + 3.0                       # no zeros in x
    y = F.dropout(x, p)
    kept = y != 0
    assert 0 < kept.sum() < x.numel()
    assert torch.equal(y[kept], x[kept] * (1 / (1 - p)))      # float64: exactly x/(1 − p)
    x32 = x.float()
    y32 = F.dropout(x32, p)
    kept32 = y32 != 0
    ratio = y32[kept32].double() / x32[kept32].double()
    torch.testing.assert_close(ratio, torch.full_like(ratio, 1 / (1 - p)), atol=0, rtol=3e-7)


@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout_eval_and_edge_probabilities(dtype):
    x = randn(50, 40, dtype=dtype)
    assert torch.equal(F.dropout(x, 0.5, training=False), x)
    assert torch.equal(F.dropout(x, 1.0, training=False), x)
    assert torch.equal(F.dropout(x, 0.0), x)
    y = F.dropout(x, 1.0)
    assert torch.equal(y, torch.zeros_like(x))
    xa = leaf(x)
    F.dropout(xa, 1.0).sum().backward()
    assert torch.equal(xa.grad, torch.zeros_like(x))
    xa = leaf(x)
    F.dropout(xa, 0.0).backward(torch.ones_like(x))
    assert torch.equal(xa.grad, torch.ones_like(x))


@pytest.mark.parametrize("p", [0.2, 0.6])
def test_dropout_gradient_is_the_mask(p):
    x = leaf(randn(300, 20) + 3.0)
    y = F.dropout(x, p)
    up = randn(300, 20, seed=5)
    y.backward(up)
    mask = (y != 0).double() / (1 - p)
    torch.testing.assert_close(x.grad, up * mask, atol=1e-12, rtol=1e-12)
    assert torch.equal(x.grad == 0, y == 0)


def test_dropout_fresh_mask_each_call_and_seeded():
    x = torch.ones(10_000)
    a, b = F.dropout(x, 0.5), F.dropout(x, 0.5)
    assert not torch.equal(a, b)
    torch.manual_seed(123)
    c = F.dropout(x, 0.5)
    torch.manual_seed(123)
    assert torch.equal(c, F.dropout(x, 0.5))


# ----------------------------------------------------------------------------- gaussian noise
@pytest.mark.parametrize("sigma", [0.05, 1.0, 3.0])
@pytest.mark.parametrize("dtype", DTYPES)
def test_gaussian_noise_statistics(sigma, dtype):
    torch.manual_seed(2)
    x = torch.linspace(-2, 2, N_STAT, dtype=dtype)
    noise = (F.gaussian_noise(x, sigma) - x).double()
    assert abs(noise.mean().item()) < 5 * sigma / math.sqrt(N_STAT)
    assert abs(noise.std().item() / sigma - 1) < 5 / math.sqrt(2 * N_STAT)
    within = (noise.abs() < sigma).double().mean().item()          # normal: 68.27 % within 1σ
    assert abs(within - 0.682689) < 5 * math.sqrt(0.6827 * 0.3173 / N_STAT)


def test_gaussian_noise_eval_identity_and_gradient():
    x = randn(20, 30)
    assert torch.equal(F.gaussian_noise(x, 2.0, training=False), x)
    assert torch.equal(F.gaussian_noise(x, 0.0), x)
    assert not torch.equal(F.gaussian_noise(x, 0.1), x)
    xa = leaf(x)
    up = randn(20, 30, seed=4)
    F.gaussian_noise(xa, 0.7).backward(up)
    assert torch.equal(xa.grad, up)



# ----------------------------------------------------------------------------- empty inputs
EMPTY_CASES = {   # name: (function of the library module F or TF, input shape, parameter shape)
    "bn-eval-N0": (lambda m, x, w, b: m.batch_norm(x, torch.zeros(4, dtype=x.dtype), torch.ones(4, dtype=x.dtype),
                                                   w, b, False), (0, 4), (4,)),
    "bn-eval-N0-L": (lambda m, x, w, b: m.batch_norm(x, torch.zeros(4, dtype=x.dtype), torch.ones(4, dtype=x.dtype),
                                                     w, b, False), (0, 4, 3), (4,)),
    "bn-eval-L0": (lambda m, x, w, b: m.batch_norm(x, torch.zeros(4, dtype=x.dtype), torch.ones(4, dtype=x.dtype),
                                                   w, b, False), (2, 4, 0), (4,)),
    "ln-N0": (lambda m, x, w, b: m.layer_norm(x, (4,), w, b), (0, 4), (4,)),
    "ln-N0-2d": (lambda m, x, w, b: m.layer_norm(x, (4,), w, b), (0, 3, 4), (4,)),
    "ln-M0": (lambda m, x, w, b: m.layer_norm(x, (0,), w, b), (3, 0), (0,)),
    "gn-N0": (lambda m, x, w, b: m.group_norm(x, 2, w, b), (0, 4), (4,)),
    "gn-N0-L": (lambda m, x, w, b: m.group_norm(x, 2, w, b), (0, 4, 5), (4,)),
    "gn-L0": (lambda m, x, w, b: m.group_norm(x, 2, w, b), (3, 4, 0), (4,)),
    # torch 2.13's instance_norm raises IndexError on an empty batch with weight/bias: none here
    "in-N0": (lambda m, x, w, b: m.instance_norm(x) * w.view(1, 4, 1) + b.view(1, 4, 1), (0, 4, 5), (4,)),
    "in-L0": (lambda m, x, w, b: m.instance_norm(x, weight=w, bias=b), (2, 4, 0), (4,)),
    "rms-N0": (lambda m, x, w, b: m.rms_norm(x, (4,), w) + b, (0, 4), (4,)),
    "rms-M0": (lambda m, x, w, b: m.rms_norm(x, (0,), w) + b, (3, 0), (0,)),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(EMPTY_CASES))
def test_empty_inputs_give_torchs_empty_result(name, dtype):
    """No error from inside a reshape: an empty input gives an empty output of torch's shape and
    dtype, and the parameter gradients are torch's (zeros: nothing was summed)."""
    fn, shape, pshape = EMPTY_CASES[name]
    x = torch.empty(shape, dtype=dtype)
    w, b = randn(*pshape, dtype=dtype, seed=1), randn(*pshape, dtype=dtype, seed=2)
    y = fn(F, leaf(x), leaf(w), leaf(b))
    r = fn(TF, leaf(x), leaf(w), leaf(b))
    assert y.shape == r.shape == x.shape and y.dtype == r.dtype == dtype
    args = (leaf(x), leaf(w), leaf(b))
    grads = torch.autograd.grad(fn(F, *args).sum(), args, materialize_grads=True)
    for g, t in zip(grads, args, strict=True):
        assert g.shape == t.shape and g.dtype == dtype
        assert torch.equal(g, torch.zeros_like(t))


@pytest.mark.parametrize("make,shape", [(lambda m: m.BatchNorm1d(4).eval(), (0, 4)),
                                        (lambda m: m.BatchNorm2d(4).eval(), (0, 4, 2, 3)),
                                        (lambda m: m.BatchNorm3d(4).eval(), (0, 4, 2, 2, 3)),
                                        (lambda m: m.LayerNorm((4, 3)), (0, 4, 3)),
                                        (lambda m: m.GroupNorm(2, 4), (0, 4, 5)),
                                        (lambda m: m.RMSNorm(3), (0, 4, 3)),
                                        (lambda m: m.InstanceNorm1d(4), (0, 4, 5)),
                                        (lambda m: m.InstanceNorm2d(4), (0, 4, 2, 3))],
                         ids=["bn1d-eval", "bn2d-eval", "bn3d-eval", "ln", "gn", "rms", "in1d", "in2d"])
def test_empty_batch_through_modules_matches_torch(make, shape):
    x = torch.empty(shape)
    y, r = make(nk)(x), make(nn)(x)
    assert y.shape == r.shape == x.shape


@pytest.mark.parametrize("make_eps", [np.float32, np.float64, float], ids=["np.float32", "np.float64", "float"])
def test_numpy_scalar_eps_and_momentum_like_torch(make_eps):
    """eps/momentum from numpy (a config file, np.linspace) are numbers to torch too."""
    x = randn(4, 3, 5, dtype=torch.float32)
    eps, momentum = make_eps(1e-3), make_eps(0.25)
    assert_close(F.layer_norm(x, (5,), eps=eps), TF.layer_norm(x, (5,), eps=eps))
    assert_close(F.group_norm(x, 3, eps=eps), TF.group_norm(x, 3, eps=eps))
    rm, rv, rm2, rv2 = torch.zeros(3), torch.ones(3), torch.zeros(3), torch.ones(3)
    assert_close(F.batch_norm(x, rm, rv, training=True, momentum=momentum, eps=eps),
                 TF.batch_norm(x, rm2, rv2, training=True, momentum=float(momentum), eps=float(eps)))
    assert_close(rm, rm2)
    assert_close(rv, rv2)
    m = nk.BatchNorm1d(3, eps=eps, momentum=momentum)
    assert m.eps == eps and m.momentum == momentum
