"""Second order and forward mode through every normkit normalization, against torch in float64.

gradgradcheck checks normkit's double backward against finite differences; Hessian-vector products
(the pattern of gradient penalties and MAML), torch.func.jvp, forward_ad dual tensors and the full
Hessian w.r.t. (x, γ, β) in all four compositions of jacrev/jacfwd are compared with torch's own
functions on the same inputs (its Hessians by double backward: see the test on torch.func.hessian).
"""
import pytest
import torch
import torch.nn.functional as TF
from hypothesis import given
from hypothesis import strategies as st
from torch.autograd import gradgradcheck
from torch.autograd.forward_ad import dual_level, make_dual, unpack_dual

import normkit as nk
import normkit.functional as F

from .conftest import randn

D = torch.float64
# name: (normkit, torch, input shape, parameter shape); every one takes (x, weight, bias)
CASES = {
    "batch_norm": (lambda x, w, b: F.batch_norm(x, None, None, w, b, True),
                   lambda x, w, b: TF.batch_norm(x, None, None, w, b, True), (4, 3, 5), (3,)),
    "batch_norm-eval": (lambda x, w, b: F.batch_norm(x, torch.full((3,), 0.3, dtype=D), torch.full((3,), 2.0, dtype=D),
                                                     w, b, False),
                        lambda x, w, b: TF.batch_norm(x, torch.full((3,), 0.3, dtype=D), torch.full((3,), 2.0, dtype=D),
                                                      w, b, False), (4, 3, 5), (3,)),
    "layer_norm": (lambda x, w, b: F.layer_norm(x, (5,), w, b), lambda x, w, b: TF.layer_norm(x, (5,), w, b),
                   (4, 3, 5), (5,)),
    "layer_norm-2d": (lambda x, w, b: F.layer_norm(x, (3, 5), w, b), lambda x, w, b: TF.layer_norm(x, (3, 5), w, b),
                      (4, 3, 5), (3, 5)),
    "group_norm": (lambda x, w, b: F.group_norm(x, 3, w, b), lambda x, w, b: TF.group_norm(x, 3, w, b),
                   (4, 6, 5), (6,)),
    "instance_norm": (lambda x, w, b: F.instance_norm(x, weight=w, bias=b),
                      lambda x, w, b: TF.instance_norm(x, weight=w, bias=b), (2, 3, 2, 3), (3,)),
    "rms_norm": (lambda x, w, b: F.rms_norm(x, (5,), w) + b, lambda x, w, b: TF.rms_norm(x, (5,), w) + b,
                 (4, 3, 5), (5,)),
}


def _inputs(shape, pshape, seed=0):
    x = randn(*shape, scale=2.0, offset=0.5, seed=seed).requires_grad_()
    w = (randn(*pshape, seed=seed + 1) * 0.3 + 1.0).requires_grad_()
    b = randn(*pshape, seed=seed + 2).requires_grad_()
    return x, w, b


def _close(a, b):
    torch.testing.assert_close(a, b, atol=1e-10 * max(1.0, b.abs().max().item()), rtol=0)


@pytest.mark.parametrize("name", list(CASES))
def test_gradgradcheck(name):
    ours, _, shape, pshape = CASES[name]
    assert gradgradcheck(ours, _inputs(shape, pshape))


@pytest.mark.parametrize("name", list(CASES))
def test_hessian_vector_product_matches_torch(name):
    """∂/∂(x, γ, β) of ⟨∇L, v⟩ for L = Σ y³·c: second derivatives through x̂, 1/std, γ and dy."""
    ours, ref, shape, pshape = CASES[name]
    c = randn(*shape, seed=7)
    out = []
    for fn in (ours, ref):
        args = _inputs(shape, pshape)
        grads = torch.autograd.grad((fn(*args) ** 3 * c).sum(), args, create_graph=True)
        vs = [randn(*g.shape, seed=10 + i) for i, g in enumerate(grads)]
        out.append(torch.autograd.grad(grads, args, vs))
    for a, b in zip(*out, strict=True):
        _close(a, b)


