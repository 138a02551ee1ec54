"""normkit modules against torch.nn: constructors, parameter/buffer names, training steps,
running statistics, eval mode, state_dict round trips both ways, weight norm, dropout/noise."""
import inspect
import math

import pytest
import torch
from torch import nn

import normkit as nk

from .conftest import DTYPES, assert_close, leaf, randn, rstd_max

PAIRS = [(nk.BatchNorm1d, nn.BatchNorm1d), (nk.BatchNorm2d, nn.BatchNorm2d), (nk.BatchNorm3d, nn.BatchNorm3d),
         (nk.InstanceNorm1d, nn.InstanceNorm1d), (nk.InstanceNorm2d, nn.InstanceNorm2d),
         (nk.InstanceNorm3d, nn.InstanceNorm3d), (nk.LayerNorm, nn.LayerNorm),
         (nk.GroupNorm, nn.GroupNorm), (nk.RMSNorm, nn.RMSNorm), (nk.Dropout, nn.Dropout)]


@pytest.mark.parametrize("ours,ref", PAIRS, ids=lambda c: c.__name__)
def test_constructor_matches_torch(ours, ref):
    """Same positional/keyword arguments, in the same order, with the same defaults."""
    def plain(cls):
        return [(p.name, p.default, p.kind) for p in inspect.signature(cls).parameters.values()]
    assert plain(ours) == plain(ref)


def _randomize(module, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype) * 0.5 + 1.0)
    return module


def _twins(ours_cls, ref_cls, *args, **kw):
    """A torch module with random affine parameters and a normkit module loaded from it."""
    ref = _randomize(ref_cls(*args, **kw))
    ours = ours_cls(*args, **kw)
    ours.load_state_dict(ref.state_dict())          # torch → normkit, strict
    return ours, ref


def _same_names(ours, ref):
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in ref.named_parameters()]
    assert [n for n, _ in ours.named_buffers()] == [n for n, _ in ref.named_buffers()]
    assert list(ours.state_dict()) == list(ref.state_dict())


def _step(ours, ref, x, seed, cond=1.0):
    """One forward/backward on both with the same upstream gradient; compare output and grads."""
    xa, xb = leaf(x), leaf(x)
    y, r = ours(xa), ref(xb)
    assert_close(y, r, scale=cond * x.abs().max().item())
    up = randn(*x.shape, dtype=x.dtype, seed=seed)
    y.backward(up)
    r.backward(up)
    assert_close(xa.grad, xb.grad, factor=4 * cond)
    for (name, p), (ref_name, q) in zip(ours.named_parameters(), ref.named_parameters(), strict=True):
        assert name == ref_name
        assert_close(p.grad, q.grad, factor=4 * cond)
        p.grad = q.grad = None


def _same_state(ours, ref):
    sa, sb = ours.state_dict(), ref.state_dict()
    assert list(sa) == list(sb)
    for k in sb:
        if sb[k].dtype == torch.long:
            assert torch.equal(sa[k], sb[k]), k
        else:
            assert_close(sa[k], sb[k])


# ----------------------------------------------------------------------------- batch norm
BN_CASES = [(nk.BatchNorm1d, nn.BatchNorm1d, (None, 4)), (nk.BatchNorm1d, nn.BatchNorm1d, (None, 4, 7)),
            (nk.BatchNorm2d, nn.BatchNorm2d, (None, 3, 5, 3)), (nk.BatchNorm3d, nn.BatchNorm3d, (None, 2, 3, 2, 3))]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ours_cls,ref_cls,shape", BN_CASES, ids=["bn1d-NC", "bn1d-NCL", "bn2d", "bn3d"])
