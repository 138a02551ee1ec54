"""Notebook 10, batch norm across processes: per-replica BN vs synchronised BN, and its exercises.

What the notebook measures: how training degrades when plain BN normalizes each replica's slice of
2–16 samples on its own, and that synchronised BN (`normkit.SyncBatchNorm`) behaves like BN over the
global batch; across real gloo processes (`normkit.distributed.launch`) that it equals batch norm over
the whole batch, and what a step costs.

    PerReplicaBatchNorm     what plain BN computes under data parallelism, simulated in one process
    train_data_parallel     the experiment: the digits MLP with per-replica BN, SyncBN or one device
                            (train.fit; returns a train.History)
    data_parallel_diagram   the picture of data parallelism with SyncBN
    replica_step, time_step worker functions for `normkit.distributed.launch`: spawned processes
                            import them by name, so they live in a module, not in the notebook
    launch_in_background    `normkit.distributed.launch` in a thread: the processes start (seconds:
                            each imports torch) while the notebook goes on
    check_combine_stats, check_merge_moments, check_sync_input_grad   the exercise checkers
"""
import time
from concurrent.futures import ThreadPoolExecutor

import torch
import torch.distributed as dist

from .. import check, data, models, train
from ..distributed import SyncBatchNorm, launch
from ..functional import batch_norm
from ..layers import BatchNorm1d, BatchNorm2d, _BatchNorm
from ..validate import check_int

__all__ = ["PerReplicaBatchNorm", "train_data_parallel", "data_parallel_diagram", "replica_step",
           "time_step", "launch_in_background", "check_combine_stats", "check_merge_moments", "check_sync_input_grad"]


# ----------------------------------------------------------------------------- simulation in one process
class PerReplicaBatchNorm(_BatchNorm):
    """What plain BN computes under data parallelism, simulated in one process.

    In training the batch is cut into `replicas` equal slices along dim 0 and each slice is
    normalized with its own statistics, as each replica's BN layer would. Every replica would also
    update its own running statistics; DDP then copies rank 0's buffers to the others before each
    forward (broadcast_buffers=True), so here slice 0 alone updates them. Eval: running statistics.
    """
    _ndims, _shapes = tuple(range(2, 10)), "(N, C) or (N, C, *) input"

    def __init__(self, num_features, replicas, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, device=None, dtype=None):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype)
        check_int("replicas", replicas)
        self.replicas = replicas

    def forward(self, input):
        if not self.training or self.replicas == 1:
            return super().forward(input)
        self._check_input(input)
        r, c = self.replicas, self.num_features
        if len(input) % r:
            raise ValueError(f"input: expected a batch divisible by replicas={r}, "
                             f"got shape {tuple(input.shape)}")
        momentum = self._momentum()
        # One call for all replicas: (r·b, C, …) → (b, r·C, …), each replica's channels its own
        # columns, so batch norm's per-column statistics are each replica's slice statistics.
        rest = input.shape[2:]
        cols = input.reshape(r, -1, c, *rest).transpose(0, 1).reshape(-1, r * c, *rest)
        tiled = [None if t is None else t.repeat(r) for t in (self.weight, self.bias)]
        stats = [None, None]
        if self.track_running_stats:
            stats = [self.running_mean.repeat(r), self.running_var.repeat(r)]
        out = batch_norm(cols, *stats, *tiled, True, momentum, self.eps)
        if self.track_running_stats:            # replica 0's statistics (DDP broadcasts rank 0's)
            self.running_mean.copy_(stats[0][:c])
            self.running_var.copy_(stats[1][:c])
        return out.reshape(-1, r, c, *rest).transpose(0, 1).reshape(input.shape)

    def extra_repr(self):
        return super().extra_repr() + f", replicas={self.replicas}"


