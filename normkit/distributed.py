"""Batch norm across processes: `SyncBatchNorm` on torch.distributed (gloo, CPU), and a process launcher to try it.

Under data parallelism each replica (a process, usually one per device) runs the same model on its
own slice of the global mini-batch, and plain batch norm takes its statistics from that slice only.
`SyncBatchNorm` computes them over the whole global batch instead (notebook 10):

    forward   one all-reduce of [Σx, Σx², n] per layer (2C + 1 numbers)   → global mean and variance
    backward  one all-reduce of [Σdy, Σdy·x̂] per layer (2C numbers)       → the input gradient

Everything else is the single-process batch norm of normkit: the closed-form backward of
`functional._Normalize` (restated in `_SyncNormalize` with its two sums all-reduced), the same
running averages (`_update_running`), and the module machinery of `layers._BatchNorm`: parameters,
buffers, momentum=None, input checks and the eval path (running statistics, no communication).
`torch.nn.SyncBatchNorm` runs only on GPUs; this one runs wherever torch.distributed does, e.g.
with the gloo backend on a laptop CPU.

The process launcher: `launch(fn, world_size, ...)` starts a gloo process group on localhost in
fresh processes and returns what fn returned on each rank; fn must be importable by name (a
module's function, not a notebook's): `run_each` runs several such calls in one group. The
experiments of notebook 10 and their worker functions live in `normkit.lessons.l10_distributed_batchnorm`.
"""
import datetime
import io
import queue as _queue
import socket
import time
import traceback

import torch
import torch.distributed as dist
from torch import nn

from .functional import _input_grad, _prod, _scale_shift, _update_running, _view
from .validate import check_int, check_ndim, check_numel, check_range
from .layers import _BatchNorm

__all__ = ["SyncBatchNorm", "convert_sync_batchnorm", "sync_batch_norm", "replica_stats",
           "launch", "free_port", "run_each"]


# ----------------------------------------------------------------------------- the statistics
def replica_stats(x3):
    """This replica's [Σx per channel, Σx² per channel, count] as one float64 vector of 2C + 1.

    x3 has shape (n, C, L). Float32 sums of squares lose everything to cancellation when
    var = Σx²/n − mean² is small against mean² (activations with mean 1000 and std 1: the two
    terms agree in all 7 digits float32 keeps). So the sums are formed *stably*: the replica's
    own mean and centred sum of squares M2 = Σ(x − mean_r)² in the input dtype (two passes over
    its slice, as single-process BN does), then Σx = n·mean_r and Σx² = M2 + n·mean_r² in float64.
    Combining those in float64 cancels only the spread *between* replica means, with 16 digits.
    An empty slice sends count NaN: NaN + anything is NaN, so after the all-reduce every replica
    knows that some replica had no data and can raise the same error (nobody waits forever).
    Returns (stats, mean_r, x3 − mean_r); the last two are reused by the forward pass.
    """
    n, c = x3.shape[0] * x3.shape[2], x3.shape[1]
    if n == 0:
        stats = torch.zeros(2 * c + 1, dtype=torch.float64, device=x3.device)
        stats[-1] = float("nan")
        return stats, None, None
    mean_r = x3.mean((0, 2), keepdim=True)
    xc = x3 - mean_r
    m2 = (xc * xc).sum((0, 2)).double()
    sum_x = mean_r.view(c).double() * n
    count = torch.tensor([float(n)], dtype=torch.float64, device=x3.device)
    return torch.cat([sum_x, m2 + sum_x * mean_r.view(c).double(), count]), mean_r, xc


def _global_stats(stats, c, shape, group):
    """(mean, biased var, count) in float64 from the all-reduced [Σx, Σx², n]; raises on bad counts."""
    count = stats[2 * c].item()
    if not count >= 2:                  # NaN (an empty replica) fails this comparison too
        here = f"rank {dist.get_rank(group)} of {dist.get_world_size(group)} has input shape {shape}"
        if count != count:
            raise ValueError(f"input: at least one replica got an empty batch ({here}); every "
                             f"replica needs at least one sample per step (drop_last=True, equal "
                             f"shards), so all replicas raise this error together")
        raise ValueError(f"input: expected more than 1 value per channel over all replicas when "
                         f"training, got {count:.0f} ({here})")
    mean = stats[:c] / count
    var = (stats[c:2 * c] / count - mean * mean).clamp_min_(0.0)
    return mean, var, count


