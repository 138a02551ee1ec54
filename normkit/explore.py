"""The slider pattern every notebook uses: build the figure once, update artists in place.

    fig, ax = plt.subplots(layout="constrained")
    line, = ax.plot(w, loss(w))

    def update(lam):                       # move artists; never re-plot
        line.set_ydata(loss(w) + 0.5 * lam * w**2)

    explore.interact(fig, update, lam=widgets.FloatSlider(value=0.5, min=0, max=2, step=0.1))

How it works, and why this way:

- The inline backend does not redraw a figure from a slider callback (`draw_idle` does nothing),
  and an ipympl canvas shows nothing after headless execution (nbval, nbconvert, slides, a code host).
- A display id updated from a slider callback (`update_display_data`) does not redraw either in
  JupyterLab 4: the message belongs to the widget's comm, not to the cell, and JupyterLab drops it.
- So the figure is drawn with Agg into an `ipywidgets.Image` that sits under the sliders in one
  `VBox`. A slider change calls update(), redraws the figure and sends the new PNG as a binary
  widget message; the browser swaps the picture in place (same size, no flicker).
- The cell's output carries the widget *and* a plain PNG of the figure for the default values:
  JupyterLab shows the live widget, while a code host, an untrusted notebook, nbconvert and the
  offline slides (no widget state) fall back to the PNG.
- The layout (constrained/tight) is computed once for the default values and then frozen, so the
  axes do not jump while a slider moves and each redraw skips the layout pass. An update that needs
  a new layout can call `fig.set_layout_engine("constrained")` itself.
- Redraws are blitted (`_Redrawer`): what update() changed is drawn over a cached background that
  holds the ticks and their labels, the costly part of a draw. So keep axis limits fixed where you
  can (set them once to cover every slider value): a limits change costs a full draw.
- Frames are cached by slider values. While a student drags, ipywidgets sends the next value only
  once the kernel is idle again, so the frames per second are 1 / (kernel time + round trip); a
  blitted frame still costs 15-80 ms on a 2-core machine (text and legends drawn over a changed line
  are redrawn, then ~10-20 ms of PNG encoding). So a panel whose sliders have few combinations of
  values (at most PRECOMPUTE: most have 4-31) draws every one, and any other panel keeps the frames
  it has drawn (the last KEEP_FRAMES): a drag, or a move back, swaps in the PNG. Those frames are
  drawn while the kernel is idle (no cell has run for IDLE_S), nearest values first, one per turn
  of the kernel's event loop: Run All does not wait for them, and a slider move or a cell is served
  between two frames. Without an event loop (a script, pytest) they are drawn when the panel is built.
  Hence update() must draw the same picture for the same values: no state carried from call to
  call (give artists it creates explicit colours; seed random draws inside it).
- Importing this module sets the course's figure style (STYLE): text readable on a projector.
- If update() raises, the traceback appears under the figure (a callback's error would otherwise
  vanish into JupyterLab's log) and the figure keeps its last good state.

Expensive work (a training run per slider value) goes in a function decorated with `cache`.
"""
import asyncio
import base64
import collections
import functools
import inspect
import io
import itertools
import math
import struct
import time
import traceback
import zlib
from pathlib import Path

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
from IPython import get_ipython
from IPython.display import Code, display
from matplotlib import font_manager
from matplotlib.axis import Axis
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.text import Text
from matplotlib.transforms import Bbox
from PIL import Image as PILImage

__all__ = ["interact", "cache", "show", "Panel", "PANELS"]

PANELS = []                                 # every panel built in this kernel (make bench-latency)
cache = functools.lru_cache(maxsize=None)   # memoize per slider value: @explore.cache
PRECOMPUTE = 48         # a panel with at most this many value combinations draws them all (0: none)
IDLE_S = 0.3            # ... while no cell has run for this long (seconds)
KEEP_FRAMES = 256       # encoded frames kept per panel (~60-90 kB each), least recently shown dropped
_FRAME = (Axis,)                            # ticks and their labels: the costly part, never animated

