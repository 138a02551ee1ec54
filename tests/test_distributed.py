"""normkit.distributed: SyncBatchNorm across real gloo processes equals batch norm over the whole batch.

The multi-process tests start 2 and 3 processes on localhost (normkit.distributed.launch: a free
port, every collective and the whole run bounded by a timeout) and run all their cases in one
process group each, because starting a process (importing torch) costs far more than the cases.
"""
import pytest
import torch
from torch import nn

import normkit as nk
from normkit import distributed as D
from normkit.lessons.l10_distributed_batchnorm import replica_step

from .conftest import assert_close, leaf, randn

TIMEOUT = 120.0     # seconds; generous for a loaded CI machine, still no hang


def _torch_bn(shape, dtype, **kw):
    cls = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}[len(shape)]
    return cls(shape[1], dtype=dtype, **kw)


def _reference(x, dy, steps, **kw):
    """torch's BN over the whole batch, `steps` steps of loss Σ y·dy, then eval on x."""
    bn = _torch_bn(x.shape, x.dtype, **kw)
    for _ in range(steps):
        xi = leaf(x)
        y = bn(xi)
        (y * dy).sum().backward()
    out = {"y": y.detach(), "dx": xi.grad, "bn": bn}
    bn.eval()
    out["y_eval"] = bn(x).detach()
    return out


# Each case: (input shape, per-rank sizes, steps, SyncBatchNorm keyword arguments[, dtype]).
CASES = {
    2: [((8, 5), [4, 4], 3, {}),
        ((6, 3, 4, 5), [1, 5], 2, {}),                                  # uneven, 1 sample on rank 0
        ((5, 4, 7), [3, 2], 3, {"momentum": None}),                     # cumulative average
        ((7, 3, 2), [2, 5], 1, {"affine": False, "track_running_stats": False}),
        ((2, 6), [1, 1], 2, {"eps": 1e-3, "momentum": 0.5})],           # 1 sample per replica
    3: [((9, 4, 6), [2, 5, 2], 2, {}),
        ((3, 5), [1, 1, 1], 2, {}),                                     # plain BN would fail on each
        ((10, 2, 3, 3), [4, 1, 5], 2, {"momentum": 0.3}),
        ((6, 3, 2, 2, 2), [3, 2, 1], 1, {}),                            # 5-D input
        ((12, 4, 5), [5, 3, 4], 2, {}, torch.float32)],
}
EMPTY = {2: [0, 4], 3: [3, 0, 2]}


def _inputs(i, shape, dtype=torch.float64):
    return (randn(*shape, scale=2.0, offset=0.7, seed=100 + i, dtype=dtype),
            randn(*shape, seed=200 + i, dtype=dtype))


@pytest.fixture(scope="module", params=[2, 3], ids=lambda w: f"world{w}")
def world(request):
    """Launch one process group of `world` ranks running every case; returns (cases, results)."""
    w = request.param
    calls = []
    for i, (shape, sizes, steps, kw, *dtype) in enumerate(CASES[w]):
        x, dy = _inputs(i, shape, *dtype)
        calls.append((replica_step, (x, dy, sizes, steps), kw))
    x, dy = _inputs(99, (5, 3, 4))
    calls.append((replica_step, (x, dy, EMPTY[w]), {}))
    for i, (shape, sizes, kw) in enumerate(SECOND_ORDER[w]):
        calls.append((_second_order_step, (*_second_order_inputs(i, shape, kw), sizes, kw)))
    return w, D.launch(D.run_each, w, calls, timeout=TIMEOUT)


