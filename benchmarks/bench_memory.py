"""The memory one student needs on a class server (JupyterHub, Binder): per notebook, its kernel's
peak RSS, and the share of the Jupyter server itself.

    make bench       (or: .venv/bin/python benchmarks/bench_memory.py [--server-python PY] [notebooks...])

Kernel, per notebook, in a cold kernel (nbclient, as "Restart Kernel and Run All"), three moments:
- Run All: the kernel's peak RSS (VmHWM) once every cell has run and the slider panels have drawn
  their frames ahead (normkit.explore draws them while the kernel is idle, after Run All);
- idle: its RSS then, what an open notebook keeps holding;
- sliders: the peak after a student's exploring, simulated: every panel's sliders set, one
  combination of values after another (up to KEEP_FRAMES + 64 of them, evenly spread), as a drag
  does, so each panel's frame cache fills to its limit and every `explore.cache`d run is made.
Processes the kernel starts (notebook 10's gloo workers) are sampled every 0.1 s: the largest sum of
the kernel's RSS and its children's private pages (the libraries they share with the kernel counted
once, as a container's memory limit counts them) is the "with children" column.

Server: `jupyter lab` from --server-python (default: this venv; give a class environment made by
hub/install.sh to measure exactly what students get) on a copy of notebooks/, driven as a front end
drives it: the lab page, then for each notebook its contents read, a kernel session, every cell run
through the kernel websocket, the notebook saved back, the session closed. Its peak RSS is the
server's share (one server per student). Memory does not depend on the load, but the load average is
recorded. Writes benchmarks/results/memory.md and memory.json.
"""
import argparse
import datetime
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import nbformat
import psutil
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.browser import labdriver  # noqa: E402  (a Jupyter server and its REST and kernel clients)
OUT = ROOT / "benchmarks" / "results"
MB = 1e6

SETTLED = """
from normkit import explore as _ex
print(sum(len(_p._pending) for _p in _ex.PANELS))
"""
EXPLORE = """
import itertools as _it, time as _time
from normkit import explore as _ex
_t0, _moves, _cut = _time.perf_counter(), 0, False
for _p in _ex.PANELS:
    _grids = [_ex._range(_w) for _w in _p.controls.values()]
    if not all(_grids):
        continue
    _combos = list(_it.product(*_grids))
    _limit = _ex.KEEP_FRAMES + 64
    _combos = _combos[::max(1, math.ceil(len(_combos) / _limit))] if len(_combos) > _limit else _combos
    for _c in _combos:
        for _w, _v in zip(_p.controls.values(), _c):
            _w.value = _v
        _moves += 1
        if _time.perf_counter() - _t0 > BUDGET_S:
            _cut = True
            break
    if _cut:
        break
_frames = [_f for _p in _ex.PANELS for _f in _p._frames.values()]
print(json.dumps({"panels": len(_ex.PANELS), "moves": _moves, "cut": _cut, "frames": len(_frames),
                  "frame_bytes": sum(len(_f) for _f in _frames), "s": round(_time.perf_counter() - _t0, 1)}))
"""
EXPLORE_BUDGET_S = 120


def _status_kb(pid, field):
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def _private_kb(pid):
    """Pages only this process maps (Private_Clean + Private_Dirty)."""
    try:
        return sum(int(line.split()[1]) for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
                   if line.startswith(("Private_Clean:", "Private_Dirty:")))
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return 0


