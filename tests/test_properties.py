"""Property tests (hypothesis): random shapes, batch sizes from 2, both dtypes, input scales from
1e-4 to 1e4, offsets, constant inputs (variance 0), compared with torch.

Tolerance. Normalizing a group of values whose spread is small next to their size cancels digits:
the rounding of the mean, about eps_dtype·max|x|, is divided by √(var + eps). Both torch and normkit
suffer it (each in its own way), so the comparison allows K·eps_dtype·cond with
cond = max over groups of max|x| / √(var + eps) (≈ 1–5 for ordinary data, large only for nearly
constant groups); gradients also carry one more factor 1/√(var + eps).
"""
import math

import torch
import torch.nn.functional as TF
from hypothesis import assume, given
from hypothesis import strategies as st

import normkit.functional as F
from normkit.regularize import soft_threshold

from .conftest import leaf

K = 32
# normkit turns on flush-to-zero (set_flush_denormal), so hypothesis must not draw subnormals.
DTYPE = st.sampled_from([torch.float32, torch.float64])
SCALE = st.sampled_from([1e-4, 1e-3, 1e-2, 1.0, 1e2, 1e3, 1e4])
EPS = st.sampled_from([1e-5, 1e-3])


@st.composite
def inputs(draw, min_dims=2, max_dims=5, min_spatial=1):
    """(x, constant?) with x of shape (N ≥ 2, C, *spatial), random scale and offset, maybe constant."""
    n = draw(st.integers(2, 6))
    c = draw(st.integers(1, 5))
    spatial = draw(st.lists(st.integers(min_spatial, 5), min_size=max(0, min_dims - 2),
                            max_size=max_dims - 2))
    dtype, scale = draw(DTYPE), draw(SCALE)
    offset = draw(st.floats(-3, 3, allow_subnormal=False)) * scale
    seed = draw(st.integers(0, 2**31 - 1))
    shape = (n, c, *spatial)
    if draw(st.booleans()) and draw(st.booleans()):          # a quarter of the cases: constant input
        value = draw(st.sampled_from([0.0, 1.0, -7.25, 0.1, 1234.567])) * scale
        return torch.full(shape, value, dtype=dtype), True
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64) * scale + offset
    return x.to(dtype), False


def _cond(groups, eps):
    """max over rows of max|x| / √(var + eps), and max 1/√(var + eps) (float64, exact-ish)."""
    g = groups.detach().double()
    inv = (g.var(1, unbiased=False) + eps).rsqrt()
    return max(1.0, (g.abs().amax(1) * inv).max().item()), max(1.0, inv.max().item())


def _check(ours, ref, cond, extra=1.0):
    assert ours.shape == ref.shape and ours.dtype == ref.dtype
    assert torch.isfinite(ours).all(), "normkit produced inf/NaN"
    u = torch.finfo(ref.dtype).eps
    scale = max(1.0, ref.detach().abs().max().item())
    tol = K * u * cond * extra * scale
    diff = (ours.detach().double() - ref.detach().double()).abs().max().item()
    assert diff <= tol, f"max abs diff {diff:.3e} > tol {tol:.3e} (cond {cond:.1f})"


def _forward_backward(fn_ours, fn_ref, x, params, cond, rstd, seed=0):
    """Same input, parameters and upstream gradient through both; compare output and gradients."""
    xa, xb = leaf(x), leaf(x)
    pa, pb = [leaf(p) for p in params], [leaf(p) for p in params]
    y, r = fn_ours(xa, *pa), fn_ref(xb, *pb)
    _check(y, r, cond)
    up = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(x.dtype)
    ga = torch.autograd.grad(y, [xa, *pa], up)
    gb = torch.autograd.grad(r, [xb, *pb], up)
    for a, b in zip(ga, gb, strict=True):
        assert torch.isfinite(a).all()
        _check(a, b, cond, extra=4 * rstd)


