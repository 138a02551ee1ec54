"""The class-server recipe end to end: hub/install.sh into a clean venv, a student's server started
from that venv, and notebook 00 opened and run through it, as on Binder or a JupyterHub.

1. A copy of what the recipe reads (binder/, hub/, normkit/, pyproject.toml, README.md, the lab CSS,
   notebooks/00_start_here.ipynb) in a temporary folder; `python -m venv` there.
2. The Binder sequence, which is also the hub's: `hub/install.sh requirements` (repo2docker's
   `pip install -r binder/requirements.txt`), then `binder/postBuild` (normkit, the server config
   with the start page, the install checks). The venv must end up with the CPU torch, a clean
   `pip check`, and without the test/dev tools (pytest, playwright, ruff, hypothesis, nbval).
3. `python -m jupyterlab` from that venv (labdriver.server), as jupyterhub-singleuser runs it minus
   the hub's login: `/` redirects to the start page; the page lists the widget, ipympl and slideshow front ends; the
   course CSS is served; a kernel session on notebook 00 runs every code cell through the kernel
   websocket, a front end's Run All: no error, normkit imported from the venv, figures drawn.

Torch: the project's machines serve torch==2.13.0 from a local wheel store that pip's configuration
points to (find-links) and cannot reach PyTorch's CPU index, so when such a store holds the wheel the
test sets TORCH_INDEX_URL="" (hub/install.sh then drops binder/requirements.txt's index line). pip
picks 2.13.0+cpu over PyPI's plain 2.13.0 by the rule the index line relies on (a local version sorts
higher). Elsewhere the recipe's own index line is used. Everything else comes from PyPI: no pip cache
is assumed (pip keeps none on the project's machines). pip skips byte-compiling (PIP_COMPILE=0), the
one difference from the recipe: it changes no installed file, and cut one run from 121 s to 89 s.
Still the slowest test: 68 s on a quiet 2-core machine (load average 1), 90 s at load 3.5, two
thirds of it pip.
"""
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.browser import labdriver

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = "notebooks/00_start_here.ipynb"
START_URL = "/lab/tree/" + NOTEBOOK                # what binder/postBuild sets
FRONT_ENDS = ("@jupyter-widgets/jupyterlab-manager", "jupyter-matplotlib", "jupyterlab-slideshow")
DEV_TOOLS = ("pytest", "playwright", "ruff", "hypothesis", "nbval")


def _local_torch_store():
    """True when pip's find-links (configuration or PIP_FIND_LINKS) hold torch 2.13.0+cpu."""
    listing = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True,
                             text=True).stdout
    places = re.findall(r"find-links='([^']*)'", listing) + [os.environ.get("PIP_FIND_LINKS", "")]
    return any(glob.glob(os.path.join(place, "torch-2.13.0+cpu-*.whl"))
               for value in places for place in value.split())