class _SyncNormalize(torch.autograd.Function):
    """Batch norm over (n_r, C, L) slices on all replicas: y = x̂·γ + β with global statistics.

    The closed form of `functional._Normalize` for batch norm, with its two per-channel sums
    taken over all replicas. Returns (y, mean, unbiased var) — the last two for the running averages.
    The loss it differentiates is the sum of the replicas' losses (DDP's, before it averages).

    Double backward (gradient penalties, Hessian-vector products across replicas): under
    create_graph the same formula is evaluated again with differentiable primitives, and its
    cross-replica sums with `_AllReduceSum`, whose backward is an all-reduce too: autograd then
    differentiates the closed form, as for `_Normalize`. x̂ is recomputed from x with the
    statistics all-reduced once more, centred at the saved global mean m (a constant):
    var = mean((x − m)²) − (mean(x) − m)² holds for any m and keeps float32 free of cancellation.
    That path costs two all-reduces (x̂, then [Σγ·dy, Σγ·dy·x̂]), plus those of the second backward;
    every replica must take it together, as with every collective. The first-order path is untouched.
    """

    @staticmethod
    def forward(ctx, x3, weight, bias, eps, group, shape):
        c = x3.shape[1]
        stats, mean_r, xc = replica_stats(x3)
        dist.all_reduce(stats, group=group)                  # the one collective of the forward
        mean, var, count = _global_stats(stats, c, shape, group)
        rstd = (var + eps).rsqrt().to(x3.dtype).view(1, c, 1)
        mean = mean.to(x3.dtype)
        xhat = xc.add_(mean_r - mean.view(1, c, 1)).mul_(rstd)   # x − global mean, reusing x − mean_r
        y = _scale_shift(xhat, weight, bias)
        ctx.save_for_backward(x3, xhat, rstd, weight, mean)
        ctx.count, ctx.group, ctx.eps = count, group, eps
        unbiased = (var * (count / (count - 1))).to(x3.dtype)
        ctx.mark_non_differentiable(mean, unbiased)
        return y, mean, unbiased

    @staticmethod
    def backward(ctx, dy, _dmean, _dvar):
        # dx = (dy − Σdy/M − x̂·Σ(dy·x̂)/M)·γ/std, the sums over the M values of all replicas.
        x3, xhat, rstd, weight, mean = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        if torch.is_grad_enabled():
            return (*_sync_graph_backward(ctx, dy, x3, xhat, rstd, weight, mean), None, None, None)
        c = xhat.shape[1]
        sum_dy = dy.sum((0, 2))
        sum_dy_xhat = (dy * xhat).sum((0, 2))
        # γ and β get this replica's share only: DDP all-reduces parameter gradients itself.
        dweight = sum_dy_xhat.view(1, c, 1).clone() if need_w else None
        dbias = sum_dy.view(1, c, 1).clone() if need_b else None
        dx = None
        if need_x:
            sums = torch.cat([sum_dy, sum_dy_xhat])
            dist.all_reduce(sums, group=ctx.group)           # the one collective of the backward
            sums /= ctx.count
            dx = _input_grad(dy, xhat, rstd, weight, sums[:c].view(1, c, 1), sums[c:].view(1, c, 1))
        return dx, dweight, dbias, None, None, None


