"""Slider latency, kernel side and browser side, for every slider of every notebook.

    make bench-latency        (or: .venv/bin/python benchmarks/bench_latency.py [--kernel|--browser] [notebooks...])

Kernel side: each notebook runs in a fresh kernel (nbclient), then `Panel.sweep()` moves every slider of
every panel in `normkit.explore.PANELS` across its range (at most 40 values) and times each update:
update() + redraw + PNG, as in the browser. Browser side: JupyterLab in chromium (tests/browser/labdriver.py);
after Run All, each slider gets several arrow-key presses, timed from the keydown event to the first
paint after the new figure has decoded.

Writes benchmarks/results/latency.md and latency.json. Targets (DESIGN.md): kernel p95 ≤ 50 ms,
browser p95 ≤ 250 ms. Timings depend on the machine and on what else runs on it: the load average is
recorded with the results.
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.browser import labdriver  # noqa: E402

OUT = ROOT / "benchmarks" / "results"
KERNEL_TARGET_MS, BROWSER_TARGET_MS = 50, 250

SWEEP = """
import json as _json
from normkit import explore as _explore
_rows = []
for _i, _panel in enumerate(_explore.PANELS):
    for _name, _ms in _panel.sweep().items():
        _rows.append({"panel": _i, "cell": _panel.execution_count, "control": _name, "ms": _ms,
                      "cpu_ms": _panel.sweep_cpu_ms[_name]})