class TreeSampler(threading.Thread):
    """Every `interval` s: the process's RSS plus its descendants' private pages (their shared pages,
    torch's libraries, are the ones the process maps too: a container's limit counts them once);
    keeps the largest sum, and the largest number of processes seen at once."""

    def __init__(self, pid, interval=0.1):
        super().__init__(daemon=True)
        self.pid, self.interval, self.peak_kb, self.most = pid, interval, 0, 1
        self.stop = threading.Event()

    def run(self):
        root = psutil.Process(self.pid)
        while not self.stop.is_set():
            try:
                pids = [self.pid] + [c.pid for c in root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            self.peak_kb = max(self.peak_kb, _status_kb(self.pid, "VmRSS") + sum(map(_private_kb, pids[1:])))
            self.most = max(self.most, len(pids))
            self.stop.wait(self.interval)


def _run_code(client, code, timeout=600):
    """Run `code` in the client's kernel as an extra cell; its printed text."""
    cell = nbformat.v4.new_code_cell(code)
    client.nb.cells.append(cell)
    client.execute_cell(cell, len(client.nb.cells) - 1)
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


def _wait_idle(pid, quiet_s=2.0, cap_s=180):
    """Until the process has used < 2 % of a core for `quiet_s` (its frames drawn ahead)."""
    proc, t0 = psutil.Process(pid), time.monotonic()
    last = sum(proc.cpu_times()[:2])
    while time.monotonic() - t0 < cap_s:
        time.sleep(quiet_s)
        now = sum(proc.cpu_times()[:2])
        if now - last < 0.02 * quiet_s:
            return time.monotonic() - t0
        last = now
    return time.monotonic() - t0


def measure_kernel(path, explore=True):
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    row = {"notebook": path.name}
    with client.setup_kernel():
        pid = client.km.provisioner.pid
        sampler = TreeSampler(pid)
        sampler.start()
        row["start_mb"] = _status_kb(pid, "VmRSS") * 1e3 / MB
        t0 = time.monotonic()
        for index, cell in enumerate(list(nb.cells)):
            client.execute_cell(cell, index)
        row["run_all_s"] = round(time.monotonic() - t0, 1)
        for _ in range(30):     # the panels' frames, drawn ahead while the kernel is idle
            _wait_idle(pid)
            if _run_code(client, SETTLED).strip() == "0":
                break
        row["settle_s"] = round(time.monotonic() - t0 - row["run_all_s"], 1)
        row["run_all_peak_mb"] = _status_kb(pid, "VmHWM") * 1e3 / MB
        row["idle_mb"] = _status_kb(pid, "VmRSS") * 1e3 / MB
        row["run_all_tree_mb"] = sampler.peak_kb * 1e3 / MB
        if explore:
            code = EXPLORE.replace("BUDGET_S", str(EXPLORE_BUDGET_S))
            row["explore"] = json.loads(_run_code(client, "import json, math\n" + code).strip().splitlines()[-1])
            row["sliders_peak_mb"] = _status_kb(pid, "VmHWM") * 1e3 / MB
        sampler.stop.set()
        sampler.join()
        row["tree_peak_mb"] = sampler.peak_kb * 1e3 / MB
        row["processes"] = sampler.most
    return row


# --- the server ------------------------------------------------------------------------------

def measure_server(python, paths):
    """Peak and final RSS of `jupyter lab` after serving each notebook as a front end would."""
    work = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    try:
        shutil.copytree(ROOT / "notebooks", work / "notebooks",
                        ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
        for name in ("figures",):
            if (ROOT / name).exists():
                (work / name).symlink_to(ROOT / name)
        env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
        env.update({f"JUPYTER_{d}_DIR": str(work / f"jupyter-{d.lower()}") for d in ("CONFIG", "RUNTIME")})
        with labdriver.server(python, work, env, work / "server.log", token=uuid.uuid4().hex) as server:
            pid = server.proc.pid
            out = {"started_mb": _status_kb(pid, "VmRSS") * 1e3 / MB}
            assert server.request("GET", "/lab")[0] == 200
            for path in paths:
                rel = f"notebooks/{path.name}"
                model = json.loads(server.request("GET", f"/api/contents/{rel}")[2])
                session = json.loads(server.request("POST", "/api/sessions", {
                    "path": rel, "type": "notebook", "name": "", "kernel": {"name": "python3"}})[2])
                sources = [c["source"] for c in model["content"]["cells"] if c["cell_type"] == "code"]
                results = server.run_cells(session["kernel"]["id"], sources)
                bad = [i for i, r in enumerate(results) if r["status"] != "ok"]
                if bad:
                    print(f"  server run of {path.name}: cells {bad} did not end ok", flush=True)
                server.request("PUT", f"/api/contents/{rel}",
                               {"type": "notebook", "format": "json", "content": model["content"]})
                server.request("DELETE", f"/api/sessions/{session['id']}")
                print(f"  server after {path.name}: {_status_kb(pid, 'VmRSS') / 1e3:.0f} MB", flush=True)
            out["peak_mb"] = _status_kb(pid, "VmHWM") * 1e3 / MB
            out["end_mb"] = _status_kb(pid, "VmRSS") * 1e3 / MB
            out["python"] = python
            return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _round_up(mb, step):
    return int(math.ceil(mb / step) * step)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--server-python", default=sys.executable,
                        help="the Python whose `jupyter lab` is measured (a class environment's)")
    parser.add_argument("--no-explore", action="store_true", help="skip the slider exploration")
    parser.add_argument("--no-server", action="store_true", help="skip the server's share")
    parser.add_argument("--server-only", action="store_true", help="only the server's share")
    args = parser.parse_args()
    everything = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    paths = [p.resolve() for p in args.notebooks] or everything
    os.environ.pop("MPLBACKEND", None)      # as a student's kernel: inline figures
    for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"):
        os.environ.pop(name, None)          # set by `make bench` for timings; a student has glibc defaults
    load_before = [round(x, 2) for x in os.getloadavg()]

    rows = []
    for path in [] if args.server_only else paths:
        row = measure_kernel(path, explore=not args.no_explore)
        rows.append(row)
        print(f"{path.name:45s} Run All {row['run_all_peak_mb']:5.0f} MB  idle {row['idle_mb']:5.0f}  "
              f"sliders {row.get('sliders_peak_mb', float('nan')):5.0f}  with children "
              f"{row['tree_peak_mb']:5.0f} ({row['processes']} processes)  run {row['run_all_s']} s, settle "
              f"{row['settle_s']} s  {row.get('explore', '')}", flush=True)
    server = None if args.no_server else measure_server(args.server_python, paths)
    if server:
        print(f"server: started {server['started_mb']:.0f} MB, peak {server['peak_mb']:.0f} MB, "
              f"end {server['end_mb']:.0f} MB ({server['python']})")

    if len(rows) != len(everything) or server is None:
        return 0                            # a partial run prints only
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    import torch
    meta = {"commit": commit, "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                       f"{psutil.virtual_memory().total / 2**30:.0f} GiB",
            "python": platform.python_version(), "torch": torch.__version__,
            "load_average": {"before": load_before, "after": [round(x, 2) for x in os.getloadavg()]},
            "explore": not args.no_explore, "explore_budget_s": EXPLORE_BUDGET_S}
    kernel_col = "sliders_peak_mb" if not args.no_explore else "run_all_peak_mb"
    run_all = [r["run_all_peak_mb"] for r in rows]
    worst = max(max(r[kernel_col], r["tree_peak_mb"]) for r in rows)
    typical = statistics.median(run_all)
    per_student_typical = server["peak_mb"] + typical
    per_student_max = server["peak_mb"] + worst
    guarantee = _round_up(per_student_typical, 100)
    limit = _round_up(per_student_max + max(run_all), 500)      # and a second notebook left open
    summary = {"kernel_run_all_median_mb": round(typical), "kernel_run_all_max_mb": round(max(run_all)),
               "kernel_worst_mb": round(worst), "server_peak_mb": round(server["peak_mb"]),
               "per_student_typical_mb": round(per_student_typical), "per_student_max_mb": round(per_student_max),
               "recommended_guarantee_mb": guarantee, "recommended_limit_mb": limit}
    OUT.mkdir(exist_ok=True)
    (OUT / "memory.json").write_text(json.dumps({"meta": meta, "rows": rows, "server": server,
                                                  "summary": summary}, indent=1) + "\n")
    lines = [f"# Memory per student (commit {commit})", "",
             f"{meta['date']}, {meta['machine']}, Python {meta['python']}, torch {meta['torch']}; load average "
             f"{load_before} before, {meta['load_average']['after']} after (memory does not depend on it). "
             "MB = 10⁶ bytes. `make bench` runs `benchmarks/bench_memory.py`; its docstring says how.", "",
             "Kernel: a cold kernel per notebook (nbclient). **Run All** = peak RSS (VmHWM) once every cell has "
             "run and the slider panels have drawn their frames ahead; **idle** = RSS then (what an open "
             "notebook holds); **sliders** = peak after every panel's sliders were moved through up to "
             "KEEP_FRAMES + 64 combinations of values (frame caches full, every cached run made); "
             "**with children** = largest sum of the kernel's RSS and the private pages of the processes it "
             "starts (notebook 10's gloo workers), sampled every 0.1 s.", "",
             "| notebook | Run All (MB) | idle (MB) | sliders (MB) | with children (MB) | processes | "
             "slider moves | frames kept (MB) |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        e = r.get("explore", {})
        lines.append(f"| {r['notebook']} | {r['run_all_peak_mb']:.0f} | {r['idle_mb']:.0f} | "
                     f"{r.get('sliders_peak_mb', float('nan')):.0f} | {r['tree_peak_mb']:.0f} | {r['processes']} | "
                     f"{e.get('moves', '–')}{' (cut)' if e.get('cut') else ''} | "
                     f"{e.get('frame_bytes', 0) / MB:.1f} |")
    lines += ["", f"Server (`jupyter lab`, {server['python']}): {server['started_mb']:.0f} MB when started, "
              f"peak {server['peak_mb']:.0f} MB and {server['end_mb']:.0f} MB at the end, after serving every "
              "notebook as a front end does (contents, a kernel session, every cell through the websocket, "
              "saved back).", "",
              "| per student | MB |", "|---|---:|",
              f"| server peak | {server['peak_mb']:.0f} |",
              f"| kernel, Run All: median over the notebooks (typical) | {typical:.0f} |",
              f"| kernel, Run All: largest | {max(run_all):.0f} |",
              f"| kernel, worst (sliders explored, or with children) | {worst:.0f} |",
              f"| **one notebook open, typical** (server + median) | **{per_student_typical:.0f}** |",
              f"| **one notebook open, worst** (server + worst) | **{per_student_max:.0f}** |",
              f"| recommended guarantee (typical, rounded up to 100 MB) | {guarantee} |",
              f"| recommended limit (server + worst + a second notebook left open at the largest Run All, "
              f"rounded up to 500 MB) | {limit} |", ""]
    (OUT / "memory.md").write_text("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
