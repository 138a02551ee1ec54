"""Every notebook, in JupyterLab, in chromium: run all cells, then move every slider and check that
the figure it drives changes on screen and that no error appears.

One test class per notebook file (found by glob, so a new notebook is covered without editing this
file); classes let `pytest -n 2 --dist loadscope` share the notebooks between the two workers.
A screenshot of each notebook after Run All goes to artifacts/screenshots/ (git-ignored).
"""
import time

from . import labdriver

SHOTS = labdriver.ARTIFACTS / "screenshots"
REDRAW_TIMEOUT = 15.0                     # seconds; a loaded 2-core CI machine, not the target


def _changed(fig, before, timeout):
    deadline = time.monotonic() + timeout
    while True:
        after = fig.screenshot()
        if after != before or time.monotonic() > deadline:
            return after
        time.sleep(0.05)


class _NotebookInBrowser:
    notebook = None                       # a Path, set by each generated subclass

    def test_run_all_then_move_every_slider(self, lab, page):
        name = self.notebook.name
        labdriver.open_notebook(page, lab, name)
        try:
            labdriver.run_all(page)
            labdriver.screenshot_notebook(page, SHOTS / f"{self.notebook.stem}.png")
            found = labdriver.errors(page)
            assert not found, f"{name}: errors after Run All: {found}"

            handles = labdriver.slider_handles(page)
            for i in range(handles.count()):
                handle = handles.nth(i)
                target = labdriver.slider_target(page, handle)
                what = f"{name}: slider {target['label'] or i!r} (cell {target['cell']})"
                assert target["fig"] >= 0, f"{what}: no figure after it in its cell (use explore.interact)"
                fig = labdriver.figure(page, target)
                fig.scroll_into_view_if_needed()
                before = fig.screenshot()
                assert labdriver.move(page, handle), f"{what}: the arrow keys do not move it"
                after = _changed(fig, before, REDRAW_TIMEOUT)
                if after == before:
                    SHOTS.mkdir(parents=True, exist_ok=True)
                    (SHOTS / f"{self.notebook.stem}-slider{i}-unchanged.png").write_bytes(after)
                assert after != before, f"{what}: the figure did not change within {REDRAW_TIMEOUT:.0f} s"
                found = labdriver.errors(page)
                assert not found, f"{what}: an error appeared after moving it: {found}"
        finally:
            labdriver.shutdown_kernel(page)


for _path in labdriver.NOTEBOOKS:
    _name = "Test_" + _path.stem
    globals()[_name] = type(_name, (_NotebookInBrowser,), {"notebook": _path})
