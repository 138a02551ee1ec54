"""What synchronising batch norm costs per step: SyncBatchNorm vs plain BN across 2 and 4 gloo processes.

    .venv/bin/python benchmarks/bench_distributed.py          (part of `make bench`)

For each world size, one process group on localhost (normkit.distributed.launch) measures
- one BN layer, forward + backward: plain BatchNorm (no communication) vs SyncBatchNorm (one
  all-reduce of 2C + 1 numbers forward, one of 2C backward), and a bare all-reduce of 2C + 1;
- a whole DDP training step of the digits MLP (2 BN layers): plain BN vs SyncBatchNorm. DDP
  all-reduces the gradients either way; the difference is what synchronising BN adds.
Medians over repeats; every process uses one thread. Writes benchmarks/results/distributed.md.
With more processes than cores the processes also wait for each other's CPU time: read the
4-process rows on a 2-core machine as an upper bound.
"""
import os
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.functional import cross_entropy
from torch.nn.parallel import DistributedDataParallel

import normkit as nk
from normkit import distributed as D
from normkit.lessons.l10_distributed_batchnorm import time_step

OUT = Path(__file__).parent / "results" / "distributed.md"
WORLDS = (2, 4)
LAYERS = [(32, 64), (8, 32, 8, 8)]          # per-replica input of one BN layer
PER_REPLICA = 8                             # samples per replica in the DDP step


def ddp_step(rank, world_size, sync, repeats=40, warmup=5):
    """Worker: milliseconds per DDP training step (forward, backward, SGD) of the digits MLP."""
    torch.manual_seed(0)
    model = nk.models.mlp([64, 64, 64, 10], norm="batch")
    if sync:
        model = nk.convert_sync_batchnorm(model)
    model = DistributedDataParallel(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    data = nk.data.digits()
    x, y = data.x_train[:PER_REPLICA * world_size], data.y_train[:PER_REPLICA * world_size]
    x, y = x[rank::world_size], y[rank::world_size]
    samples = []
    for i in range(warmup + repeats):
        dist.barrier()
        t0 = time.perf_counter()
        loss = cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i >= warmup:
            samples.append(1e3 * (time.perf_counter() - t0))
    return statistics.median(samples)


def measure(world):
    calls = []
    for shape in LAYERS:
        calls += [(time_step, (shape, False)), (time_step, (shape, True))]
    calls += [(ddp_step, (False,)), (ddp_step, (True,))]
    results = D.launch(D.run_each, world, calls, timeout=600)
    # The slowest rank sets the pace of a synchronous step: report the max over ranks.
    worst = [max(r[i]["step_ms"] if isinstance(r[i], dict) else r[i] for r in results)
             for i in range(len(calls))]
    reduce_ms = [max(r[i]["allreduce_ms"] for r in results) for i in range(0, 2 * len(LAYERS), 2)]
    rows = []
    for k, shape in enumerate(LAYERS):
        c = shape[1]
        plain, sync = worst[2 * k], worst[2 * k + 1]
        rows.append((world, f"BN layer {'×'.join(map(str, shape))}", 2 * c + 1, plain, sync, reduce_ms[k]))
    plain, sync = worst[-2], worst[-1]
    rows.append((world, f"DDP step, MLP 64-64-64-10, {PER_REPLICA}/replica", "2 × 129", plain, sync, None))
    return rows


def main():
    torch.manual_seed(0)
    rows = []
    for world in WORLDS:
        t0 = time.perf_counter()
        rows += measure(world)
        print(f"world {world}: {time.perf_counter() - t0:.1f} s", flush=True)
    lines = ["# SyncBatchNorm: the cost of synchronising batch norm", "",
             f"gloo on localhost, torch {torch.__version__}, {os.cpu_count()} cores "
             f"({platform.machine()}), 1 thread per process; median ms per step, slowest rank.",
             "Overhead = SyncBatchNorm − plain BN: one all-reduce forward and one backward per layer.",
             "", "| processes | what | numbers per all-reduce (forward) | plain BN ms | SyncBN ms | "
             "overhead ms | bare all-reduce ms |", "|---:|---|---:|---:|---:|---:|---:|"]
    for world, what, numbers, plain, sync, bare in rows:
        bare_s = f"{bare:.3f}" if bare is not None else "–"
        lines.append(f"| {world} | {what} | {numbers} | {plain:.3f} | {sync:.3f} | {sync - plain:+.3f} | {bare_s} |")
    text = "\n".join(lines) + "\n"
    print(text)
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(text)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
