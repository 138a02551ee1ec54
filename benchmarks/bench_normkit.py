"""Forward + backward time of each normkit op vs its torch counterpart, measured in the same run.

    make bench        (or: .venv/bin/python benchmarks/bench_normkit.py)

Prints a table and writes benchmarks/results/normkit_vs_torch.md. Ratio = normkit / torch
(median of repeated timings); below 1 means normkit is faster.
"""
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as TF

import normkit.functional as F

SHAPES = [(256, 512), (64, 32, 16, 16)]
OUT = Path(__file__).parent / "results" / "normkit_vs_torch.md"
ROUNDS = 7          # best of 7 medians: this VM's timings swing 2x between runs


def ops(shape):
    c = shape[1]
    tail = shape[1:]
    w, b = torch.randn(c, requires_grad=True), torch.randn(c, requires_grad=True)
    wl, bl = torch.randn(tail, requires_grad=True), torch.randn(tail, requires_grad=True)
    g = 8 if c % 8 == 0 else 1
    rm, rv = torch.zeros(c), torch.ones(c)
    ops = {
        "batch_norm (train)": (lambda x: F.batch_norm(x, rm, rv, w, b, True),
                               lambda x: TF.batch_norm(x, rm, rv, w, b, True)),
        "batch_norm (eval)": (lambda x: F.batch_norm(x, rm, rv, w, b, False),
                              lambda x: TF.batch_norm(x, rm, rv, w, b, False)),
        "layer_norm": (lambda x: F.layer_norm(x, tail, wl, bl), lambda x: TF.layer_norm(x, tail, wl, bl)),
        f"group_norm (G={g})": (lambda x: F.group_norm(x, g, w, b), lambda x: TF.group_norm(x, g, w, b)),
        "rms_norm": (lambda x: F.rms_norm(x, tail, wl), lambda x: TF.rms_norm(x, tail, wl)),
        "dropout (p=0.5)": (lambda x: F.dropout(x, 0.5), lambda x: TF.dropout(x, 0.5)),
        "gaussian_noise": (lambda x: F.gaussian_noise(x, 0.1), lambda x: x + 0.1 * torch.randn_like(x)),
    }
    if len(shape) > 2:
        ops["instance_norm"] = (lambda x: F.instance_norm(x, weight=w, bias=b),
                                lambda x: TF.instance_norm(x, weight=w, bias=b))
    return ops


def time_fwd_bwd(fn, x, dy, repeats=30):
    for _ in range(3):
        fn(x).backward(dy)
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(x).backward(dy)
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples) * 1e3


def main():
    torch.set_num_threads(2)        # normkit sets 1 for the notebooks; compare kernels on both cores
    torch.manual_seed(0)
    rows = []
    for shape in SHAPES:
        x = torch.randn(shape, requires_grad=True)
        dy = torch.randn(shape)
        for name, (ours, ref) in ops(shape).items():
            # alternate the two so drift in machine load hits both alike
            t_ours, t_ref = [], []
            for _ in range(ROUNDS):
                t_ours.append(time_fwd_bwd(ours, x, dy))
                t_ref.append(time_fwd_bwd(ref, x, dy))
            a, r = min(t_ours), min(t_ref)
            rows.append((name, "×".join(map(str, shape)), a, r, a / r))
    header = "| op | shape | normkit ms | torch ms | ratio |\n|---|---|---:|---:|---:|\n"
    body = "".join(f"| {n} | {s} | {a:.3f} | {r:.3f} | {q:.2f}× |\n" for n, s, a, r, q in rows)
    worst = max(rows, key=lambda r: r[4])
    info = (f"forward + backward, float32, torch {torch.__version__}, {torch.get_num_threads()} threads, "
            f"{platform.processor() or platform.machine()}; median of 30, best of {ROUNDS} rounds.\n"
            f"Slowest relative to torch: {worst[0]} on {worst[1]} at {worst[4]:.2f}×.\n\n")
    text = "# normkit vs torch\n\n" + info + header + body
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