@pytest.mark.parametrize("name", list(CASES))
def test_gradient_penalty_matches_torch(name):
    """WGAN-GP's pattern: the gradient norm w.r.t. the input, penalized, differentiated again."""
    ours, ref, shape, pshape = CASES[name]
    out = []
    for fn in (ours, ref):
        x, w, b = _inputs(shape, pshape)
        (gx,) = torch.autograd.grad((fn(x, w, b) * randn(*shape, seed=3)).sum(), x, create_graph=True)
        penalty = (gx.flatten(1).norm(dim=1) - 1).pow(2).mean()
        out.append(torch.autograd.grad(penalty, (x, w, b), materialize_grads=True))   # β: zero
    for a, b in zip(*out, strict=True):
        _close(a, b)


@pytest.mark.parametrize("name", list(CASES))
def test_forward_mode_matches_torch(name):
    ours, ref, shape, pshape = CASES[name]
    primals = tuple(t.detach() for t in _inputs(shape, pshape))
    tangents = tuple(randn(*t.shape, seed=20 + i) for i, t in enumerate(primals))
    y, ty = torch.func.jvp(ours, primals, tangents)
    r, tr = torch.func.jvp(ref, primals, tangents)
    _close(y, r)
    _close(ty, tr)
    with dual_level():                                   # torch.autograd.forward_ad as well
        dual = ours(make_dual(primals[0], tangents[0]), primals[1], primals[2])
        tx = unpack_dual(dual).tangent
    _close(tx, torch.func.jvp(lambda t: ref(t, *primals[1:]), primals[:1], tangents[:1])[1])


def _cube_sum(fn):
    return lambda *a: (fn(*a) ** 3).sum()


def _hessian_reference(ref, primals):
    """torch's Hessian w.r.t. (x, γ, β) by its double backward (reverse over reverse)."""
    return torch.autograd.functional.hessian(_cube_sum(ref), primals)


ORDERS = {"hessian": torch.func.hessian,                                  # forward over reverse
          "rev-rev": lambda f, argnums: torch.func.jacrev(torch.func.jacrev(f, argnums), argnums),
          "rev-fwd": lambda f, argnums: torch.func.jacrev(torch.func.jacfwd(f, argnums), argnums),
          "fwd-fwd": lambda f, argnums: torch.func.jacfwd(torch.func.jacfwd(f, argnums), argnums)}


@pytest.mark.parametrize("order", list(ORDERS))
@pytest.mark.parametrize("name", list(CASES))
def test_full_hessian_matches_torch_in_every_mode(name, order):
    """Every block of the Hessian w.r.t. (x, γ, β), by all four compositions of torch.func."""
    ours, ref, shape, pshape = CASES[name]
    primals = tuple(t.detach() for t in _inputs(shape, pshape))
    got = ORDERS[order](_cube_sum(ours), argnums=(0, 1, 2))(*primals)
    want = _hessian_reference(ref, primals)
    for i in range(3):
        for j in range(3):
            _close(got[i][j], want[i][j])


@pytest.mark.parametrize("name", ["batch_norm", "layer_norm", "instance_norm"])
def test_torch_func_hessian_of_torch_itself_is_wrong_in_the_weight_input_block(name):
    """Why the reference above is torch's double backward, not torch.func.hessian of torch: in
    torch 2.13 that gets ∂²L/∂γ∂x wrong for these three (pytorch/functorch#534), while normkit's
    agrees with finite differences. If this fails, torch fixed it: torch.func.hessian of torch's
    functions can be the reference again."""
    ours, ref, shape, pshape = CASES[name]
    x, w, b = (t.detach() for t in _inputs(shape, pshape))
    loss = _cube_sum(ref)
    grad_w = lambda t: torch.func.grad(loss, argnums=1)(t, w, b)
    h, flat = 1e-6, x.flatten()
    steps = torch.eye(flat.numel(), dtype=D) * h
    numeric = torch.stack([(grad_w((flat + e).view_as(x)) - grad_w((flat - e).view_as(x))) / (2 * h)
                           for e in steps], dim=-1).view(*w.shape, *x.shape)
    theirs = torch.func.hessian(loss, argnums=(0, 1))(x, w, b)[1][0]
    mine = torch.func.hessian(_cube_sum(ours), argnums=(0, 1))(x, w, b)[1][0]
    torch.testing.assert_close(mine, numeric, atol=1e-6 * numeric.abs().max().item(), rtol=0)
    assert (theirs - numeric).abs().max() > 0.1 * numeric.abs().max()