@pytest.mark.parametrize("case", range(5))
def test_sync_equals_batch_norm_over_the_whole_batch(world, case):
    w, results = world
    shape, sizes, steps, kw, *dtype = CASES[w][case]
    x, dy = _inputs(case, shape, *dtype)
    ranks = [r[case] for r in results]
    assert all("error" not in r for r in ranks), ranks
    ref = _reference(x, dy, steps, **kw)
    bn = ref["bn"]
    assert_close(torch.cat([r["y"] for r in ranks]), ref["y"])
    assert_close(torch.cat([r["dx"] for r in ranks]), ref["dx"])
    if bn.track_running_stats:
        assert_close(torch.cat([r["y_eval"] for r in ranks]), ref["y_eval"])
    else:           # eval never communicates: without running statistics, each slice's own (as torch)
        starts = [sum(sizes[:i]) for i in range(w)]
        for r, s, n in zip(ranks, starts, sizes):
            assert_close(r["y_eval"], _torch_bn(shape, x.dtype, **kw).eval()(x[s:s + n]))
    if bn.affine:   # γ, β gradients are per replica (DDP sums them): their sum is the whole batch's
        assert_close(sum(r["dweight"] for r in ranks), bn.weight.grad)
        assert_close(sum(r["dbias"] for r in ranks), bn.bias.grad)
    for r in ranks:
        if bn.track_running_stats:
            assert_close(r["running_mean"], bn.running_mean)
            assert_close(r["running_var"], bn.running_var)
            assert int(r["num_batches_tracked"]) == int(bn.num_batches_tracked) == steps
        else:
            assert "running_mean" not in r


def test_sync_equals_normkit_batch_norm_too(world):
    w, results = world
    shape, sizes, steps, kw = CASES[w][0]
    x, dy = _inputs(0, shape)
    bn = nk.BatchNorm1d(shape[1], dtype=x.dtype, **kw)
    for _ in range(steps):
        xi = leaf(x)
        y = bn(xi)
        (y * dy).sum().backward()
    ranks = [r[0] for r in results]
    assert_close(torch.cat([r["y"] for r in ranks]), y)
    assert_close(torch.cat([r["dx"] for r in ranks]), xi.grad)
    assert_close(ranks[0]["running_var"], bn.running_var)


def test_empty_batch_on_one_replica_raises_on_every_replica(world):
    w, results = world
    errors = [r[len(CASES[w])].get("error", "") for r in results]
    assert all("empty batch" in e for e in errors), errors
    assert any("shape (0, 3, 4)" in e for e in errors)


# Second order: (input shape, per-rank sizes, SyncBatchNorm keyword arguments), float64.
SECOND_ORDER = {2: [((6, 3, 4), [2, 4], {}), ((5, 4), [3, 2], {"bias": False})],
                3: [((7, 2, 3), [3, 1, 3], {}), ((6, 3, 2, 2), [2, 2, 2], {"affine": False})]}


def _second_order_inputs(i, shape, kw):
    """x, the loss weights c, and the vectors v for x, γ, β (only the parameters the layer has)."""
    x, c = _inputs(300 + i, shape)
    p = {} if kw.get("affine") is False else {"weight": 1.0 + 0.3 * randn(shape[1], seed=310 + i)}
    if p and kw.get("bias", True):
        p["bias"] = randn(shape[1], seed=320 + i)
    vs = {"x": randn(*shape, seed=330 + i), **{k: randn(shape[1], seed=340 + j + i) for j, k in enumerate(p)}}
    return x, c, p, vs


def _second_order_step(rank, world_size, x, c, params, vs, sizes, kw):
    """Worker: loss Σ y³·c on this rank's slice through SyncBatchNorm, its gradients w.r.t. (x, γ,
    β) with create_graph, then the gradient of ⟨gradients, v⟩: a Hessian-vector product."""
    sl = slice(sum(sizes[:rank]), sum(sizes[:rank + 1]))
    bn = nk.SyncBatchNorm(x.shape[1], dtype=x.dtype, **kw)
    with torch.no_grad():
        for k, v in params.items():
            getattr(bn, k).copy_(v)
    xi = leaf(x[sl])
    inputs = [xi, *(getattr(bn, k) for k in params)]
    grads = torch.autograd.grad((bn(xi) ** 3 * c[sl]).sum(), inputs, create_graph=True)
    dot = sum((g * vs[k][sl] if k == "x" else g * vs[k]).sum() for g, k in zip(grads, ["x", *params]))
    return [g.detach() for g in grads], list(torch.autograd.grad(dot, inputs))