@pytest.mark.parametrize("momentum", [0.1, 0.5, 1.0, 0.0, None])
@pytest.mark.parametrize("affine,track", [(True, True), (False, True), (True, False), (False, False)])
def test_batch_norm_module_steps(dtype, ours_cls, ref_cls, shape, momentum, affine, track):
    c = shape[1]
    ours, ref = _twins(ours_cls, ref_cls, c, 1e-5, momentum, affine, track, dtype=dtype)
    _same_names(ours, ref)
    for step, n in enumerate([5, 3, 8, 2, 6, 4]):                # 6 training steps
        x = randn(n, *shape[1:], dtype=dtype, scale=1 + step / 2, offset=step - 2.5, seed=step)
        _step(ours, ref, x, seed=100 + step, cond=rstd_max(x.transpose(0, 1).reshape(c, -1)))
        _same_state(ours, ref)
    if track:
        assert int(ours.num_batches_tracked) == 6
        if momentum is None:    # cumulative average of the 6 batch means, exactly as torch
            means = [randn(n, *shape[1:], dtype=torch.float64, scale=1 + s / 2, offset=s - 2.5, seed=s)
                     .to(dtype).double().transpose(0, 1).reshape(c, -1).mean(1)
                     for s, n in enumerate([5, 3, 8, 2, 6, 4])]
            assert_close(ours.running_mean, torch.stack(means).mean(0).to(dtype), factor=10)
    else:
        assert ours.running_mean is None and ours.num_batches_tracked is None
    ours.eval()
    ref.eval()
    x = randn(7, *shape[1:], dtype=dtype, scale=3, offset=1, seed=50)
    _step(ours, ref, x, seed=150, cond=rstd_max(x.transpose(0, 1).reshape(c, -1)))
    _same_state(ours, ref)                                         # eval: no update, no count


def test_batch_norm_module_eval_uses_running_stats():
    m = nk.BatchNorm1d(3)
    with torch.no_grad():
        m.running_mean.copy_(torch.tensor([1.0, -2.0, 0.5]))
        m.running_var.copy_(torch.tensor([4.0, 0.25, 1.0]))
        m.weight.copy_(torch.tensor([2.0, 1.0, -1.0]))
        m.bias.copy_(torch.tensor([0.0, 1.0, 3.0]))
    m.eval()
    x = torch.tensor([[3.0, -1.0, 0.5]])                # a batch of one is fine in eval
    expected = (x - m.running_mean) / torch.sqrt(m.running_var + 1e-5) * m.weight + m.bias
    assert_close(m(x), expected)
    assert int(m.num_batches_tracked) == 0


def test_batch_norm_reset_matches_torch():
    ours, ref = _twins(nk.BatchNorm2d, nn.BatchNorm2d, 3)
    x = randn(4, 3, 2, 2, dtype=torch.float32)
    ours(x)
    ref(x)
    ours.reset_running_stats()
    ref.reset_running_stats()
    _same_state(ours, ref)
    ours(x)
    ref(x)
    ours.reset_parameters()
    ref.reset_parameters()
    _same_state(ours, ref)


# ----------------------------------------------------------------------------- instance norm
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("momentum", [0.1, 0.7, None])
@pytest.mark.parametrize("affine,track", [(False, False), (True, False), (False, True), (True, True)])
def test_instance_norm_module_steps(dtype, momentum, affine, track):
    ours, ref = _twins(nk.InstanceNorm2d, nn.InstanceNorm2d, 3, 1e-5, momentum, affine, track, dtype=dtype)
    _same_names(ours, ref)
    for step, n in enumerate([2, 3, 1, 4, 2]):
        x = randn(n, 3, 4, 5, dtype=dtype, scale=1 + step, offset=step - 1, seed=step)
        _step(ours, ref, x, seed=200 + step, cond=rstd_max(x.reshape(n * 3, -1)))
        _same_state(ours, ref)                      # running stats and num_batches_tracked (stays 0)
    if track and momentum is not None:
        assert not torch.equal(ours.running_var, torch.ones(3, dtype=dtype))
    ours.eval()
    ref.eval()
    x = randn(2, 3, 4, 5, dtype=dtype, scale=2, seed=60)
    _step(ours, ref, x, seed=260, cond=rstd_max(x.reshape(6, -1)))


IN_CASES = [(nk.InstanceNorm1d, nn.InstanceNorm1d, (3, 7)), (nk.InstanceNorm2d, nn.InstanceNorm2d, (3, 4, 5)),
            (nk.InstanceNorm3d, nn.InstanceNorm3d, (3, 2, 3, 4))]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ours_cls,ref_cls,shape", IN_CASES, ids=["in1d", "in2d", "in3d"])