def _affine_params(c, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    w = (torch.rand(c, generator=g, dtype=torch.float64) + 0.5).to(dtype)
    b = torch.randn(c, generator=g, dtype=torch.float64).to(dtype)
    return w, b


@given(inputs(), EPS, st.sampled_from([0.0, 0.1, 1.0]), st.booleans())
def test_batch_norm_properties(xc, eps, momentum, affine):
    x, constant = xc
    n, c = x.shape[:2]
    cond, rstd = _cond(x.transpose(0, 1).reshape(c, -1), eps)
    params = _affine_params(c, x.dtype, 1) if affine else ()
    rm_a, rv_a = torch.zeros(c, dtype=x.dtype), torch.ones(c, dtype=x.dtype)
    rm_b, rv_b = rm_a.clone(), rv_a.clone()
    _forward_backward(lambda t, *p: F.batch_norm(t, rm_a, rv_a, *p, training=True, momentum=momentum, eps=eps),
                      lambda t, *p: TF.batch_norm(t, rm_b, rv_b, *p, training=True, momentum=momentum, eps=eps),
                      x, params, cond, rstd)
    scale = max(1.0, x.abs().max().item() ** 2)
    u = torch.finfo(x.dtype).eps
    assert (rm_a - rm_b).abs().max() <= K * u * max(1.0, x.abs().max().item())
    assert (rv_a - rv_b).abs().max() <= K * u * scale
    if constant:
        assert torch.equal(rv_a, torch.ones(c, dtype=x.dtype) * (1 - momentum)) or rv_a.abs().max() <= K * u * scale


@given(inputs(), EPS, st.data())
def test_layer_norm_properties(xc, eps, data):
    x, _ = xc
    k = data.draw(st.integers(1, x.dim() - 1), label="normalized dims")
    ns = tuple(x.shape[-k:])
    m = math.prod(ns)
    cond, rstd = _cond(x.reshape(-1, m), eps)
    g = torch.Generator().manual_seed(3)
    w = (torch.rand(ns, generator=g, dtype=torch.float64) + 0.5).to(x.dtype)
    b = torch.randn(ns, generator=g, dtype=torch.float64).to(x.dtype)
    _forward_backward(lambda t, w, b: F.layer_norm(t, ns, w, b, eps), lambda t, w, b: TF.layer_norm(t, ns, w, b, eps),
                      x, (w, b), cond, rstd)
    _forward_backward(lambda t: F.layer_norm(t, ns, eps=eps), lambda t: TF.layer_norm(t, ns, eps=eps),
                      x, (), cond, rstd)


@given(inputs(), EPS, st.data())
def test_group_norm_properties(xc, eps, data):
    x, _ = xc
    n, c = x.shape[:2]
    groups = data.draw(st.sampled_from([d for d in range(1, c + 1) if c % d == 0]), label="groups")
    cond, rstd = _cond(x.reshape(n * groups, -1), eps)
    _forward_backward(lambda t, w, b: F.group_norm(t, groups, w, b, eps),
                      lambda t, w, b: TF.group_norm(t, groups, w, b, eps),
                      x, _affine_params(c, x.dtype, 4), cond, rstd)


@given(inputs(min_dims=3, min_spatial=2), EPS, st.booleans())
def test_instance_norm_properties(xc, eps, affine):
    x, _ = xc
    n, c = x.shape[:2]
    cond, rstd = _cond(x.reshape(n * c, -1), eps)
    params = _affine_params(c, x.dtype, 5) if affine else ()
    rm_a, rv_a = torch.zeros(c, dtype=x.dtype), torch.ones(c, dtype=x.dtype)
    rm_b, rv_b = rm_a.clone(), rv_a.clone()
    _forward_backward(lambda t, *p: F.instance_norm(t, rm_a, rv_a, *p, eps=eps),
                      lambda t, *p: TF.instance_norm(t, rm_b, rv_b, *p, eps=eps), x, params, cond, rstd)
    u = torch.finfo(x.dtype).eps
    assert (rm_a - rm_b).abs().max() <= K * u * max(1.0, x.abs().max().item())
    assert (rv_a - rv_b).abs().max() <= K * u * max(1.0, x.abs().max().item() ** 2)


@given(inputs(), st.sampled_from([None, 1e-6, 1e-3]), st.data())
def test_rms_norm_properties(xc, eps, data):
    x, _ = xc
    k = data.draw(st.integers(1, x.dim() - 1), label="normalized dims")
    ns = tuple(x.shape[-k:])
    e = torch.finfo(x.dtype).eps if eps is None else eps
    ms = x.double().reshape(-1, math.prod(ns)).pow(2).mean(1)
    rstd = max(1.0, (ms + e).rsqrt().max().item())
    w = (torch.rand(ns, generator=torch.Generator().manual_seed(6), dtype=torch.float64) + 0.5).to(x.dtype)
    _forward_backward(lambda t, w: F.rms_norm(t, ns, w, eps), lambda t, w: TF.rms_norm(t, ns, w, eps),
                      x, (w,), 1.0, min(rstd, 1e3))


@given(inputs(), st.sampled_from([1e-3, 1e-2, 0.5, 1.0, 10.0, 1e3]), st.floats(-1e3, 1e3, allow_subnormal=False))
def test_normalization_ignores_shift_and_scale_of_the_input(xc, a, b):
    """With eps = 0, normalizing a·x + b (a > 0) gives the same x̂ as normalizing x: float64 only."""
    x, constant = xc
    assume(not constant)
    x = x.double() / x.abs().max()                               # O(1) values, positive spread
    n, c = x.shape[:2]
    spread = x.transpose(0, 1).reshape(c, -1).std(1, unbiased=False).min().item()
    assume(spread > 1e-3 and x[0].numel() > 1)
    shifted = a * x + b * a
    for fn in (lambda t: F.batch_norm(t, None, None, training=True, eps=0.0),
               lambda t: F.layer_norm(t, tuple(t.shape[1:]), eps=0.0)):
        torch.testing.assert_close(fn(shifted), fn(x), atol=1e-8 / spread, rtol=0)


@given(inputs(), st.floats(0.0, 1.0, allow_subnormal=False))
def test_dropout_values_are_zero_or_scaled(xc, p):
    x, _ = xc
    y = F.dropout(x, p)
    assert y.shape == x.shape and y.dtype == x.dtype
    if p == 1.0:
        assert torch.equal(y, torch.zeros_like(x))
        return
    kept = y != 0
    scaled = x * (1 / (1 - p))                  # float64 exact; float32 within one rounding of the scale
    u = 0.0 if x.dtype == torch.float64 else 2 * torch.finfo(x.dtype).eps
    torch.testing.assert_close(y[kept], scaled[kept], rtol=u, atol=0)
    assert (y[~kept] == 0).all()
    assert torch.equal(F.dropout(x, p, training=False), x)


@given(inputs(), st.floats(0.0, 5.0, allow_subnormal=False))
def test_soft_threshold_is_softshrink(xc, t):
    x, _ = xc
    assert torch.equal(soft_threshold(x, t), TF.softshrink(x, t))