print(_json.dumps(_rows))
"""


def stats(ms):
    if not ms:
        return {"n": 0, "p50": None, "p95": None, "max": None}
    ms = sorted(ms)
    p95 = statistics.quantiles(ms, n=20, method="inclusive")[-1] if len(ms) > 1 else ms[0]
    return {"n": len(ms), "p50": round(statistics.median(ms), 1), "p95": round(p95, 1), "max": round(ms[-1], 1)}


def kernel_side(path):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=900, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    with client.setup_kernel():
        t0 = time.perf_counter()
        for i, cell in enumerate(nb.cells):
            if cell.cell_type == "code":
                client.execute_cell(cell, i)
        run_s = time.perf_counter() - t0
        probe = nbformat.v4.new_code_cell(SWEEP)
        nb.cells.append(probe)
        client.execute_cell(probe, len(nb.cells) - 1)
    text = "".join(o.get("text", "") for o in probe.outputs if o.get("output_type") == "stream")
    rows = json.loads(text.strip().splitlines()[-1])
    for r in rows:
        cpu = stats(r.pop("cpu_ms"))
        r.update(stats(r.pop("ms")), cpu_p50=cpu["p50"], cpu_p95=cpu["p95"])
    return {"run_s": round(run_s, 1), "sliders": rows}


def browser_side(page, lab, path, presses):
    labdriver.open_notebook(page, lab, path.name)
    try:
        labdriver.run_all(page)
        found = labdriver.errors(page)
        if found:
            raise RuntimeError(f"errors after Run All: {found}")
        handles = labdriver.slider_handles(page)
        sliders, every = [], []
        for i in range(handles.count()):
            handle = handles.nth(i)
            target = labdriver.slider_target(page, handle)
            if target["fig"] < 0:
                continue
            labdriver.figure(page, target).scroll_into_view_if_needed()
            times = []
            for k in range(presses):
                key = "ArrowRight" if k < presses // 2 else "ArrowLeft"
                for attempt in (key, "ArrowLeft" if key == "ArrowRight" else "ArrowRight"):
                    before = handle.get_attribute("aria-valuenow")
                    page.evaluate(labdriver.ARM_JS, [target["cell"], target["fig"]])
                    handle.focus()
                    page.keyboard.press(attempt)
                    page.wait_for_timeout(30)
                    if handle.get_attribute("aria-valuenow") != before:
                        break
                page.wait_for_function(labdriver.ELAPSED_JS, timeout=30_000)
                times.append(page.evaluate("window.__nkT1 - window.__nkT0"))
                page.wait_for_timeout(100)
            every += times
            sliders.append({"control": target["label"], "cell": target["cell"], **stats(times)})
        return {"sliders": sliders, **stats(every)}
    finally:
        labdriver.shutdown_kernel(page)


def fmt(v):
    return "–" if v is None else f"{v:.0f}"


def report(results, meta):
    lines = ["# Slider latency", "",
             f"`make bench-latency` on {meta['date']}: {meta['machine']}; load average "
             f"{meta['load_before']} before, {meta['load_after']} after.", "",
             f"Targets: kernel p95 ≤ {KERNEL_TARGET_MS} ms, browser p95 ≤ {BROWSER_TARGET_MS} ms.", ""]
    if any("kernel" in r for r in results.values()):
        lines += ["## Kernel side: update + redraw + PNG per slider value (Panel.sweep)", "",
                  "Wall clock as measured; CPU = the process's CPU time for the same updates, what an "
                  "otherwise idle machine would take. The last column judges the wall clock, or the CPU time "
                  "when the machine was loaded (1-minute load average above the CPU count).", "",
                  "| notebook | run all (s) | slider | cell | values | p50 ms | p95 ms | max ms | CPU p50 | CPU p95 "
                  "| p95 ≤ target |",
                  "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|:---:|"]
        for name, r in results.items():
            k = r.get("kernel")
            if k is None:
                continue
            if "error" in k:
                lines.append(f"| {name} | | error: {k['error']} | | | | | | ✗ |")
                continue
            if not k["sliders"]:
                lines.append(f"| {name} | {k['run_s']} | (no sliders) | | | | | | |")
            for s in k["sliders"]:
                judged = s["cpu_p95"] if meta["loaded"] else s["p95"]
                ok = "✓" if judged is not None and judged <= KERNEL_TARGET_MS else "✗"
                lines.append(f"| {name} | {k['run_s']} | {s['control']} | {s['cell']} | {s['n']} | "
                             f"{fmt(s['p50'])} | {fmt(s['p95'])} | {fmt(s['max'])} | {fmt(s['cpu_p50'])} | "
                             f"{fmt(s['cpu_p95'])} | {ok} |")
        lines.append("")
    if any("browser" in r for r in results.values()):
        lines += ["## Browser side: key press → changed figure on screen (JupyterLab, chromium)", "",
                  "| notebook | sliders | presses | p50 ms | p95 ms | max ms | p95 ≤ target |",
                  "|---|---:|---:|---:|---:|---:|:---:|"]
        for name, r in results.items():
            b = r.get("browser")
            if b is None:
                continue
            if "error" in b:
                lines.append(f"| {name} | | error: {b['error']} | | | | ✗ |")
                continue
            ok = "" if b["p95"] is None else ("✓" if b["p95"] <= BROWSER_TARGET_MS else "✗")
            lines.append(f"| {name} | {len(b['sliders'])} | {b['n']} | {fmt(b['p50'])} | {fmt(b['p95'])} | "
                         f"{fmt(b['max'])} | {ok} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Slider latency benchmark")
    parser.add_argument("notebooks", nargs="*", type=Path, default=labdriver.NOTEBOOKS)
    side = parser.add_mutually_exclusive_group()
    side.add_argument("--kernel", action="store_true", help="kernel side only")
    side.add_argument("--browser", action="store_true", help="browser side only")
    parser.add_argument("--presses", type=int, default=8, help="key presses per slider (browser side)")
    args = parser.parse_args(argv)
    os.environ.pop("MPLBACKEND", None)     # kernels use the inline backend, as in JupyterLab
    paths = [p.resolve() for p in args.notebooks]
    meta = {"date": datetime.date.today().isoformat(),
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
                       f"Python {platform.python_version()}",
            "load_before": " ".join(f"{x:.1f}" for x in os.getloadavg())}
    results = {p.stem: {} for p in paths}

    if not args.browser:
        for p in paths:
            print(f"kernel  {p.stem} …", flush=True)
            try:
                results[p.stem]["kernel"] = kernel_side(p)
            except Exception as e:  # report it and go on with the other notebooks
                results[p.stem]["kernel"] = {"error": f"{type(e).__name__}: {str(e)[-300:]}"}

    if not args.kernel:
        if labdriver.chromium_path() is None:
            sys.exit("browser side needs chromium: apt-get install -y chromium (or --kernel)")
        from playwright.sync_api import sync_playwright
        with sync_playwright() as pw, tempfile.TemporaryDirectory() as tmp:
            browser = labdriver.launch(pw)
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            with labdriver.jupyterlab(tmp) as lab:
                for p in paths:
                    print(f"browser {p.stem} …", flush=True)
                    page = context.new_page()
                    try:
                        results[p.stem]["browser"] = browser_side(page, lab, p, args.presses)
                    except Exception as e:
                        results[p.stem]["browser"] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
                    finally:
                        page.close()
            browser.close()

    meta["load_after"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
    one_minute = [float(meta[k].split()[0]) for k in ("load_before", "load_after")]
    meta["loaded"] = max(one_minute) > (os.cpu_count() or 1)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "latency.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1,
                                                 ensure_ascii=False) + "\n")
    md = report(results, meta)
    (OUT / "latency.md").write_text(md + "\n")
    print(md)


if __name__ == "__main__":
    main()