@pytest.mark.parametrize("case", range(2))
def test_sync_double_backward_equals_torch_over_the_whole_batch(world, case):
    """Gradients with create_graph and a Hessian-vector product w.r.t. (x, γ, β) across replicas:
    x parts concatenated, γ/β parts summed (each replica holds its share), vs torch's BN."""
    w, results = world
    shape, sizes, kw = SECOND_ORDER[w][case]
    x, c, params, vs = _second_order_inputs(case, shape, kw)
    ranks = [r[len(CASES[w]) + 1 + case] for r in results]
    bn = _torch_bn(shape, x.dtype, **kw)
    with torch.no_grad():
        for k, v in params.items():
            getattr(bn, k).copy_(v)
    xi = leaf(x)
    inputs = [xi, *(getattr(bn, k) for k in params)]
    grads = torch.autograd.grad((bn(xi) ** 3 * c).sum(), inputs, create_graph=True)
    hvp = torch.autograd.grad(sum((g * vs[k]).sum() for g, k in zip(grads, ["x", *params])), inputs)
    for i, (first, second) in enumerate(zip(grads, hvp)):
        join = torch.cat if i == 0 else sum
        assert_close(join([r[0][i] for r in ranks]), first)
        assert_close(join([r[1][i] for r in ranks]), second)


# ----------------------------------------------------------------------------- one process
def test_constructor_and_repr_match_torch_syncbatchnorm():
    import inspect
    params = lambda cls: [(p.name, p.kind, p.default) for p in inspect.signature(cls.__init__).parameters.values()]
    assert params(nk.SyncBatchNorm) == params(nn.SyncBatchNorm)
    for kw in ({}, {"bias": False}, {"affine": False}, {"track_running_stats": False, "momentum": None}):
        ours, theirs = nk.SyncBatchNorm(4, 1e-3, **kw), nn.SyncBatchNorm(4, 1e-3, **kw)
        assert repr(ours) == repr(theirs)
        assert ours.state_dict().keys() == theirs.state_dict().keys()
        assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    out = nk.convert_sync_batchnorm(nn.BatchNorm2d(3, bias=False))
    assert out.bias is None and "bias=False" in repr(out)


def test_falls_back_to_batch_norm_without_a_process_group():
    assert not torch.distributed.is_initialized()
    x, dy = _inputs(7, (6, 3, 4, 4))
    ref = _reference(x, dy, 3, momentum=None)
    bn = nk.SyncBatchNorm(3, momentum=None, dtype=torch.float64)
    for _ in range(3):
        xi = leaf(x)
        y = bn(xi)
        (y * dy).sum().backward()
    assert_close(y, ref["y"])
    assert_close(xi.grad, ref["dx"])
    assert_close(bn.weight.grad, ref["bn"].weight.grad)
    assert_close(bn.running_var, ref["bn"].running_var)
    bn.eval()
    assert_close(bn(x), ref["y_eval"])


def test_state_dict_round_trip_with_torch_syncbatchnorm():
    ours = nk.SyncBatchNorm(4, momentum=0.2)
    theirs = nn.SyncBatchNorm(4, momentum=0.2)
    with torch.no_grad():
        theirs.weight.uniform_()
        theirs.running_var.uniform_()
    ours.load_state_dict(theirs.state_dict())
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    for k, v in theirs.state_dict().items():
        assert torch.equal(ours.state_dict()[k], v)


def test_convert_sync_batchnorm_replaces_every_batch_norm_and_keeps_the_tensors():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4, momentum=0.3), nn.ReLU(),
                          nn.Sequential(nn.Conv2d(4, 6, 3), nk.BatchNorm2d(6, eps=1e-3)),
                          nn.Flatten(), nn.Linear(6 * 4 * 4, 5), nn.BatchNorm1d(5, affine=False),
                          nk.LayerNorm(5))
    model(torch.randn(8, 1, 8, 8))                       # move the running statistics
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch_bn, nk_bn = model[1], model[3][1]
    x = torch.randn(3, 1, 8, 8)
    y_before = model(x)
    converted = nk.convert_sync_batchnorm(model)
    bns = [m for m in converted.modules() if isinstance(m, nk.SyncBatchNorm)]
    assert len(bns) == 3
    assert not any(type(m) in (nn.BatchNorm1d, nn.BatchNorm2d, nk.BatchNorm2d) for m in converted.modules())
    assert isinstance(converted[7], nk.LayerNorm)
    assert converted[1].weight is torch_bn.weight and converted[1].running_mean is torch_bn.running_mean
    assert converted[3][1].bias is nk_bn.bias
    assert (converted[1].momentum, converted[3][1].eps, converted[6].affine) == (0.3, 1e-3, False)
    assert all(not m.training for m in bns)
    assert converted.state_dict().keys() == before.keys()
    for k, v in converted.state_dict().items():
        assert torch.equal(v, before[k])
    assert_close(converted(x), y_before)


