"""normkit.manual (hand-derived backward, no autograd) against torch's autograd, and
torch.autograd.gradcheck on every differentiable normkit.functional function."""
import pytest
import torch
import torch.nn.functional as TF
from torch.autograd import gradcheck

import normkit.functional as F
from normkit import manual

from .conftest import DTYPES, assert_close, leaf, randn

CASES = [("batch", manual.batch_norm_forward, manual.batch_norm_backward),
         ("layer", manual.layer_norm_forward, manual.layer_norm_backward)]
SHAPES = [(2, 1), (4, 3), (16, 7), (5, 33)]


def _torch_forward(kind, x, gamma, beta, eps):
    if kind == "batch":
        return TF.batch_norm(x, None, None, gamma, beta, training=True, eps=eps)
    return TF.layer_norm(x, (x.shape[1],), gamma, beta, eps)


def _rel_error(a, b):
    """max|a − b| relative to the size of the gradients (floored at 1: a true 0 stays comparable)."""
    return (a - b).abs().max().item() / max(1.0, a.abs().max().item(), b.abs().max().item())


def _inputs(shape, dtype, seed=0):
    n, d = shape
    x = randn(n, d, dtype=dtype, scale=3.0, offset=1.5, seed=seed)
    gamma = randn(d, dtype=dtype, seed=seed + 1) * 0.5 + 1.0
    beta = randn(d, dtype=dtype, seed=seed + 2)
    dout = randn(n, d, dtype=dtype, seed=seed + 3)
    return x, gamma, beta, dout


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kind,forward,backward", CASES, ids=[c[0] for c in CASES])
def test_manual_forward_matches_torch(kind, forward, backward, shape, dtype):
    x, gamma, beta, _ = _inputs(shape, dtype)
    out, cache = forward(x, gamma, beta, 1e-5)
    assert_close(out, _torch_forward(kind, x, gamma, beta, 1e-5))
    out2, _ = forward(x, gamma, beta, eps=0.3)                # eps is honoured
    assert_close(out2, _torch_forward(kind, x, gamma, beta, 0.3))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kind,forward,backward", CASES, ids=[c[0] for c in CASES])
def test_manual_backward_matches_torch_autograd(kind, forward, backward, shape):
    x, gamma, beta, dout = _inputs(shape, torch.float64)
    out, cache = forward(x, gamma, beta)
    with torch.no_grad():                                     # really no autograd inside
        dx, dgamma, dbeta = backward(dout, cache)
    assert not (dx.requires_grad or dgamma.requires_grad or dbeta.requires_grad)
    xa, ga, ba = leaf(x), leaf(gamma), leaf(beta)
    _torch_forward(kind, xa, ga, ba, 1e-5).backward(dout)
    assert dx.shape == x.shape and dgamma.shape == gamma.shape and dbeta.shape == beta.shape
    assert _rel_error(dx, xa.grad) < 1e-8
    assert _rel_error(dgamma, ga.grad) < 1e-8
    assert _rel_error(dbeta, ba.grad) < 1e-8


@pytest.mark.parametrize("kind,forward,backward", CASES, ids=[c[0] for c in CASES])
def test_manual_backward_float32(kind, forward, backward):
    x, gamma, beta, dout = _inputs((8, 5), torch.float32)
    dx, dgamma, dbeta = backward(dout, forward(x, gamma, beta)[1])
    xa, ga, ba = leaf(x), leaf(gamma), leaf(beta)
    _torch_forward(kind, xa, ga, ba, 1e-5).backward(dout)
    assert_close(dx, xa.grad, factor=4)
    assert_close(dgamma, ga.grad, factor=4)
    assert_close(dbeta, ba.grad, factor=4)