def _sync_graph_backward(ctx, dy, x3, xhat, rstd, weight, mean):
    """_SyncNormalize's (dx, dγ, dβ) as a differentiable function of (dy, every replica's x, γ)."""
    need_x, need_w, need_b = ctx.needs_input_grad[:3]
    c, group, count = x3.shape[1], ctx.group, ctx.count
    dx = None
    if need_x:                          # x̂ and 1/std as functions of x (else constants: saved ones)
        xc = x3 - mean.view(1, c, 1)
        moments = _AllReduceSum.apply(torch.cat([xc.sum((0, 2)), (xc * xc).sum((0, 2))]), group) / count
        shift = moments[:c].view(1, c, 1)
        rstd = (moments[c:].view(1, c, 1) - shift * shift + ctx.eps).rsqrt()
        xhat = (xc - shift) * rstd
        g = dy if weight is None else dy * weight
        means = _AllReduceSum.apply(torch.cat([g.sum((0, 2)), (g * xhat).sum((0, 2))]), group) / count
        dx = rstd * (g - means[:c].view(1, c, 1) - xhat * means[c:].view(1, c, 1))
    dweight = (dy * xhat).sum((0, 2), keepdim=True) if need_w else None
    dbias = dy.sum((0, 2), keepdim=True) if need_b else None
    return dx, dweight, dbias


class _AllReduceSum(torch.autograd.Function):
    """Σ over the replicas of `group`, differentiable to every order: each replica's copy of the
    sum depends on every replica's input, so the gradient is the all-reduced gradient."""

    @staticmethod
    def forward(ctx, t, group):
        ctx.group = group
        t = t.clone()
        dist.all_reduce(t, group=group)
        return t

    @staticmethod
    def backward(ctx, grad):
        return _AllReduceSum.apply(grad, ctx.group), None


def sync_batch_norm(input, running_mean, running_var, weight=None, bias=None, momentum=0.1, eps=1e-5,
                    process_group=None):
    """Training-mode batch norm with statistics over every replica of `process_group`.

    Same arguments as `functional.batch_norm` (training=True) plus the process group (None: the
    default group). Every replica must call it at the same point with the same C; batch sizes may
    differ. Running buffers, if given, get the global mean and the global unbiased variance.
    """
    check_ndim(input, 2, "(N, C) or (N, C, *)")
    check_range("eps", eps)
    check_range("momentum", momentum, 0.0, 1.0)
    n, c = input.shape[:2]
    for name, t in (("running_mean", running_mean), ("running_var", running_var),
                    ("weight", weight), ("bias", bias)):
        check_numel(name, t, c, f"channel of input with shape {tuple(input.shape)}")
    x3 = input.reshape(n, c, _prod(input.shape[2:]))      # not -1: an empty slice has 0 elements
    y, mean, var = _SyncNormalize.apply(x3, _view(weight, 1, c, 1), _view(bias, 1, c, 1), eps,
                                        process_group, tuple(input.shape))
    if running_mean is not None:
        _update_running(running_mean, mean, momentum)
    if running_var is not None:
        _update_running(running_var, var, momentum)
    return y.view_as(input)


def _world_size(group):
    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size(group)


# ----------------------------------------------------------------------------- the module
class SyncBatchNorm(_BatchNorm):
    """Batch norm whose training statistics span all replicas of a process group.

    torch.nn.SyncBatchNorm's constructor (keyword-only bias= included), parameters, buffers and
    state_dict keys; any (N, C, *) input; double backward across replicas (`_SyncNormalize`).
    Falls back to plain batch norm when torch.distributed is not initialised or the group has one
    process, and in eval mode (running statistics, no communication).
    """
    _ndims, _shapes = tuple(range(2, 10)), "(N, C) or (N, C, *) input"

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True,
                 process_group=None, device=None, dtype=None, *, bias=True):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype, bias=bias)
        self.process_group = process_group

    def forward(self, input):
        if not self.training or _world_size(self.process_group) < 2:
            return super().forward(input)
        self._check_input(input)
        momentum = self._momentum()
        track = self.track_running_stats
        return sync_batch_norm(input, self.running_mean if track else None,
                               self.running_var if track else None, self.weight, self.bias,
                               momentum, self.eps, self.process_group)

    @classmethod
    def convert_sync_batchnorm(cls, module, process_group=None):
        """See `normkit.distributed.convert_sync_batchnorm`."""
        return convert_sync_batchnorm(module, process_group)