# Figures are read on laptops and from the back of a lecture room (a 1280×720 projector): no text
# below 11 pt (≈ 15 px at the 100 dpi the figures are drawn at). Notebooks never pass smaller sizes.
# Hangul: matplotlib's default font has none, so a Korean label would be a row of boxes wherever no
# CJK font is installed. The package ships a subset of Noto Sans CJK KR (OFL; every character the
# notebooks and lessons use, slides_assets/fonts.py) as the fallback after the usual sans-serif.
FONT_KR = Path(__file__).resolve().parent / "fonts" / "NotoSansKR-normkit.ttf"
STYLE = {"font.size": 12, "axes.titlesize": 13, "axes.labelsize": 12, "xtick.labelsize": 11,
         "ytick.labelsize": 11, "legend.fontsize": 11, "legend.title_fontsize": 11, "figure.titlesize": 13,
         "font.family": ["sans-serif", "Noto Sans KR normkit"]}
if FONT_KR.exists():                        # (a source tree without the package data: no fallback)
    font_manager.fontManager.addfont(str(FONT_KR))
plt.rcParams.update(STYLE)


class _Redrawer:
    """Draws a figure to PNG, redrawing only what update() changed when it can (blitting).

    matplotlib marks an artist `stale` when a setter changes it. The first time update() changes
    the contents of an axes (lines, patches, texts, legends), those artists and everything painted
    after them (above in z-order, or added later at the same zorder) become `animated`: the figure
    is drawn once without them (the background, kept) and later frames restore the background and
    draw only them. That skips the expensive part of a draw, the ticks and their text. Anything
    else that changed (limits, tick labels, a figure-level title, added or removed artists below)
    gets a full draw and a new background.
    """

    def __init__(self, fig):
        self.fig = fig
        self.canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
        self.background = None              # pixels without the animated artists
        self.drawn = {}                     # axes -> (view limits, ids of non-animated children)

    def png(self, fast=False):
        """The figure as PNG bytes (fast: ~4x quicker, ~5% bigger, for live frames)."""
        if self.background is not None and self._only_animated_changed():
            self.canvas.restore_region(self.background)
            self._draw_animated()
        else:
            self._full_draw()
        if fast:
            return _png(np.asarray(self.canvas.buffer_rgba()))
        image = PILImage.frombuffer("RGBA", self.canvas.get_width_height(physical=True),
                                    self.canvas.buffer_rgba())
        buf = io.BytesIO()
        image.save(buf, format="png", compress_level=6)
        return buf.getvalue()

    @staticmethod
    def _contents(ax):
        """An axes' children that may be animated: not its axes (ticks, tick labels) or background."""
        return [c for c in ax.get_children() if c is not ax.patch and not isinstance(c, _FRAME)]

    def _only_animated_changed(self):
        fig = self.fig
        if any(c.stale for c in self._shown(fig) if c not in fig.axes) or set(fig.axes) != set(self.drawn):
            return False
        for ax in fig.axes:
            limits, ids = self.drawn[ax]
            if self._limits(ax) != limits:
                return False
            # a new artist (a rebuilt legend, say) at or above the animated layer joins it
            animated_z = [c.get_zorder() for c in ax.get_children() if c.get_animated()]
            for c in self._contents(ax):
                if id(c) not in ids and not c.get_animated() and animated_z and c.get_zorder() >= min(animated_z):
                    c.set_animated(True)
            still = [c for c in self._shown(ax) if not c.get_animated()]
            if {id(c) for c in still} != ids or any(c.stale for c in still):
                return False
        return True

    @staticmethod
    def _shown(parent):
        """Children that draw something. A hidden artist (a twinx axes' background) or an empty
        text (every axes' unused left/right titles) is never drawn, so it stays `stale` for good;
        hiding, showing, emptying or filling one changes this set, so that change is still seen."""
        return [c for c in parent.get_children()
                if c.get_visible() and not (isinstance(c, Text) and not c.get_text())]

    def _clear_title(self, ax, order, i, shown):
        """Is order[i] one of ax's titles, and does nothing painted after it overlap its band?"""
        title = order[i]
        if title not in (ax.title, ax._left_title, ax._right_title):
            return False
        renderer = self.canvas.get_renderer()
        box = title.get_window_extent(renderer)
        band = Bbox([[0, box.y0], [self.fig.bbox.width, box.y1]])     # the text may grow sideways
        return not any(band.overlaps(c.get_window_extent(renderer)) for c in order[i + 1:]
                       if id(c) in shown and not c.get_animated())

    @staticmethod
    def _limits(ax):
        return tuple(ax.viewLim.bounds), ax.get_xscale(), ax.get_yscale()

    def _full_draw(self):
        if self.background is not None:     # an update changed these: animate them and all above
            for ax in self.fig.axes:
                ids = self.drawn.get(ax, (None, set()))[1]
                shown = {id(c) for c in self._shown(ax)}
                # in the order Axes.draw paints them (by zorder; ties in the order added)
                order = sorted(self._contents(ax), key=lambda c: c.get_zorder())
                changed = [i for i, c in enumerate(order) if id(c) in shown
                           and not c.get_animated() and (c.stale or id(c) not in ids)]
                # A title sits above its axes, usually clear of what they paint: a changed title whose
                # band (its height, the figure's width) meets nothing painted after it is animated
                # alone, so a legend painted after it stays in the background.
                alone = [i for i in changed if self._clear_title(ax, order, i, shown)]
                for i in alone:
                    order[i].set_animated(True)
                changed = [i for i in changed if i not in alone]
                if changed:
                    for c in order[changed[0]:]:
                        c.set_animated(True)
        self.canvas.draw()                  # skips animated artists
        self.background = self.canvas.copy_from_bbox(self.fig.bbox)
        self.drawn = {ax: (self._limits(ax), {id(c) for c in self._shown(ax) if not c.get_animated()})
                      for ax in self.fig.axes}
        self._draw_animated()

    def _draw_animated(self):
        for ax in self.fig.axes:
            for c in sorted((c for c in ax.get_children() if c.get_animated()), key=lambda c: c.get_zorder()):
                ax.draw_artist(c)


