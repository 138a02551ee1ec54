"""The slider pattern every notebook uses: build the figure once, update artists in place.

    fig, ax = plt.subplots(layout="constrained")
    line, = ax.plot(w, loss(w))

    def update(lam):                       # move artists; never re-plot
        line.set_ydata(loss(w) + 0.5 * lam * w**2)

    explore.interact(fig, update, lam=widgets.FloatSlider(value=0.5, min=0, max=2, step=0.1))

Why not `%matplotlib widget` or `draw_idle`: the inline backend does not redraw a figure from a
slider callback, and an ipympl canvas shows nothing after headless execution (nbval, nbconvert,
slides, a code host). Here the figure is rendered once to a PNG *display output* that carries a
display id; every slider change re-renders the same figure and replaces that output in place
(`update_display_data`). Executed headless, the notebook keeps the PNG for the default values.

Expensive work (a training run per slider value) goes in a function decorated with `cache`.
"""
import functools
import io
import inspect
import time

import ipywidgets as widgets
import matplotlib.pyplot as plt
from IPython.display import Code, Image, display

__all__ = ["interact", "cache", "show", "Panel", "PANELS"]

PANELS = []                                 # every panel built in this kernel (for `make bench`)
cache = functools.lru_cache(maxsize=None)   # memoize per slider value: @explore.cache


def _png(fig):
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi)
    return buf.getvalue()


class Panel:
    """Controls above one figure; a change calls update(**values) and redraws the figure."""

    def __init__(self, fig, update, controls):
        self.fig, self.update, self.controls = fig, update, controls
        self.timings_ms = []
        for name, w in controls.items():
            if not isinstance(w, widgets.ValueWidget):
                raise ValueError(f"{name}: expected an ipywidgets control (e.g. FloatSlider), got {w!r}")
            if not w.description:
                w.description = name
            w.style.description_width = "initial"
            w.observe(self._on_change, names="value")
        self.box = widgets.HBox(list(controls.values()), layout={"flex_flow": "row wrap"})
        plt.close(fig)                      # the inline backend must not display it a second time
        update(**self.values)
        display(self.box)
        self.handle = display(Image(_png(fig)), display_id=True)

    def _ipython_display_(self):
        """Already on screen: a panel as a cell's last value must not print its repr."""

    @property
    def values(self):
        return {name: w.value for name, w in self.controls.items()}

    def _on_change(self, _change):
        t0 = time.perf_counter()
        self.update(**self.values)
        self.handle.update(Image(_png(self.fig)))
        self.timings_ms.append(1e3 * (time.perf_counter() - t0))

    def sweep(self, max_values=40):
        """Time the update across each control's whole range; restore the defaults after.

        Returns {control name: [milliseconds per value]}. Used by `make bench`.
        """
        out = {}
        for name, w in self.controls.items():
            default = w.value
            if hasattr(w, "options"):
                values = [o[1] if isinstance(o, tuple) else o for o in w.options]
            else:
                n = int(round((w.max - w.min) / w.step)) + 1
                stride = max(1, n // max_values)
                values = [w.min + i * w.step for i in range(0, n, stride)]
            self.timings_ms.clear()
            for v in values:
                w.value = v
            out[name] = list(self.timings_ms)
            w.value = default
        return out


def interact(fig, update, **controls):
    """Show `controls` (ipywidgets sliders, keyword = update's argument) above `fig`.

    update(**values) must change the figure's artists in place (set_data, set_ydata, set_text,
    ...). Returns the Panel; it is also recorded in explore.PANELS.
    """
    panel = Panel(fig, update, controls)
    PANELS.append(panel)
    return panel


def show(obj):
    """Display the source of a normkit function or class, syntax-highlighted, where code is the lesson."""
    return Code(inspect.getsource(obj), language="python")