@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("affine,track,bias", [(False, False, True), (True, True, True), (True, False, False)])
def test_instance_norm_1d_2d_3d_batched_and_unbatched(dtype, ours_cls, ref_cls, shape, batched, affine, track, bias):
    ours, ref = _twins(ours_cls, ref_cls, 3, 1e-5, 0.2, affine, track, dtype=dtype, bias=bias)
    _same_names(ours, ref)
    for step in range(3):
        x = randn(*((2,) if batched else ()), *shape, dtype=dtype, scale=1 + step, offset=step, seed=step)
        _step(ours, ref, x, seed=400 + step, cond=rstd_max(x.reshape(-1, math.prod(shape[1:]))))
        _same_state(ours, ref)
    ours.eval()
    ref.eval()
    x = randn(*((2,) if batched else ()), *shape, dtype=dtype, seed=9)
    _step(ours, ref, x, seed=409, cond=rstd_max(x.reshape(-1, math.prod(shape[1:]))))


def test_instance_norm_channel_mismatch_without_affine_warns_like_torch():
    x = randn(4, 2, 5, dtype=torch.float32)           # unbatched (C=4, H, W) into InstanceNorm2d(3)
    with pytest.warns(UserWarning, match="num_features"):
        y = nk.InstanceNorm2d(3)(x)
    with pytest.warns(UserWarning):
        r = nn.InstanceNorm2d(3)(x)
    assert_close(y, r)