def _png(rgba, level=1):
    """An RGBA array as PNG, rows unfiltered, deflated at `level`.

    Pillow's PNG encoder tries every row filter on every row: for a 900x340 figure that took 9 of its
    12 ms even at compress_level=1. A plot is mostly flat colour, which deflate packs as well without
    the filters: 4 ms, and about the size of Pillow's level 1 (measured: 66 kB vs 71 kB).
    """
    h, w, _ = rgba.shape
    rows = np.zeros((h, 1 + 4 * w), np.uint8)           # each row: filter type 0 (none), then the pixels
    rows[:, 1:] = rgba.reshape(h, -1)

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", w, h, 8, 6, 0, 0, 0)  # 8 bits, RGBA, deflate, no filter, no interlace
    return b"".join([b"\x89PNG\r\n\x1a\n", chunk(b"IHDR", header), chunk(b"IDAT", zlib.compress(rows, level)),
                     chunk(b"IEND", b"")])


def _alt(fig):
    """Alternative text for the static picture: the figure's titles."""
    titles = [t for t in [fig.get_suptitle()] + [ax.get_title() for ax in fig.axes] if t]
    return "Figure: " + "; ".join(titles) if titles else "Figure"


class Panel:
    """Controls above one figure; a change calls update(**values) and redraws the figure."""

    def __init__(self, fig, update, controls):
        self.fig, self.update, self.controls = fig, update, controls
        self.timings_ms = []                # wall-clock ms of each update (update + redraw + PNG)
        self.cpu_ms = []                    # the same in CPU time: what a machine to itself would take
        self.error = None                   # the last exception raised by update(), if any
        if not controls:
            raise ValueError("interact: expected at least one control, e.g. lam=widgets.FloatSlider(...)")
        for name, w in controls.items():
            if not isinstance(w, widgets.ValueWidget):
                raise ValueError(f"{name}: expected an ipywidgets control (e.g. FloatSlider), got {w!r}")
            if not w.description:
                w.description = name
            w.style.description_width = "initial"
        plt.close(fig)                      # the inline backend must not display it a second time
        update(**self.values)
        self._redrawer = _Redrawer(fig)
        png = self._redrawer.png()          # the first draw runs the layout engine ...
        if fig.get_layout_engine() is not None:
            fig.set_layout_engine("none")   # ... then the layout stays put (see the module docstring)
        # Encoded frames by slider values: showing a value again is a lookup, not a draw.
        self._frames = collections.OrderedDict()
        # Rehearse one slider move: the artists update() touches come out stale, so they are
        # animated and the background is cached now, not on the student's first move.
        self._frames[self._key()] = self._draw(self.values)
        t0 = time.perf_counter()
        self._pending = self._precompute()              # value combinations still to draw
        self.precompute_ms = 1e3 * (time.perf_counter() - t0)  # time spent drawing (make bench-latency)
        if self._pending and not _IDLE.start(self):
            self.finish_precompute()                    # no event loop: draw them now
        # natural size (a flex column would stretch the picture and blur it), shrinks on narrow screens
        self.image = widgets.Image(value=png, format="png", layout={"align_self": "flex-start"})
        self.image.add_class("normkit-figure")
        self.errors = widgets.Output()
        sliders = widgets.HBox(list(controls.values()), layout={"flex_flow": "row wrap"})
        self.box = widgets.VBox([sliders, self.image, self.errors])
        for w in controls.values():
            w.observe(self._on_change, names="value")
        bundle = self.box._repr_mimebundle_()
        bundle["image/png"] = base64.b64encode(png).decode("ascii")
        bundle["text/plain"] = repr(fig)
        display(bundle, metadata={"image/png": {"alt": _alt(fig)}}, raw=True)
        ip = get_ipython()
        self.execution_count = ip.execution_count if ip is not None else None  # In [n] (benchmarks)

    def _ipython_display_(self):
        """Already on screen: a panel as a cell's last value must not print its repr."""

    def __repr__(self):
        return f"<explore.Panel {self.values} {self.fig!r}>"

    @property
    def values(self):
        return {name: w.value for name, w in self.controls.items()}

    def _key(self):
        return tuple(self.values.values())

    def _draw(self, values):
        self.update(**values)
        return self._redrawer.png(fast=True)

    def _precompute(self):
        """The frames to draw ahead, in order: one step of each slider from its default (what update()
        changes with each slider, a title the rehearsal did not change, gets animated, and the first
        arrow key press finds its frame), then, when there are few combinations of values (at most
        PRECOMPUTE), all of them, nearest to the defaults first. Returns them (none drawn yet)."""
        grids = [_range(w) for w in self.controls.values()]
        if PRECOMPUTE <= 0:                 # turned off
            return []
        here = [values.index(w.value) if w.value in values else -1
                for values, w in zip(grids, self.controls.values())]
        steps = []
        for i, values in enumerate(grids):
            if here[i] >= 0 and len(values) > 1:
                step = values[here[i] + 1] if here[i] + 1 < len(values) else values[here[i] - 1]
                steps.append(self._key()[:i] + (step,) + self._key()[i + 1:])
        if not (all(grids) and math.prod(map(len, grids)) <= PRECOMPUTE):
            return steps
        combos = itertools.product(*(range(len(v)) for v in grids))
        nearest = sorted(combos, key=lambda ix: sum(abs(a - max(b, 0)) for a, b in zip(ix, here)))
        rest = [tuple(v[i] for v, i in zip(grids, ix)) for ix in nearest]
        return list(dict.fromkeys(c for c in steps + rest if c not in self._frames))

    def _draw_ahead(self, combo):
        if combo not in self._frames:
            try:
                self._frames[combo] = self._draw(dict(zip(self.controls, combo)))
            except Exception:               # shown under the figure if the student gets there
                pass

    def draw_next(self):
        """Draw one pending frame (the idle loop calls this); False when none is left."""
        if not self._pending:
            return False
        self._draw_ahead(self._pending.pop(0))
        self.update(**self.values)
        return bool(self._pending)

    def finish_precompute(self):
        """Draw every pending frame now (what a student meets after a few idle seconds)."""
        t0 = time.perf_counter()
        while self.draw_next():
            pass
        self.precompute_ms += 1e3 * (time.perf_counter() - t0)

    @property
    def precomputed(self):
        """How many frames are cached."""
        return len(self._frames)

    def _on_change(self, _change):
        _IDLE.touch()
        t0, c0 = time.perf_counter(), time.process_time()
        key = self._key()
        png = self._frames.get(key)
        try:
            # update() even for a cached frame (cheap next to a draw): the figure's artists always
            # show the slider values, and a later redraw starts from there
            self.update(**self.values)
            if png is None:
                png = self._frames[key] = self._redrawer.png(fast=True)
        except Exception as e:              # show it under the figure; keep the last good picture
            self.error = e
            self.errors.outputs = ({"output_type": "stream", "name": "stderr",
                                    "text": "".join(traceback.format_exception(e))},)
            return
        self._frames.move_to_end(key)
        while len(self._frames) > KEEP_FRAMES:
            self._frames.popitem(last=False)
        self.image.value = png
        if self.error is not None:
            self.error = None
            self.errors.outputs = ()
        self.timings_ms.append(1e3 * (time.perf_counter() - t0))
        self.cpu_ms.append(1e3 * (time.process_time() - c0))

    def sweep(self, max_values=40, cold=False):
        """Time the slider callback across each control's whole range; restore the defaults after.

        cold: empty the frame cache before every value, to time update() + redraw + PNG instead of
        what a student meets (a cached frame where there is one).
        Returns {control name: [wall-clock milliseconds per value]}; the CPU times are left in
        `self.sweep_cpu_ms`. Used by `make bench-latency`. Raises the first error an update raised.
        """
        self.finish_precompute()
        out, self.sweep_cpu_ms = {}, {}
        kept = self._frames
        for name, w in self.controls.items():
            default = w.value
            values = _range(w, max_values)
            self.timings_ms.clear()
            self.cpu_ms.clear()
            for v in values:
                if cold:
                    self._frames = collections.OrderedDict()
                w.value = v
                if self.error is not None:
                    raise RuntimeError(f"update({name}={v!r}) failed") from self.error
            out[name], self.sweep_cpu_ms[name] = list(self.timings_ms), list(self.cpu_ms)
            w.value = default
        self._frames = kept
        return out