@pytest.mark.parametrize("kind,forward,backward", CASES, ids=[c[0] for c in CASES])
def test_manual_backward_finite_differences(kind, forward, backward):
    """Central differences of L = Σ dout·out, independent of any autograd."""
    x, gamma, beta, dout = _inputs((4, 3), torch.float64, seed=5)
    dx, dgamma, dbeta = backward(dout, forward(x, gamma, beta)[1])

    def numeric(t):
        grad, h = torch.zeros_like(t), 1e-6
        for i in range(t.numel()):
            flat = t.view(-1)
            old = flat[i].item()
            flat[i] = old + h
            plus = (forward(x, gamma, beta)[0] * dout).sum()
            flat[i] = old - h
            minus = (forward(x, gamma, beta)[0] * dout).sum()
            flat[i] = old
            grad.view(-1)[i] = (plus - minus) / (2 * h)
        return grad

    for analytic, t in ((dx, x), (dgamma, gamma), (dbeta, beta)):
        torch.testing.assert_close(analytic, numeric(t), atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize("kind,forward,backward", CASES, ids=[c[0] for c in CASES])
def test_manual_backward_removes_mean_and_xhat_directions(kind, forward, backward):
    """dx ⟂ 1 and dx ⟂ x̂ inside every group: normalization is blind to shifts and scalings."""
    x, gamma, beta, dout = _inputs((9, 6), torch.float64, seed=8)
    out, cache = forward(x, gamma, beta, eps=0.0)      # with eps > 0, dx ⟂ x̂ holds only nearly
    dx, _, _ = backward(dout, cache)
    axis = 0 if kind == "batch" else 1
    xhat = cache[0]
    torch.testing.assert_close(dx.sum(axis), torch.zeros(dx.shape[1 - axis], dtype=torch.float64),
                               atol=1e-12, rtol=0)
    torch.testing.assert_close((dx * xhat).sum(axis), torch.zeros(dx.shape[1 - axis], dtype=torch.float64),
                               atol=1e-10, rtol=0)


@pytest.mark.parametrize("kind,forward,backward", CASES, ids=[c[0] for c in CASES])
def test_manual_equals_functional_autograd(kind, forward, backward):
    """The modules' closed-form backward (normkit.functional) and the manual one agree."""
    x, gamma, beta, dout = _inputs((6, 4), torch.float64, seed=11)
    dx, dgamma, dbeta = backward(dout, forward(x, gamma, beta)[1])
    xa, ga, ba = leaf(x), leaf(gamma), leaf(beta)
    if kind == "batch":
        y = F.batch_norm(xa, None, None, ga, ba, training=True)
    else:
        y = F.layer_norm(xa, 4, ga, ba)
    y.backward(dout)
    assert _rel_error(xa.grad, dx) < 1e-12
    assert _rel_error(ga.grad, dgamma) < 1e-12
    assert _rel_error(ba.grad, dbeta) < 1e-12


# ----------------------------------------------------------------------------- gradcheck
def _p(*shape, seed):
    return leaf(randn(*shape, seed=seed) * 0.5 + 1.0)


GRADCHECK = {
    "batch_norm-train-NC": (lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True), (5, 3)),
    "batch_norm-train-NCHW": (lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True), (3, 2, 2, 3)),
    "batch_norm-eval": (lambda x, w, b: F.batch_norm(
        x, torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64),
        torch.tensor([0.5, 2.0, 1.5], dtype=torch.float64), w, b, training=False), (4, 3, 2)),
    "instance_norm": (lambda x, w, b: F.instance_norm(x, weight=w, bias=b), (2, 3, 4)),
    "group_norm-G1": (lambda x, w, b: F.group_norm(x, 1, w, b), (2, 3, 4)),
    "group_norm-G2": (lambda x, w, b: F.group_norm(x, 2, w, b), (2, 4, 2, 2)),
    "group_norm-GC": (lambda x, w, b: F.group_norm(x, 4, w, b), (2, 4, 3)),
}


@pytest.mark.parametrize("name", list(GRADCHECK))
def test_gradcheck_channel_norms(name):
    fn, shape = GRADCHECK[name]
    x = leaf(randn(*shape, scale=2.0, offset=0.5, seed=1))
    c = shape[1]
    assert gradcheck(fn, (x, _p(c, seed=2), _p(c, seed=3)))
    assert gradcheck(lambda x: fn(x, None, None), (x,))              # no affine
    assert gradcheck(lambda x, b: fn(x, None, b), (x, _p(c, seed=4)))  # bias only


@pytest.mark.parametrize("normalized_shape", [(4,), (3, 4)])
def test_gradcheck_layer_and_rms_norm(normalized_shape):
    x = leaf(randn(2, 3, 4, scale=2.0, offset=-0.5, seed=6))
    w, b = _p(*normalized_shape, seed=7), _p(*normalized_shape, seed=8)
    assert gradcheck(lambda x, w, b: F.layer_norm(x, normalized_shape, w, b), (x, w, b))
    assert gradcheck(lambda x, b: F.layer_norm(x, normalized_shape, None, b), (x, b))
    assert gradcheck(lambda x: F.layer_norm(x, normalized_shape), (x,))
    assert gradcheck(lambda x, w: F.rms_norm(x, normalized_shape, w), (x, w))
    assert gradcheck(lambda x: F.rms_norm(x, normalized_shape, eps=1e-3), (x,))


def test_gradcheck_dropout_and_noise():
    x = leaf(randn(4, 5, seed=9))

    def seeded(fn):
        def run(t):
            torch.manual_seed(0)          # the same mask / noise at every evaluation
            return fn(t)
        return run

    assert gradcheck(seeded(lambda t: F.dropout(t, 0.4)), (x,))
    assert gradcheck(seeded(lambda t: F.gaussian_noise(t, 0.3)), (x,))


def test_gradcheck_catches_a_wrong_backward():
    """gradcheck is not vacuous here: a backward that forgets the mean term fails it."""
    class Wrong(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            out, cache = manual.layer_norm_forward(x, torch.ones(x.shape[1], dtype=x.dtype),
                                                   torch.zeros(x.shape[1], dtype=x.dtype))
            ctx.cache = cache
            return out

        @staticmethod
        def backward(ctx, dout):
            xhat, inv_std, _ = ctx.cache
            return inv_std * (dout - xhat * (dout * xhat).mean(1, keepdim=True))  # no mean(g)

    x = leaf(randn(3, 4, seed=10))
    with pytest.raises(RuntimeError, match="Jacobian mismatch"):
        gradcheck(Wrong.apply, (x,))
