"""Start a Jupyter server and talk to it (REST, Run All through a kernel's websocket); drive JupyterLab
in Debian's chromium with Playwright: open a notebook, run it, find its sliders and the figure each
one drives. Used by tests/browser, tests/test_hub.py and benchmarks/bench_latency.py, bench_memory.py.

Playwright's own browser download cannot work offline, so chromium comes from the system
(`apt-get install -y chromium`); NORMKIT_CHROMIUM=/path/to/chrome points elsewhere.
"""
import asyncio
import concurrent.futures
import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
ARTIFACTS = ROOT / "artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
FIGURES = ".jp-Cell-outputArea img, .jp-Cell-outputArea canvas"
_NOT_LINKED = {"notebooks", ".git", ".venv", "artifacts", "slides", "node_modules", ".pytest_cache", ".hypothesis"}

# JupyterLab user settings for the test server: render every cell (no virtual scrolling, so every
# slider and figure is in the DOM) and never fetch news or update notices from the internet.
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none", "scrollPastEnd": False},
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
}


def chromium_path():
    """The system chromium, or None (then the browser tests skip)."""
    candidates = [os.environ.get("NORMKIT_CHROMIUM"), "/usr/bin/chromium"]
    candidates += [shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


def launch(playwright):
    return playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A running Jupyter server (`server()`): its URL and root, REST requests, Run All over a kernel."""

    def __init__(self, port, token, root, proc, log):
        self.port, self.token, self.root, self.proc, self.log = port, token, Path(root), proc, log
        self.url = f"http://127.0.0.1:{port}"

    def log_tail(self, n=40):
        return "\n".join(Path(self.log).read_text(errors="replace").splitlines()[-n:])

    def request(self, method, path, body=None, timeout=120):
        """(status, Location header, body bytes) of one REST request."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        headers = {"Authorization": f"token {self.token}"} if self.token else {}
        if body is not None:
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method, path, None if body is None else json.dumps(body), headers)
            response = conn.getresponse()
            return response.status, response.getheader("Location"), response.read()
        finally:
            conn.close()

    def run_cells(self, kernel_id, sources, timeout=600):
        """Execute each source on the kernel through the server's websocket, in order, as a front end's
        Run All does. One dict per source: its status, the text it printed, the MIME types it showed.
        Runs in a thread of its own: Playwright's sync API leaves an asyncio loop running in its thread."""
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, self._run_cells(kernel_id, sources, timeout)).result()

    async def _run_cells(self, kernel_id, sources, timeout):
        from tornado.websocket import websocket_connect     # the server's own dependency

        session = uuid.uuid4().hex
        ws = await websocket_connect(f"ws://127.0.0.1:{self.port}/api/kernels/{kernel_id}/channels"
                                     f"?session_id={session}&token={self.token}", max_message_size=1 << 30)
        results = []
        try:
            for source in sources:
                msg_id = uuid.uuid4().hex
                await ws.write_message(json.dumps({
                    "header": {"msg_id": msg_id, "session": session, "username": "student", "version": "5.3",
                               "msg_type": "execute_request", "date": ""},
                    "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
                    "content": {"code": source, "silent": False, "store_history": True, "user_expressions": {},
                                "allow_stdin": False, "stop_on_error": True}}))
                result = {"status": None, "text": "", "mime": set(), "idle": False}
                deadline = time.monotonic() + timeout
                while result["status"] is None or not result["idle"]:
                    raw = await asyncio.wait_for(ws.read_message(), deadline - time.monotonic())
                    if raw is None:
                        raise RuntimeError("the server closed the kernel websocket")
                    if isinstance(raw, bytes):   # a message with binary buffers (widgets): JSON part first
                        count = int.from_bytes(raw[:4], "big")
                        offsets = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(count)]
                        raw = raw[offsets[0]:offsets[1]]
                    msg = json.loads(raw)
                    if msg.get("parent_header", {}).get("msg_id") != msg_id:
                        continue
                    kind, content = msg["msg_type"], msg["content"]
                    if kind == "stream":
                        result["text"] += content["text"]
                    elif kind in ("display_data", "execute_result"):
                        result["mime"] |= set(content["data"])
                        result["text"] += content["data"].get("text/plain", "") + "\n"
                    elif kind == "error":
                        result["text"] += "\n".join(content["traceback"])
                    elif kind == "status" and content["execution_state"] == "idle":
                        result["idle"] = True
                    elif kind == "execute_reply":
                        result["status"] = content["status"]
                results.append(result)
        finally:
            ws.close()
        return results