def test_convert_a_single_layer_and_the_classmethod():
    bn = nn.BatchNorm1d(3)
    out = nk.SyncBatchNorm.convert_sync_batchnorm(bn, process_group="group")
    assert isinstance(out, nk.SyncBatchNorm) and out.process_group == "group"
    assert out.weight is bn.weight


def test_replica_stats_is_stable_in_float32():
    x = randn(40, 3, 8, dtype=torch.float64, offset=1000.0, seed=5)
    x32 = x.float()
    stats = sum(D.replica_stats(p)[0] for p in x32.split([7, 20, 13]))
    mean, var, count = _combine(stats, 3)
    truth = x32.double()
    assert count == 40 * 8
    torch.testing.assert_close(mean, truth.mean((0, 2)), rtol=1e-7, atol=0)
    torch.testing.assert_close(var, truth.var((0, 2), unbiased=False), rtol=1e-4, atol=0)
    naive = (x32 * x32).sum((0, 2)) / 320 - (x32.sum((0, 2)) / 320) ** 2   # what it avoids
    assert (naive.double() - truth.var((0, 2), unbiased=False)).abs().max() > 0.01


def _combine(stats, c):
    count = stats[2 * c].item()
    mean = stats[:c] / count
    return mean, stats[c:2 * c] / count - mean * mean, count


def test_replica_stats_of_an_empty_slice_sends_nan_count():
    stats, mean, xc = D.replica_stats(torch.zeros(0, 4, 3))
    assert stats.shape == (9,) and torch.isnan(stats[-1]) and not stats[:-1].any()
    assert mean is None and xc is None


# ----------------------------------------------------------------------------- bad input
def test_bad_arguments():
    with pytest.raises(ValueError, match="eps"):
        nk.SyncBatchNorm(3, eps=-1.0)
    with pytest.raises(ValueError, match="num_features"):
        nk.SyncBatchNorm(0)
    with pytest.raises(ValueError, match="channels"):
        nk.SyncBatchNorm(3)(torch.randn(4, 5))
    with pytest.raises(ValueError, match=r"\(N, C\)"):
        nk.SyncBatchNorm(3)(torch.randn(3))
    with pytest.raises(ValueError, match="module"):
        nk.convert_sync_batchnorm("not a module")
    with pytest.raises(ValueError, match="world_size"):
        D.launch(D.run_each, 0, [])


def test_a_rank_reports_its_result_or_its_traceback():
    """What each launched process runs (here in this process, with a group of one: no spawn cost)."""
    import queue
    results = queue.Queue()
    calls = [(replica_step, (randn(4, 3), randn(4, 3, seed=1), [4]))]
    D._entry(0, 1, D.free_port(), 30.0, D.run_each, (calls,), results)
    rank, ok, payload = results.get_nowait()
    assert (rank, ok) == (0, True) and isinstance(payload, bytes)
    D._entry(0, 1, D.free_port(), 30.0, D.run_each, ([(replica_step, (None,))],), results)
    rank, ok, payload = results.get_nowait()
    assert not ok and "TypeError" in payload and "replica_step" in payload
    assert not torch.distributed.is_initialized()


def test_launch_gives_up_after_its_timeout():
    with pytest.raises(TimeoutError, match="timeout"):
        D.launch(D.run_each, 1, [], timeout=0.2)      # not even enough time to import torch
