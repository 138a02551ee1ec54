"""How long each notebook takes as a student meets it: a cold kernel, then Run All.

    make bench-notebooks      (or: .venv/bin/python benchmarks/bench_notebooks.py [--repeats N] [notebooks...])

Each notebook runs in a fresh kernel (nbclient, as nbconvert and "Restart Kernel and Run All" do);
the clock starts before the kernel is launched and stops after the last cell, so the 2-4 s of kernel
start and `import torch` count. The whole series is the sum. Targets (issue 13): every notebook
<= 10 s, the series <= 60 s, on 2 cores. Writes benchmarks/results/notebooks.md and notebooks.json
with the commit, the machine and its load average, since timings depend on what else runs.
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results"
NOTEBOOK_TARGET_S, SERIES_TARGET_S = 10.0, 60.0


def cold_run(path):
    """Seconds from kernel launch to the last cell's end, and the seconds spent in cells."""
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    client.execute()
    total = time.perf_counter() - start
    cells = sum(_cell_seconds(c) for c in nb.cells if c.cell_type == "code")
    return total, cells


def _cell_seconds(cell):
    t = cell.get("metadata", {}).get("execution", {})
    if "iopub.execute_input" not in t or "shell.execute_reply" not in t:
        return 0.0
    parse = datetime.datetime.fromisoformat
    end, start = (parse(t[k].rstrip("Z")) for k in ("shell.execute_reply", "iopub.execute_input"))
    return (end - start).total_seconds()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--repeats", type=int, default=2, help="runs per notebook; the median is reported")
    args = parser.parse_args()
    paths = args.notebooks or sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    os.environ.pop("MPLBACKEND", None)  # as a student's kernel: inline figures
    rows = []
    for path in paths:
        runs = [cold_run(path.resolve()) for _ in range(args.repeats)]
        total = statistics.median(r[0] for r in runs)
        cells = statistics.median(r[1] for r in runs)
        rows.append({"notebook": path.name, "cold_s": round(total, 2), "cells_s": round(cells, 2),
                     "runs_s": [round(r[0], 2) for r in runs]})
        print(f"{path.name:45s} cold {rows[-1]['cold_s']:5.1f} s  (cells {rows[-1]['cells_s']:4.1f} s)  "
              f"runs {rows[-1]['runs_s']}", flush=True)   # the rounded values the table shows
    series = sum(r["cold_s"] for r in rows)
    print(f"{'series':45s} cold {series:5.1f} s")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    meta = {"commit": commit, "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
            "load_average": [round(x, 2) for x in os.getloadavg()], "repeats": args.repeats,
            "series_s": round(series, 1)}
    if len(rows) == len(sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))):
        OUT.mkdir(exist_ok=True)
        (OUT / "notebooks.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
        lines = [f"# Notebook run time from a cold kernel (commit {commit})", "",
                 f"{meta['date']}, {meta['machine']}, load average {meta['load_average']}, median of "
                 f"{args.repeats} runs. Clock: kernel launch to the last cell (nbclient), so kernel start and "
                 f"`import torch` count. Targets: each notebook ≤ {NOTEBOOK_TARGET_S:.0f} s, "
                 f"series ≤ {SERIES_TARGET_S:.0f} s.", "",
                 "| notebook | cold (s) | in cells (s) | meets ≤ 10 s |", "|---|---:|---:|:---:|"]
        lines += [f"| {r['notebook']} | {r['cold_s']:.1f} | {r['cells_s']:.1f} | "
                  f"{'yes' if r['cold_s'] <= NOTEBOOK_TARGET_S else 'NO'} |" for r in rows]
        lines += [f"| **series** | **{series:.1f}** | {sum(r['cells_s'] for r in rows):.1f} | "
                  f"{'yes' if series <= SERIES_TARGET_S else 'NO'} |", ""]
        (OUT / "notebooks.md").write_text("\n".join(lines))
    return 0 if series <= SERIES_TARGET_S and all(r["cold_s"] <= NOTEBOOK_TARGET_S for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