def train_data_parallel(mode, replicas, per_replica, steps=100, lr=0.1, width=64, eval_every=10, seed=0):
    """The notebook's experiment: an MLP with BN on the 8×8 digits under simulated data parallelism.

    mode 'per-replica': `replicas` replicas of `per_replica` samples, each BN with its own slice's
    statistics (PerReplicaBatchNorm); 'sync': the same global batch with SyncBatchNorm's statistics,
    i.e. BN over all replicas·per_replica samples (the identity that `replica_step` verifies across
    real processes); 'single': one device with `per_replica` samples per step (small-batch BN).
    The loss is the mean over the global batch, so gradients are averaged as DDP averages them.
    `train.fit` with SGD, momentum 0.9; test accuracy (eval mode) every `eval_every` steps.
    Returns the train.History (`eval_steps`, `test_acc`, `loss`).
    """
    if mode not in ("per-replica", "sync", "single"):
        raise ValueError(f"mode={mode!r}: expected 'per-replica', 'sync' or 'single'")
    check_int("replicas", replicas)
    check_int("per_replica", per_replica)
    torch.manual_seed(seed)                 # the initial weights
    norm = (lambda w: PerReplicaBatchNorm(w, replicas)) if mode == "per-replica" else BatchNorm1d
    model = models.mlp([data.PIXELS, width, width, data.CLASSES], norm=norm)
    batch = per_replica if mode == "single" else replicas * per_replica
    return train.fit(model, data.digits(), steps=steps, batch_size=batch, lr=lr, optimizer="sgd",
                     momentum=0.9, eval_every=eval_every, eval_train=False, seed=seed)


def data_parallel_diagram(ax, replicas=3, per_replica=2):
    """Draw data parallelism with synchronised BN on a matplotlib Axes (notebook 10's picture).

    The global mini-batch is cut into one slice per replica; each replica runs its copy of the
    model; SyncBN joins the replicas at every BN layer, DDP joins them once for the gradients.
    """
    r_, b = replicas, per_replica
    ax.set(xlim=(0, r_), ylim=(0.6, 10.4))
    ax.axis("off")
    xs = [r + 0.5 + 0.07 * (i - (b - 1) / 2) for r in range(r_) for i in range(b)]   # grouped by replica
    ax.scatter(xs, [9.5] * len(xs), marker="s", s=90, c=[f"C{i // b}" for i in range(r_ * b)])
    ax.text(r_ / 2, 10.25, f"global mini-batch: {r_} replicas × {b} samples",
            ha="center", va="center")
    steps = [("{b} samples", 8.2), ("Linear", 6.9), ("BatchNorm", 5.6), ("ReLU → Linear", 4.3),
             ("loss on {b} samples", 3.0)]
    box = dict(boxstyle="round,pad=0.35", fc="white")
    for r in range(r_):
        cx = r + 0.5
        ax.annotate("", (cx, 8.6), (cx, 9.2), arrowprops=dict(arrowstyle="->", color=f"C{r}"))
        for k, (label, y) in enumerate(steps):
            ax.text(cx, y, (f"replica {r}: " if k == 0 else "") + label.format(b=b), ha="center",
                    va="center", bbox=dict(box, ec=f"C{r}", lw=2 if label == "BatchNorm" else 1))
            if k:
                ax.annotate("", (cx, y + 0.4), (cx, steps[k - 1][1] - 0.4), arrowprops=dict(arrowstyle="->"))
        ax.annotate("", (cx, 1.75), (cx, 2.6), arrowprops=dict(arrowstyle="->"))
    ax.plot([0.05, r_ - 0.05], [5.6, 5.6], ls="--", color="crimson", zorder=0)
    ax.text(r_ / 2, 4.95, "SyncBN: all-reduce [Σx, Σx², n] forward, [Σdy, Σdy·x̂] backward",
            ha="center", va="center", color="crimson",
            bbox=dict(boxstyle="square,pad=0.1", fc="white", ec="none"))
    ax.text(r_ / 2, 1.35, "DDP: all-reduce (average) the gradients → every replica takes the same step",
            ha="center", va="center", bbox=dict(box, ec="black", fc="0.93"))