class _IdleDrawer:
    """Draws the panels' pending frames on the kernel's event loop while no cell runs.

    A cell blocks the loop, so a frame is only ever drawn between two cells; it waits until the
    last cell or slider move is IDLE_S old, which Run All (cells back to back) never leaves.
    """

    def __init__(self):
        self.queue, self.last, self.hooked, self.scheduled = [], time.perf_counter(), False, False

    def touch(self, *_):
        self.last = time.perf_counter()

    def start(self, panel):
        """Queue `panel`'s frames; False when there is no running event loop to draw them on."""
        try:
            self.loop = asyncio.get_running_loop()
        except RuntimeError:
            return False
        ip = get_ipython()
        if ip is not None and not self.hooked:
            ip.events.register("pre_run_cell", self.touch)
            ip.events.register("post_run_cell", self.touch)
            self.hooked = True
        self.touch()
        self.queue.append(panel)
        if not self.scheduled:
            self.scheduled = True
            self.loop.call_later(IDLE_S, self.tick)
        return True

    def tick(self):
        wait = self.last + IDLE_S - time.perf_counter()
        if wait > 0:
            self.loop.call_later(wait, self.tick)
            return
        while self.queue and not self.queue[0]._pending:
            self.queue.pop(0)
        if self.queue:
            try:
                self.queue[0].draw_next()
            except Exception:                   # update() failed: the student sees it on moving there
                self.queue.pop(0)
            self.loop.call_later(0.005, self.tick)  # let a waiting message in between two frames
        else:
            self.scheduled = False


_IDLE = _IdleDrawer()


def _range(w, max_values=None):
    """The values a control can take (up to max_values of them, evenly spread), or [] if unknown.

    Slider values are rounded as the browser's slider rounds them (0.3, not 0.1 * 3), so that a
    precomputed frame is found when the student gets there.
    """
    if hasattr(w, "options"):
        values = [o[1] if isinstance(o, tuple) else o for o in w.options]
    elif isinstance(w.value, bool):
        values = [not w.value, w.value]
    elif isinstance(w, widgets.FloatLogSlider):
        n = int(round((w.max - w.min) / w.step)) + 1
        values = [w.base ** round(w.min + i * w.step, 10) for i in range(n)]
    elif hasattr(w, "min") and hasattr(w, "step") and not isinstance(w.value, tuple):
        n = int(round((w.max - w.min) / w.step)) + 1
        values = [w.min + i * w.step for i in range(n)]
        if isinstance(w.value, float):
            values = [round(v, 10) for v in values]
    else:
        return []
    stride = max(1, len(values) // max_values) if max_values else 1
    return values[::stride]


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