def _copy_recipe(dest):
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", ".ipynb_checkpoints")
    for name in ("binder", "hub", "normkit"):
        shutil.copytree(ROOT / name, dest / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md", "requirements.txt", NOTEBOOK, "slides_assets/lab/custom.css"):
        if (ROOT / name).exists():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(ROOT / name, dest / name)


def _run(cmd, env, cwd, log):
    with open(log, "a") as out:
        out.write(f"\n$ {' '.join(map(str, cmd))}\n")
        out.flush()
        done = subprocess.run(cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    if done.returncode:
        pytest.fail(f"{cmd} exited with {done.returncode}:\n" + Path(log).read_text()[-4000:])


def test_binder_requirements_are_the_course_requirements_with_the_cpu_torch_index():
    """One home for the pins: binder/requirements.txt includes requirements.txt (what the tests run
    with) and adds PyTorch's CPU index; the test and release tools are in requirements-dev.txt only."""
    lines = [ln for ln in (ROOT / "binder" / "requirements.txt").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert lines[:2] == ["--extra-index-url https://download.pytorch.org/whl/cpu", "-r ../requirements.txt"], lines
    course = (ROOT / "requirements.txt").read_text()
    assert not [tool for tool in DEV_TOOLS if re.search(rf"(?m)^{tool}==", course)]


def test_hub_recipe_installs_in_a_clean_venv_and_serves_a_notebook(tmp_path):
    times = {}
    t0 = time.monotonic()
    course = tmp_path / "course"
    _copy_recipe(course)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python, log = venv / "bin" / "python", tmp_path / "install.log"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTHON", "VIRTUAL_ENV", "JUPYTER", "MPLBACKEND", "PYTEST", "COV_"))}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", PYTHON=str(python),
               VIRTUAL_ENV=str(venv), PYTHONUNBUFFERED="1",     # and no Jupyter config or kernel of the user's:
               **{f"JUPYTER_{d}_DIR": str(tmp_path / f"jupyter-{d.lower()}") for d in ("CONFIG", "DATA", "RUNTIME")})
    if _local_torch_store():
        env["TORCH_INDEX_URL"] = ""
    env["PIP_COMPILE"] = "0"    # no .pyc for 11,000 files (~35 s of CPU); what is imported compiles as it loads
    _run(["bash", "hub/install.sh", "requirements"], env, course, log)
    times["venv + pip install -r binder/requirements.txt"] = time.monotonic() - t0
    _run(["bash", "binder/postBuild"], env, course, log)
    times["binder/postBuild"] = time.monotonic() - t0 - sum(times.values())

    check = subprocess.run([str(python), "-m", "pip", "check"], capture_output=True, text=True, env=env)
    assert check.returncode == 0, check.stdout + check.stderr
    probe = subprocess.run([str(python), "-I", "-c", (
        "import importlib.util, json, pathlib, torch, normkit\n"
        "pkg = pathlib.Path(normkit.__file__).parent\n"
        "files = sorted(str(p.relative_to(pkg)) for p in pkg.rglob('*') if p.is_file() and p.suffix != '.pyc')\n"
        f"print(json.dumps([torch.__version__, torch.version.cuda, [m for m in {DEV_TOOLS!r} "
        "if importlib.util.find_spec(m)], files]))")], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert probe.returncode == 0, probe.stderr[-2000:]
    torch_version, cuda, dev_tools, installed = json.loads(probe.stdout)
    assert torch_version.startswith("2.13.0") and cuda is None, (torch_version, cuda)
    assert dev_tools == [], f"the class server's environment has test/dev tools: {dev_tools}"
    source = sorted(str(p.relative_to(course / "normkit")) for p in (course / "normkit").rglob("*") if p.is_file())
    assert installed == source, f"not installed: {sorted(set(source) - set(installed))}"   # the fonts too

    try:
        with labdriver.server(python, course, env, tmp_path / "server.log", token=uuid.uuid4().hex) as server:
            times["server start"] = time.monotonic() - t0 - sum(times.values())
            _open_notebook_00(server, venv, times, t0)
    finally:
        shutil.rmtree(venv, ignore_errors=True)     # 1.5 GB; pytest keeps the last runs' temp folders
    print("  ".join(f"{k}: {v:.1f} s" for k, v in times.items()))


def _open_notebook_00(server, venv, times, t0):
    """What a student's first click does: the start page, the front ends, the course CSS, Run All."""
    status, location, _ = server.request("GET", "/")
    assert status == 302 and location.split("?")[0].endswith(START_URL), (status, location)
    status, _, page = server.request("GET", START_URL)
    assert status == 200
    config = json.loads(re.search(rb'id="jupyter-config-data"[^>]*>(.*?)</script>', page, re.S)[1])
    names = {e["name"] for e in config["federated_extensions"]}
    assert set(FRONT_ENDS) <= names, f"front ends missing from the page: {set(FRONT_ENDS) - names}"
    if (server.root / "slides_assets/lab/custom.css").exists():
        status, _, css = server.request("GET", "/custom/custom.css")
        assert status == 200 and b"show-code" in css

    status, _, body = server.request("GET", f"/api/contents/{NOTEBOOK}")
    assert status == 200
    cells = [c for c in json.loads(body)["content"]["cells"] if c["cell_type"] == "code"]
    status, _, body = server.request("POST", "/api/sessions", {
        "path": NOTEBOOK, "type": "notebook", "name": "", "kernel": {"name": "python3"}})
    assert status == 201, body
    kernel_id = json.loads(body)["kernel"]["id"]
    sources = ["import sys; print(sys.prefix)"] + [c["source"] for c in cells]
    results = server.run_cells(kernel_id, sources, timeout=240)
    times["notebook 00, every cell"] = time.monotonic() - t0 - sum(times.values())

    kernel_prefix = results[0]["text"].strip()                   # the kernel runs in the venv
    assert os.path.realpath(kernel_prefix) == os.path.realpath(venv), kernel_prefix
    for cell, result in zip(sources[1:], results[1:]):
        assert result["status"] == "ok", f"cell failed:\n{cell[:300]}\n---\n{result['text'][-3000:]}"
    assert "normkit 0.1.0" in results[1]["text"] and "torch 2.13.0" in results[1]["text"], results[1]
    assert any({"image/png", "application/vnd.jupyter.widget-view+json"} <= r["mime"] for r in results), \
        "notebook 00 showed no figure with its sliders"