# ----------------------------------------------------------------------------- worker functions
def replica_step(rank, world_size, x, dy, sizes, steps=1, **bn_kwargs):
    """Worker: SyncBatchNorm on this rank's slice of the global batch x (sizes[r] rows for rank r).

    Runs `steps` training steps with the upstream gradient dy (loss = Σ y·dy) and returns this
    rank's output and input gradient of the last step, its (local) γ/β gradients summed over the
    steps, and the running statistics — or {'error': message} if the layer raised ValueError.
    """
    torch.manual_seed(0)
    start = sum(sizes[:rank])
    xs, dys = x[start:start + sizes[rank]], dy[start:start + sizes[rank]]
    bn = SyncBatchNorm(x.shape[1], dtype=x.dtype, **bn_kwargs)
    out = {}
    try:
        for _ in range(steps):
            xi = xs.clone().requires_grad_(True)
            y = bn(xi)
            (y * dys).sum().backward()
    except ValueError as e:
        return {"error": str(e)}
    out.update(y=y.detach(), dx=xi.grad)
    if bn.affine:
        out.update(dweight=bn.weight.grad, dbias=bn.bias.grad)
    if bn.track_running_stats:
        out.update(running_mean=bn.running_mean, running_var=bn.running_var,
                   num_batches_tracked=bn.num_batches_tracked)
    bn.eval()
    out["y_eval"] = bn(xs).detach()
    return out


def time_step(rank, world_size, shape, sync=True, repeats=50, warmup=5):
    """Worker: milliseconds per forward + backward of one BN layer on an input of `shape` per rank.

    sync=True: SyncBatchNorm (two all-reduces); False: plain BatchNorm (no communication).
    Also times a bare all-reduce of 2C + 1 float64 numbers. Returns a dict of medians in ms.
    """
    torch.manual_seed(rank)
    c = shape[1]
    layer = SyncBatchNorm(c) if sync else (BatchNorm2d if len(shape) == 4 else BatchNorm1d)(c)
    x = torch.randn(shape, requires_grad=True)
    dy = torch.randn(shape)
    payload = torch.zeros(2 * c + 1, dtype=torch.float64)
    step_ms, reduce_ms = [], []
    for i in range(warmup + repeats):
        dist.barrier()
        t0 = time.perf_counter()
        (layer(x) * dy).sum().backward()              # not backward(dy): that makes torch import sympy (~1 s)
        t1 = time.perf_counter()
        dist.all_reduce(payload)
        t2 = time.perf_counter()
        if i >= warmup:
            step_ms.append(1e3 * (t1 - t0))
            reduce_ms.append(1e3 * (t2 - t1))
    return {"step_ms": float(torch.tensor(step_ms).median()),
            "allreduce_ms": float(torch.tensor(reduce_ms).median())}


def launch_in_background(fn, world_size, *args, timeout=60.0):
    """`normkit.distributed.launch(fn, world_size, *args)` in a background thread; returns at once.

    Starting the processes takes seconds (each one imports torch), most of it on cores the kernel
    leaves idle. The returned `concurrent.futures.Future` gives launch's list of per-rank results
    with `.result()` (waiting if the processes are still running), or raises launch's error.
    """
    pool = ThreadPoolExecutor(1, thread_name_prefix="launch")
    future = pool.submit(launch, fn, world_size, *args, timeout=timeout)
    pool.shutdown(wait=False)               # the submitted launch still runs; the thread then ends
    return future


# ----------------------------------------------------------------------------- exercise checkers
def _replica_slices(seed, sizes=(3, 5, 2), c=4):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(sum(sizes), c, generator=g, dtype=torch.float64) * 1.5 + 2.0
    return x, x.split(list(sizes))


