"""Data-parallel training with synchronised batch norm on CPUs: the same script on one or many machines.

One machine, 2 processes (torchrun starts them and sets RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT):

    torchrun --standalone --nproc_per_node=2 examples/ddp_syncbn.py
    torchrun --standalone --nproc_per_node=2 examples/ddp_syncbn.py --no-sync     # per-replica BN

Two machines with 2 processes each: run on both, node_rank 0 on the machine whose address is given
(it must be reachable from the other one; pick any free port):

    torchrun --nnodes=2 --nproc_per_node=2 --node_rank=0 --master_addr=10.0.0.1 --master_port=29500 \
        examples/ddp_syncbn.py
    torchrun --nnodes=2 --nproc_per_node=2 --node_rank=1 --master_addr=10.0.0.1 --master_port=29500 \
        examples/ddp_syncbn.py

Each process is one replica: it builds the same model (same seed), takes its slice of every global
mini-batch, and DistributedDataParallel averages the gradients, so all copies take the same step.
`nk.convert_sync_batchnorm` turns the BN layers into SyncBatchNorm. At the end rank 0 prints the
test accuracy and, for comparison, the one-process simulation of the same run (notebook 10).
"""
import argparse

import torch
import torch.distributed as dist
from torch.nn.functional import cross_entropy
from torch.nn.parallel import DistributedDataParallel

import normkit as nk
from normkit.lessons import l10_distributed_batchnorm as lesson


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-replica", type=int, default=4, help="samples per replica and step")
    parser.add_argument("--steps", type=int, default=100)   # as notebook 10 trains
    parser.add_argument("--no-sync", action="store_true", help="keep plain (per-replica) batch norm")
    args = parser.parse_args()

    dist.init_process_group("gloo")             # env:// — the variables torchrun sets
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(1)

    torch.manual_seed(0)                        # the same initial weights on every replica
    model = nk.models.mlp([64, 64, 64, 10], norm="batch")
    if not args.no_sync:
        model = nk.convert_sync_batchnorm(model)
    model = DistributedDataParallel(model)      # all-reduces (averages) the gradients every step
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    data = nk.data.digits()
    b = args.per_replica                        # every replica draws the same global batches ...
    order = nk.train.batches(len(data.x_train), world * b, torch.Generator().manual_seed(0))
    for _ in range(args.steps):
        idx = next(order)
        mine = idx[rank * b:(rank + 1) * b]     # ... and keeps its own slice of each
        loss = cross_entropy(model(data.x_train[mine]), data.y_train[mine])
        opt.zero_grad()
        loss.backward()
        opt.step()

    if rank == 0:               # the wrapped module: DDP's own forward would wait for the other ranks
        net = model.module.eval()
        with torch.no_grad():
            acc = (net(data.x_test).argmax(1) == data.y_test).float().mean().item()
        mode = "per-replica" if args.no_sync else "sync"
        sim = lesson.train_data_parallel(mode, world, b, steps=args.steps).final_test_acc
        print(f"{world} processes × {b} samples, {mode} BN: test accuracy {acc:.3f} "
              f"(one-process simulation: {sim:.3f})")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