def convert_sync_batchnorm(module, process_group=None):
    """Replace every BatchNorm*d in `module` (torch.nn's or normkit's) by a normkit SyncBatchNorm.

    Like torch.nn.SyncBatchNorm.convert_sync_batchnorm: the new layer takes over the old one's
    parameter and buffer tensors themselves (an optimizer built earlier keeps working) and its
    train/eval mode. Returns the converted module (a new object if `module` itself was a BN layer).
    """
    if not isinstance(module, nn.Module):
        raise ValueError(f"module: expected a torch.nn.Module, got {type(module).__name__}")
    out = module
    if isinstance(module, (nn.modules.batchnorm._BatchNorm, _BatchNorm)):
        out = SyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                            module.track_running_stats, process_group, bias=module.bias is not None)
        if module.affine:
            out.weight, out.bias = module.weight, module.bias
        out.running_mean, out.running_var = module.running_mean, module.running_var
        out.num_batches_tracked = module.num_batches_tracked
        out.training = module.training
        if hasattr(module, "qconfig"):
            out.qconfig = module.qconfig
    for name, child in module.named_children():
        out.add_module(name, convert_sync_batchnorm(child, process_group))
    return out


# ----------------------------------------------------------------------------- processes
def free_port():
    """A TCP port on 127.0.0.1 that is free right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank, world_size, port, timeout, fn, args, results):
    try:
        torch.set_num_threads(1)            # the processes share the machine's cores
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                world_size=world_size, timeout=datetime.timedelta(seconds=timeout))
        try:
            out = fn(rank, world_size, *args)
        finally:
            dist.destroy_process_group()
        buf = io.BytesIO()
        torch.save(out, buf)
        results.put((rank, True, buf.getvalue()))
    except BaseException:                   # report every failure to the parent, then exit
        results.put((rank, False, traceback.format_exc()))


def launch(fn, world_size, *args, timeout=60.0):
    """Run fn(rank, world_size, *args) in `world_size` fresh processes joined in a gloo group.

    The group meets on 127.0.0.1 at a free port; every collective, and the whole run, gives up
    after `timeout` seconds (TimeoutError) instead of hanging. fn must be importable (defined in a
    module, not in a notebook: spawned processes import it by name). Returns the list of the
    ranks' return values; a rank's exception is raised here as RuntimeError with its traceback.
    """
    check_int("world_size", world_size)
    check_range("timeout", timeout)
    ctx = torch.multiprocessing.get_context("spawn")
    results = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_entry, args=(r, world_size, port, timeout, fn, args, results), daemon=True)
             for r in range(world_size)]
    for p in procs:
        p.start()
    out, deadline = {}, time.monotonic() + timeout
    try:
        while len(out) < world_size:
            try:
                rank, ok, payload = results.get(timeout=min(1.0, max(deadline - time.monotonic(), 0.01)))
            except _queue.Empty:
                dead = [r for r, p in enumerate(procs) if p.exitcode is not None and r not in out]
                if dead:
                    raise RuntimeError(f"rank {dead[0]} exited (code {procs[dead[0]].exitcode}) "
                                       f"without a result") from None
                if time.monotonic() > deadline:
                    raise TimeoutError(f"launch: {world_size - len(out)} of {world_size} ranks gave "
                                       f"no result within timeout={timeout} s") from None
                continue
            if not ok:
                raise RuntimeError(f"rank {rank} of {world_size} failed:\n{payload}"
                                   + _more_failures(results, out, rank))
            out[rank] = torch.load(io.BytesIO(payload), weights_only=False)
        for p in procs:
            p.join(timeout=max(deadline - time.monotonic(), 1.0))
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join(1.0)
    return [out[r] for r in range(world_size)]


def _more_failures(results, out, first, grace=2.0):
    """The other ranks' reports of a failed run: the first one to arrive may only be a symptom."""
    text, deadline = "", time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            rank, ok, payload = results.get(timeout=0.2)
        except _queue.Empty:
            continue
        if not ok:
            text += f"\nrank {rank} failed too:\n{payload}"
    return text


# ----------------------------------------------------------------------------- worker functions
def run_each(rank, world_size, calls):
    """Worker: run several worker calls (fn, args) or (fn, args, kwargs) in one process group.

    Starting processes costs far more than most experiments: one launch, many calls. Returns the
    list of fn(rank, world_size, *args, **kwargs) results.
    """
    return [call[0](rank, world_size, *call[1], **(call[2] if len(call) > 2 else {})) for call in calls]