def check_combine_stats(fn):
    """Exercise: fn(sums, sumsqs, counts) -> (mean, var) over all replicas.

    sums and sumsqs: (R, C) per-replica Σx and Σx²; counts: (R,) samples per replica. mean and var
    (biased, what batch norm normalizes with) are per channel, as if all samples sat in one batch.
    """
    x, parts = _replica_slices(40)
    sums = torch.stack([p.sum(0) for p in parts])
    sumsqs = torch.stack([(p * p).sum(0) for p in parts])
    counts = torch.tensor([float(len(p)) for p in parts], dtype=torch.float64)
    expected = torch.cat([x.mean(0), x.var(0, correction=0)])
    return check.exercise("combine_stats (mean then var)", check.joined(fn), (sums, sumsqs, counts),
                          expected, "the mean and biased variance of all replicas' samples in one batch")


def check_merge_moments(fn):
    """Exercise: fn(n_a, mean_a, m2_a, n_b, mean_b, m2_b) -> (mean, m2), stably.

    Two replicas' counts (floats), means and centred sums of squares m2 = Σ(x − mean)² per channel,
    in float32 and around 10⁴ with std 1 (activations far from zero): the merged mean must be right
    to 0.005 and m2 to a relative 0.005, which float32 sums of squares (Σx² ≈ 10⁹) cannot do.
    """
    g = torch.Generator().manual_seed(41)
    a, b = (torch.randn(n, 3, generator=g, dtype=torch.float64) + 1e4 + shift
            for n, shift in ((6, 0.0), (9, 0.3)))
    a, b = a.float().double(), b.float().double()      # the float32 data, exactly
    x = torch.cat([a, b])
    args = []
    for part in (a, b):
        args += [float(len(part)), part.mean(0).float(), ((part - part.mean(0)) ** 2).sum(0).float()]
    expected = torch.cat([x.mean(0), ((x - x.mean(0)) ** 2).sum(0)])
    got_both = check.joined(fn)

    def scaled(*args):                  # compare m2 relative to its size: divide both by m2_true
        got = got_both(*args)
        if got is None or got.shape != expected.shape:
            return got                  # the runner reports the shape
        return torch.cat([got[:3], got[3:] / expected[3:]])
    return check.exercise("merge_moments (mean then m2/m2_true)", scaled, tuple(args),
                          torch.cat([expected[:3], torch.ones(3, dtype=torch.float64)]),
                          "float64 statistics of the merged float32 data", atol=5e-3)


def check_sync_input_grad(fn):
    """Exercise: fn(dy, xhat, rstd, gamma, sum_dy, sum_dy_xhat, count) -> dx.

    One replica's (n_r, C) slice: its upstream gradient dy and normalized x̂, the global 1/std and γ
    (per channel), and the all-reduced Σdy, Σdy·x̂ and total count over all replicas. dx must equal
    that replica's rows of the input gradient of batch norm over all replicas' samples together.
    """
    x, parts = _replica_slices(42)
    g = torch.Generator().manual_seed(43)
    gamma = torch.rand(x.shape[1], generator=g, dtype=torch.float64) + 0.5
    dy = torch.randn(x.shape, generator=g, dtype=torch.float64)
    xl = x.clone().requires_grad_(True)
    (torch.nn.functional.batch_norm(xl, None, None, gamma, None, training=True, eps=1e-5) * dy).sum().backward()
    rstd = (x.var(0, correction=0) + 1e-5).rsqrt()
    xhat = (x - x.mean(0)) * rstd
    sum_dy, sum_dy_xhat, count = dy.sum(0), (dy * xhat).sum(0), float(len(x))

    def per_replica(dy, xhat):
        outs = [fn(d, h, rstd, gamma, sum_dy, sum_dy_xhat, count)
                for d, h in zip(dy.split([len(p) for p in parts]), xhat.split([len(p) for p in parts]))]
        return None if any(o is None for o in outs) else torch.cat([torch.as_tensor(o) for o in outs])
    return check.exercise("sync_input_grad", per_replica, (dy, xhat), xl.grad,
                          "autograd through batch norm over all replicas' samples")