@pytest.mark.parametrize("name", list(CASES))
def test_nested_jvp_and_reverse_over_forward_are_second_derivatives(name):
    """jvp of jvp gives vᵀHv and autograd through a forward_ad tangent gives Hv (no vmap involved:
    a Function's jvp alone would give a zero second derivative for the first, a stale one for
    the second)."""
    ours, ref, shape, pshape = CASES[name]
    x, w, b = (t.detach() for t in _inputs(shape, pshape))
    v = randn(*shape, seed=30)
    loss = lambda t: (ours(t, w, b) ** 3).sum()
    hv = torch.autograd.functional.hvp(lambda t: (ref(t, w, b) ** 3).sum(), x, v)[1]
    tangent = lambda t: torch.func.jvp(loss, (t,), (v,))[1]
    _close(torch.func.jvp(tangent, (x,), (v,))[1], (hv * v).sum())
    xa = x.clone().requires_grad_()
    with dual_level():
        t = unpack_dual(loss(make_dual(xa, v))).tangent
    _close(torch.autograd.grad(t, xa)[0], hv)


@pytest.mark.parametrize("name", ["batch_norm", "layer_norm", "group_norm", "rms_norm"])
def test_vmap_matches_torch(name):
    ours, ref, shape, pshape = CASES[name]
    primals = tuple(t.detach() for t in _inputs(shape, pshape))
    batch = torch.stack([primals[0], primals[0] * 2 + 1])
    _close(torch.func.vmap(lambda t: ours(t, *primals[1:]))(batch),
           torch.stack([ref(t, *primals[1:]) for t in batch]))


@pytest.mark.parametrize("make", [lambda m: m.BatchNorm2d(3), lambda m: m.InstanceNorm2d(3, affine=True),
                                  lambda m: m.GroupNorm(3, 3), lambda m: m.LayerNorm((2, 4))],
                         ids=["bn2d", "in2d", "gn", "ln"])
def test_modules_second_order_match_torch(make):
    """MAML-style: a gradient step on the module's own parameters, differentiated through."""
    x = randn(4, 3, 2, 4, seed=1)
    out = []
    for lib in (nk, torch.nn):
        m = make(lib).double()
        params = dict(m.named_parameters())
        loss = lambda p, m=m: (torch.func.functional_call(m, p, (x,)) ** 2 * x).sum()
        grads = torch.autograd.grad(loss(params), list(params.values()), create_graph=True)
        adapted = {k: v - 0.1 * g for (k, v), g in zip(params.items(), grads, strict=True)}
        out.append(torch.autograd.grad(loss(adapted), list(params.values())))
    for a, b in zip(*out, strict=True):
        _close(a, b)


@given(st.integers(2, 5), st.integers(1, 4), st.lists(st.integers(1, 4), min_size=0, max_size=2),
       st.sampled_from(["batch_norm", "layer_norm", "group_norm", "rms_norm", "instance_norm"]),
       st.integers(0, 2**16))
def test_hessian_vector_product_random_shapes(n, c, spatial, name, seed):
    shape = (n, c, *spatial)
    if name == "instance_norm" and (not spatial or torch.Size(spatial).numel() < 2):
        spatial = [*spatial, 2]
        shape = (n, c, *spatial)
    x = randn(*shape, scale=3.0, offset=1.0, seed=seed)
    v = randn(*shape, seed=seed + 1)
    tail = shape[1:]
    fns = {"batch_norm": (lambda t: F.batch_norm(t, None, None, training=True),
                          lambda t: TF.batch_norm(t, None, None, training=True)),
           "layer_norm": (lambda t: F.layer_norm(t, tail), lambda t: TF.layer_norm(t, tail)),
           "group_norm": (lambda t: F.group_norm(t, 1), lambda t: TF.group_norm(t, 1)),
           "rms_norm": (lambda t: F.rms_norm(t, tail), lambda t: TF.rms_norm(t, tail)),
           "instance_norm": (lambda t: F.instance_norm(t), lambda t: TF.instance_norm(t))}[name]
    out = []
    for fn in fns:
        xa = x.clone().requires_grad_()
        (g,) = torch.autograd.grad((fn(xa) ** 3).sum(), xa, create_graph=True)
        out.append(torch.autograd.grad(g, xa, v)[0])
    torch.testing.assert_close(out[0], out[1], atol=1e-8 * max(1.0, out[1].abs().max().item()), rtol=0)