@contextlib.contextmanager
def server(python, root, env, log, token="", args=(), timeout=120):
    """`python -m jupyterlab` (the server a hub's single-user image runs) on a free port, serving
    `root`; yields a Server once its API answers, and stops it (with its kernels) on exit."""
    port = free_port()
    cmd = [str(python), "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
           f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
           f"--ServerApp.root_dir={root}", *args]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=root,
                                start_new_session=True)
    srv = Server(port, token, root, proc, log)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with {proc.returncode}:\n{srv.log_tail()}")
            try:
                if srv.request("GET", "/api/status", timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"jupyter lab did not answer within {timeout} s:\n{srv.log_tail()}")
            time.sleep(0.3)
        yield srv
    finally:
        proc.send_signal(signal.SIGTERM)  # the server shuts its kernels down on SIGTERM
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@contextlib.contextmanager
def jupyterlab(workdir, timeout=120):
    """JupyterLab for the browser tests: `server()` on a copy of the repository, temporary settings.

    The copy: notebooks/ copied, the other top-level folders (figures/, ...) linked, so a notebook
    that reads ../figures/x.png works and the repository's notebooks are never modified.
    """
    workdir = Path(workdir)
    root = workdir / "repo"
    root.mkdir()
    shutil.copytree(ROOT / "notebooks", root / "notebooks", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    for entry in ROOT.iterdir():
        if entry.name not in _NOT_LINKED and not (root / entry.name).exists():
            (root / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    settings = workdir / "lab-settings"
    for plugin, values in LAB_SETTINGS.items():
        path = settings / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    env = dict(os.environ, JUPYTERLAB_SETTINGS_DIR=str(settings),
               JUPYTERLAB_WORKSPACES_DIR=str(workdir / "lab-workspaces"),
               JUPYTER_RUNTIME_DIR=str(workdir / "runtime"), PYTHONUNBUFFERED="1")
    env.pop("MPLBACKEND", None)           # kernels get the inline backend, as for a student
    with server(sys.executable, root, env, workdir / "jupyterlab.log", timeout=timeout,
                args=["--ServerApp.password=", "--LabApp.expose_app_in_browser=True"]) as lab:
        yield lab


# --- in the page ----------------------------------------------------------------------------

_PANEL = "window.jupyterapp?.shell?.currentWidget"

_ERRORS_JS = """() => {
  const found = [];
  const nb = window.jupyterapp.shell.currentWidget.content;
  nb.widgets.forEach((cell, i) => {
    if (cell.model.type !== 'code') return;
    for (let k = 0; k < cell.model.outputs.length; k++) {
      const o = cell.model.outputs.get(k).toJSON();
      if (o.output_type === 'error') found.push(`cell ${i}: ${o.ename}: ${o.evalue}`);
    }
  });
  const root = nb.node;
  root.querySelectorAll('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')
    .forEach(el => { if (el.textContent.includes('Traceback'))
      found.push('stderr: ' + el.textContent.trim().split('\\n').slice(-3).join(' | ')); });
  root.querySelectorAll('.jp-OutputArea-output').forEach(el => {
    if (/Error displaying widget/.test(el.textContent) && !el.querySelector('.jp-OutputArea-output'))
      found.push('widget: ' + el.textContent.trim().slice(0, 200)); });
  return [...new Set(found)];
}"""

# The figure a slider drives: the first image (or canvas) after its handle in the same cell.
_TARGET_JS = """(handle) => {
  const cell = handle.closest('.jp-Cell');
  const cells = [...document.querySelectorAll('.jp-Notebook .jp-Cell')];
  const figs = [...cell.querySelectorAll('%s')];
  const fig = figs.findIndex(f => handle.compareDocumentPosition(f) & Node.DOCUMENT_POSITION_FOLLOWING);
  const slider = handle.closest('.widget-slider');
  const label = (slider && slider.querySelector('.widget-label')?.textContent) || '';
  return {cell: cells.indexOf(cell), fig, label: label.trim(), value: handle.getAttribute('aria-valuenow')};
}""" % FIGURES


def open_notebook(page, lab, name, timeout=120_000):
    """Open notebooks/<name> in a fresh JupyterLab page; wait until its kernel is idle."""
    page.goto(f"{lab.url}/lab/tree/notebooks/{name}?reset")
    try:
        page.wait_for_function(
            f"{_PANEL}?.context?.isReady && {_PANEL}.context.path === {json.dumps('notebooks/' + name)}"
            f" && {_PANEL}.sessionContext?.session?.kernel?.status === 'idle'", timeout=timeout)
    except Exception as e:
        dialog = page.locator(".jp-Dialog")
        why = f" (a dialog is open: {dialog.first.inner_text()!r})" if dialog.count() else ""
        raise AssertionError(f"{name}: no idle kernel within {timeout / 1000:.0f} s{why}") from e


def run_all(page, timeout=300_000):
    """Run → Run All Cells; wait until every cell ran, the kernel is idle and widgets rendered."""
    page.evaluate("() => { window.__nkRunAll = 'running'; window.jupyterapp.commands"
                  ".execute('notebook:run-all-cells').then(ok => window.__nkRunAll = ok); }")
    page.wait_for_function("window.__nkRunAll !== 'running'", timeout=timeout)
    page.wait_for_function(
        f"{_PANEL}.sessionContext.session.kernel.status === 'idle'"
        " && ![...document.querySelectorAll('.jp-Notebook .jp-OutputArea-output')]"
        "      .some(el => el.textContent.startsWith('Loading widget'))", timeout=timeout)
    page.wait_for_timeout(300)            # the last images decode and paint


def errors(page):
    """Error outputs, tracebacks on stderr and widgets that failed to render, as short strings."""
    return page.evaluate(_ERRORS_JS)


def shutdown_kernel(page):
    """Ask the server to stop the notebook's kernel (without waiting for it: the next test can start)."""
    page.evaluate(f"() => {{ {_PANEL}?.sessionContext?.shutdown(); }}")
    page.wait_for_timeout(300)            # the request leaves before the page closes


def slider_handles(page):
    """Every ipywidgets 8 slider handle (noUiSlider) in the notebook, in document order."""
    return page.locator(".jp-Notebook .jp-Cell .widget-slider .noUi-handle")


def slider_target(page, handle):
    """{cell, fig, label, value} of a slider handle; fig is -1 when no figure follows it in its cell."""
    return handle.evaluate(_TARGET_JS)


def figure(page, target):
    return page.locator(".jp-Notebook .jp-Cell").nth(target["cell"]).locator(FIGURES).nth(target["fig"])


def move(page, handle, key="ArrowRight", timeout=2_000):
    """Focus the handle and press `key`; if the value does not move (end of range), the other way.

    Returns the key that moved it, or None if neither did.
    """
    for k in (key, "ArrowLeft" if key == "ArrowRight" else "ArrowRight"):
        before = handle.get_attribute("aria-valuenow")
        handle.focus()
        page.keyboard.press(k)
        deadline = time.monotonic() + timeout / 1000
        while time.monotonic() < deadline:
            if handle.get_attribute("aria-valuenow") != before:
                return k
            time.sleep(0.02)
    return None


def screenshot_notebook(page, path, max_height=16_000):
    """The whole notebook in one picture: grow the viewport to its height for a moment."""
    size = page.viewport_size
    extra = page.evaluate("""() => { const s = document.querySelector('.jp-Notebook .jp-WindowedPanel-outer');
                                     s.scrollTop = 0; return s.scrollHeight - s.clientHeight; }""")
    page.set_viewport_size({"width": size["width"], "height": min(max_height, size["height"] + extra)})
    page.wait_for_timeout(300)
    page.evaluate("() => { document.querySelector('.jp-Notebook .jp-WindowedPanel-outer').scrollTop = 0; }")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path))
    page.set_viewport_size(size)


# Browser-side latency: from the key press to the changed figure painted on screen.
ARM_JS = """([cell, fig]) => {
  const area = document.querySelectorAll('.jp-Notebook .jp-Cell')[cell].querySelector('.jp-Cell-outputArea');
  const current = () => area.querySelectorAll('img, canvas')[fig];
  const first = current(), src = first && first.src;
  window.__nkT0 = null; window.__nkT1 = null;
  document.addEventListener('keydown', () => { window.__nkT0 = performance.now(); },
                            {capture: true, once: true});
  const obs = new MutationObserver(async () => {
    const now = current();
    if (!now || (now === first && now.src === src)) return;
    obs.disconnect();
    try { if (now.decode) await now.decode(); } catch (e) {}
    requestAnimationFrame(() => setTimeout(() => { window.__nkT1 = performance.now(); }, 0));
  });
  obs.observe(area, {subtree: true, childList: true, attributes: true, attributeFilter: ['src']});
}"""
ELAPSED_JS = "window.__nkT1 !== null && window.__nkT0 !== null"