@pytest.mark.parametrize("make,shape", [
    (lambda m: m.BatchNorm1d(4, bias=False), (3, 4, 3)),
    (lambda m: m.BatchNorm2d(4, 1e-3, 0.3, bias=False), (3, 4, 3, 2)),
    (lambda m: m.BatchNorm3d(4, bias=False), (3, 4, 3, 2, 2)), (lambda m: m.GroupNorm(2, 4, bias=False), (3, 4, 3)),
    (lambda m: m.InstanceNorm2d(4, affine=True, bias=False), (3, 4, 3, 2)),
    (lambda m: m.LayerNorm((4, 3), bias=False), (3, 4, 3))], ids=["bn1d", "bn2d", "bn3d", "gn", "in2d", "ln"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_bias_false_learns_gamma_only(make, shape, dtype):
    """torch 2.13's bias=False: a weight, no bias parameter, state_dict without 'bias', same numbers."""
    ref = _randomize(make(nn).to(dtype))
    ours = make(nk).to(dtype)
    ours.load_state_dict(ref.state_dict())
    _same_names(ours, ref)
    assert ours.bias is None and ours.weight is not None
    x = randn(*shape, dtype=dtype, scale=2, seed=5)
    _step(ours, ref, x, seed=410, cond=rstd_max(x.transpose(0, 1).reshape(4, -1)) * 10)
    _same_state(ours, ref)
    assert repr(make(nk)) == repr(make(nn))


@pytest.mark.parametrize("make", [
    lambda m: m.BatchNorm1d(3), lambda m: m.BatchNorm2d(3, 1e-3, None, False, False),
    lambda m: m.BatchNorm3d(5, momentum=0.3, bias=False), lambda m: m.InstanceNorm1d(3),
    lambda m: m.InstanceNorm2d(3, affine=True, track_running_stats=True), lambda m: m.InstanceNorm3d(2, bias=False),
    lambda m: m.LayerNorm((2, 3), 1e-6, False), lambda m: m.LayerNorm(4, bias=False),
    lambda m: m.GroupNorm(2, 4, affine=False), lambda m: m.GroupNorm(1, 3, bias=False),
    lambda m: m.RMSNorm(4), lambda m: m.RMSNorm([2, 2], 1e-3, False)])
def test_repr_matches_torch(make):
    """print(model) reads the same as torch's, bias= included (torch 2.13)."""
    assert repr(make(nk)) == repr(make(nn))


@pytest.mark.parametrize("make", [lambda m: m.LayerNorm(5), lambda m: m.GroupNorm(2, 4),
                                  lambda m: m.RMSNorm(5), lambda m: m.InstanceNorm1d(4, affine=True)],
                         ids=["ln", "gn", "rms", "in1d"])
def test_reset_parameters_matches_torch(make):
    ours, ref = _randomize(make(nk)), _randomize(make(nn))
    ours.reset_parameters()
    ref.reset_parameters()
    _same_state(ours, ref)


# ----------------------------------------------------------------------------- layer norm, RMS norm
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,normalized_shape", [((4, 6), 6), ((3, 4, 5), (4, 5)), ((2, 3, 5), [5])])
@pytest.mark.parametrize("elementwise_affine,bias", [(True, True), (True, False), (False, True)])
def test_layer_norm_module(dtype, shape, normalized_shape, elementwise_affine, bias):
    ours, ref = _twins(nk.LayerNorm, nn.LayerNorm, normalized_shape, 1e-5, elementwise_affine, bias,
                       dtype=dtype)
    _same_names(ours, ref)
    assert (ours.weight is None) == (not elementwise_affine)
    assert (ours.bias is None) == (not (elementwise_affine and bias))
    x = randn(*shape, dtype=dtype, scale=2.0, offset=1.0)
    m = x[0].numel() // shape[1] if isinstance(normalized_shape, tuple) else shape[-1]
    _step(ours, ref, x, seed=300, cond=rstd_max(x.reshape(-1, m)))
    ours.eval()
    ref.eval()
    _step(ours, ref, x, seed=301, cond=rstd_max(x.reshape(-1, m)))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("eps", [None, 1e-6])
@pytest.mark.parametrize("elementwise_affine", [True, False])
def test_rms_norm_module(dtype, eps, elementwise_affine):
    ours, ref = _twins(nk.RMSNorm, nn.RMSNorm, (3, 4), eps, elementwise_affine, dtype=dtype)
    _same_names(ours, ref)
    _step(ours, ref, randn(5, 3, 4, dtype=dtype, scale=0.3), seed=310)


# ----------------------------------------------------------------------------- group norm
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("groups", [1, 2, 6])                       # G = 1 (layer), G = C (instance)
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("shape", [(3, 6, 5), (2, 6, 3, 4)])
def test_group_norm_module(dtype, groups, affine, shape):
    ours, ref = _twins(nk.GroupNorm, nn.GroupNorm, groups, 6, 1e-5, affine, dtype=dtype)
    _same_names(ours, ref)
    x = randn(*shape, dtype=dtype, scale=2.0, offset=-0.5)
    _step(ours, ref, x, seed=320, cond=rstd_max(x.reshape(shape[0] * groups, -1)))


def test_group_norm_extremes_are_layer_and_instance_norm():
    x = randn(3, 4, 5, 6)
    assert_close(nk.GroupNorm(1, 4, affine=False)(x), torch.nn.functional.layer_norm(x, (4, 5, 6)))
    assert_close(nk.GroupNorm(4, 4, affine=False)(x), torch.nn.functional.instance_norm(x))


# ----------------------------------------------------------------------------- state_dict round trips
def _round_trip_cases():
    return [
        ("bn1d", lambda m: m.BatchNorm1d(4, momentum=0.3), (6, 4, 3)),
        ("bn2d", lambda m: m.BatchNorm2d(3, momentum=None), (4, 3, 2, 5)),
        ("bn2d-noaffine", lambda m: m.BatchNorm2d(3, affine=False), (4, 3, 2, 2)),
        ("in2d-track", lambda m: m.InstanceNorm2d(3, affine=True, track_running_stats=True), (2, 3, 4, 4)),
        ("ln", lambda m: m.LayerNorm((3, 5)), (4, 3, 5)),
        ("ln-nobias", lambda m: m.LayerNorm(5, bias=False), (4, 5)),
        ("gn", lambda m: m.GroupNorm(2, 4), (3, 4, 5)),
        ("rms", lambda m: m.RMSNorm(5), (3, 5)),
    ]


@pytest.mark.parametrize("direction", ["torch->normkit", "normkit->torch"])
@pytest.mark.parametrize("name,make,shape", _round_trip_cases(), ids=[c[0] for c in _round_trip_cases()])
def test_state_dict_round_trip(direction, name, make, shape):
    src_lib, dst_lib = (nn, nk) if direction == "torch->normkit" else (nk, nn)
    src = _randomize(make(src_lib), seed=7)
    for step in range(3):                            # move the running statistics away from 0 and 1
        src(randn(*shape, dtype=torch.float32, scale=2, offset=step, seed=step))
    dst = make(dst_lib)
    result = dst.load_state_dict(src.state_dict())   # strict: same keys, same shapes
    assert not result.missing_keys and not result.unexpected_keys
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v), k
    if "num_batches_tracked" in dict(src.named_buffers()):
        assert int(dst.num_batches_tracked) == (0 if name.startswith("in") else 3)
    src.eval()
    dst.eval()
    x = randn(*shape, dtype=torch.float32, scale=1.5, offset=0.5, seed=99)
    assert_close(dst(x), src(x))
    if name.startswith("bn"):                        # eval really used the loaded running stats
        assert not torch.allclose(dst(x), nn.functional.batch_norm(x, None, None, training=True))


# ----------------------------------------------------------------------------- weight norm
def _wn_pair(kind, dim):
    torch.manual_seed(3)
    base = nn.Linear(5, 3) if kind == "linear" else nn.Conv2d(2, 4, 3)
    base = base.double()
    ref = nn.utils.parametrizations.weight_norm(_copy(base), dim=dim)
    ours = nk.weight_norm(_copy(base), dim=dim)
    return base, ours, ref


def _copy(module):
    import copy
    return copy.deepcopy(module)


@pytest.mark.parametrize("kind", ["linear", "conv"])
@pytest.mark.parametrize("dim", [0, 1, None, -1])
def test_weight_norm_matches_torch(kind, dim):
    base, ours, ref = _wn_pair(kind, dim)
    p = ref.parametrizations.weight
    assert set(dict(ours.named_parameters())) == {"bias", "weight_g", "weight_v"}
    assert "weight" not in dict(ours.named_parameters())
    assert ours.weight_g.shape == p.original0.shape and ours.weight_v.shape == p.original1.shape
    assert_close(ours.weight_g, p.original0)
    assert_close(ours.weight_v, p.original1)
    assert_close(ours.weight, base.weight)          # the reparametrization starts at the same weight
    x = randn(4, 5) if kind == "linear" else randn(2, 2, 5, 6)
    opt_ours = torch.optim.SGD(ours.parameters(), lr=0.3)
    opt_ref = torch.optim.SGD(ref.parameters(), lr=0.3)
    for step in range(3):
        y, r = ours(x), ref(x)
        assert_close(y, r)
        up = randn(*y.shape, seed=step)
        y.backward(up)
        r.backward(up)
        assert_close(ours.weight_g.grad, p.original0.grad)
        assert_close(ours.weight_v.grad, p.original1.grad)
        assert_close(ours.bias.grad, ref.bias.grad)
        opt_ours.step()                             # the next forward must see the new g, v
        opt_ref.step()
        opt_ours.zero_grad()
        opt_ref.zero_grad()
    # removed right after a step, with no forward in between: folds the *current* g and v
    nk.remove_weight_norm(ours)
    nn.utils.parametrize.remove_parametrizations(ref, "weight")
    assert set(dict(ours.named_parameters())) == {"weight", "bias"}
    assert not hasattr(ours, "weight_g") and not ours._forward_pre_hooks
    assert_close(ours.weight, ref.weight)
    assert_close(ours(x), ref(x))
    assert not torch.allclose(ours(x), base(x))     # training moved it


def test_weight_norm_direction_and_length():
    lin = nk.weight_norm(nn.Linear(4, 3).double())
    with torch.no_grad():
        lin.weight_g.copy_(torch.tensor([[2.0], [0.5], [3.0]], dtype=torch.float64))
    lin(randn(1, 4))
    torch.testing.assert_close(lin.weight.norm(dim=1), torch.tensor([2.0, 0.5, 3.0], dtype=torch.float64))
    assert list(lin.state_dict()) == ["bias", "weight_g", "weight_v"]


# ----------------------------------------------------------------------------- dropout, noise modules
def test_dropout_module():
    x = torch.ones(20_000)
    m = nk.Dropout(0.25)
    assert m.training
    torch.manual_seed(5)
    y = m(x)
    torch.manual_seed(5)
    assert torch.equal(y, nk.functional.dropout(x, 0.25))
    assert set(y.unique().tolist()) == {0.0, torch.tensor(1 / 0.75).item()}
    m.eval()
    assert torch.equal(m(x), x)
    xi = torch.ones(1000)
    out = nk.Dropout(0.5, inplace=True)(xi)
    assert out.data_ptr() == xi.data_ptr() and (xi == 0).any()
    assert "p=0.25" in repr(nk.Dropout(0.25))


def test_gaussian_noise_module():
    x = torch.zeros(50_000)
    m = nk.GaussianNoise(0.5)
    y = m(x)
    assert abs(y.std().item() - 0.5) < 0.01
    m.eval()
    assert torch.equal(m(x), x)
    assert list(m.state_dict()) == []
