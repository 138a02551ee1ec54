"""normkit.explore without a browser: what the cell outputs, what a slider change does.

The browser side (the figure really changes on screen in JupyterLab) is tests/browser/.
"""
import base64
import io

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import pytest
from PIL import Image

from normkit import explore

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


@pytest.fixture
def shown(monkeypatch):
    calls = []
    monkeypatch.setattr(explore, "display", lambda obj, **kw: calls.append((obj, kw)))
    # No kernel here, so frames are drawn at once, not while idle; without this a panel would find
    # the asyncio loop that Playwright's sync API (the browser tests, same xdist worker) leaves running.
    monkeypatch.setattr(explore._IDLE, "start", lambda panel: False)
    return calls


@pytest.fixture
def every_change_draws(monkeypatch):
    """No precomputed or cached frames: each slider change runs update() and the blitted redraw."""
    monkeypatch.setattr(explore, "PRECOMPUTE", 0)
    monkeypatch.setattr(explore, "KEEP_FRAMES", 0)


def _panel(**slider):
    fig, ax = plt.subplots(figsize=(4, 2), layout="constrained")
    w = np.linspace(-2, 2, 50)
    line, = ax.plot(w, w**2)
    ax.set(title="a parabola", xlabel="w", ylabel="loss", ylim=(0, 20))

    def update(lam):
        line.set_ydata(w**2 + lam * w)

    return explore.interact(fig, update, lam=widgets.FloatSlider(**(slider or dict(value=1, min=0, max=2, step=0.5))))


def _pixels(png):
    return np.asarray(Image.open(io.BytesIO(png)))


def test_one_output_with_the_live_widget_and_a_static_png(shown):
    panel = _panel()
    (bundle, kw), = shown
    assert bundle[WIDGET_VIEW]["model_id"] == panel.box.model_id
    assert base64.b64decode(bundle["image/png"]) == panel.image.value   # the same picture
    assert bundle["text/plain"].startswith("<Figure size")                # stable for nbval
    assert kw["metadata"]["image/png"]["alt"] == "Figure: a parabola"
    assert panel in explore.PANELS


def test_the_static_png_is_what_savefig_draws(shown):
    panel = _panel()
    buf = io.BytesIO()
    panel.fig.savefig(buf, format="png", dpi=panel.fig.dpi)
    assert np.array_equal(_pixels(panel.image.value), _pixels(buf.getvalue()))


def test_a_slider_change_redraws_and_coming_back_is_pixel_exact(shown):
    panel = _panel()
    first = _pixels(panel.image.value)
    slider = panel.controls["lam"]
    slider.value = 2
    assert not np.array_equal(_pixels(panel.image.value), first)
    slider.value = 1
    assert np.array_equal(_pixels(panel.image.value), first)
    assert len(panel.timings_ms) == len(panel.cpu_ms) == 2


def test_an_error_in_update_is_shown_under_the_figure_and_cleared(shown):
    panel = _panel()
    good = panel.image.value
    update = panel.update
    panel.update = lambda lam: 1 / 0
    panel.controls["lam"].value = 2
    assert isinstance(panel.error, ZeroDivisionError) and panel.image.value == good
    assert "ZeroDivisionError" in panel.errors.outputs[0]["text"]
    panel.update = update
    panel.controls["lam"].value = 1.5
    assert panel.error is None and panel.errors.outputs == ()


def test_sweep_times_every_value_and_restores_the_default(shown):
    panel = _panel(value=0.5, min=0, max=2, step=0.25)
    before = panel.image.value
    times = panel.sweep()
    assert len(times["lam"]) == len(panel.sweep_cpu_ms["lam"]) == 9     # 0, 0.25, ..., 2
    assert panel.controls["lam"].value == 0.5
    assert np.array_equal(_pixels(panel.image.value), _pixels(before))


def test_bad_controls_are_refused(shown):
    fig = plt.figure()
    with pytest.raises(ValueError, match="lam: expected an ipywidgets control"):
        explore.interact(fig, lambda lam: None, lam=0.5)
    with pytest.raises(ValueError, match="at least one control"):
        explore.interact(fig, lambda: None)


def _full_render(fig):
    """What a plain draw of the figure's current state gives (no blitting)."""
    animated = [c for ax in fig.axes for c in ax.get_children() if c.get_animated()]
    for c in animated:
        c.set_animated(False)
    fig.canvas.draw()
    pixels = np.asarray(fig.canvas.buffer_rgba()).copy()
    for c in animated:
        c.set_animated(True)
    return pixels


def _two_panel_figure():
    """Lines, a legend whose text changes, stairs, bars, a text, limits that move on one panel."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(6, 2.5), layout="constrained")
    x = np.linspace(0, 3, 60)
    line, = a.plot(x, np.sin(x), label="sin")
    a.plot(x, np.cos(x), label="cos")
    a.axhline(0, color="k", lw=0.5)
    leg = a.legend(loc="upper right")
    note = a.text(0.1, -0.8, "")
    a.set(title="fixed limits", ylim=(-1.2, 1.2), xlabel="x", ylabel="y")
    bars = b.bar(range(4), [1, 2, 3, 4], alpha=0.6)
    stairs = b.stairs([1, 1, 1], [0, 1, 2, 3], lw=2)
    b.set(title="limits follow the data", xlabel="k")

    def update(k):
        line.set_ydata(np.sin(x + k))
        leg.get_texts()[0].set_text(f"sin(x + {k:.1f})")
        note.set_text(f"k = {k:.1f}")
        for bar, h in zip(bars, [1 + k, 2, 3 - k, 4]):
            bar.set_height(h)
        stairs.set_data([1 + k, 2, 1])
        b.set_ylim(0, 4 + 2 * k)                 # a limits change: must fall back to a full draw

    return fig, update


def test_blitted_frames_equal_a_full_redraw(shown, every_change_draws):
    fig, update = _two_panel_figure()
    panel = explore.interact(fig, update, k=widgets.FloatSlider(value=0, min=0, max=1, step=0.25))
    for k in (0.25, 0.5, 1.0, 0.0, 0.75):
        panel.controls["k"].value = k
        assert np.array_equal(_pixels(panel.image.value), _full_render(fig)), f"k={k}"


def test_blitting_skips_the_axes_and_reuses_the_background(shown, every_change_draws):
    panel = _panel()
    redrawer = panel._redrawer
    background = redrawer.background                # cached when the panel was built
    panel.controls["lam"].value = 2                 # so even the first move is blitted
    panel.controls["lam"].value = 0.5
    assert redrawer.background is background
    line = panel.fig.axes[0].lines[0]
    assert line.get_animated() and not panel.fig.axes[0].xaxis.get_animated()


def test_new_and_removed_artists_are_drawn_correctly(shown, every_change_draws):
    fig, ax = plt.subplots(figsize=(4, 2))
    x = np.linspace(0, 1, 20)
    ax.plot(x, x, zorder=3)
    ax.set(ylim=(0, 2))
    band = [ax.fill_between(x, 0, 0.5, alpha=0.3)]

    def update(h):                                  # a band re-created under the line each time
        band.pop().remove()
        band.append(ax.fill_between(x, 0, h, alpha=0.3, zorder=1))

    panel = explore.interact(fig, update, h=widgets.FloatSlider(value=0.5, min=0.5, max=1.5, step=0.5))
    for h in (1.0, 1.5, 0.5):
        panel.controls["h"].value = h
        assert np.array_equal(_pixels(panel.image.value), _full_render(fig)), f"h={h}"


def test_a_rebuilt_legend_is_blitted_too(shown, every_change_draws):
    fig, ax = plt.subplots(figsize=(4, 2))
    x = np.linspace(0, 1, 20)
    line, = ax.plot(x, x, label="k = 0")
    ax.set(ylim=(0, 3))
    ax.legend(loc="upper left")

    def update(k):
        line.set_ydata(x + k)
        line.set_label(f"k = {k}")
        ax.legend(loc="upper left")                 # a new Legend artist every time

    panel = explore.interact(fig, update, k=widgets.FloatSlider(value=0, min=0, max=1.5, step=0.5))
    panel.controls["k"].value = 0.5
    background = panel._redrawer.background
    for k in (1.0, 1.5, 0.0):
        panel.controls["k"].value = k
        assert np.array_equal(_pixels(panel.image.value), _full_render(fig)), f"k={k}"
    assert panel._redrawer.background is background


def test_twin_axes_are_blitted_and_hiding_an_artist_redraws(shown, every_change_draws):
    fig, ax = plt.subplots(figsize=(4, 2))
    twin = ax.twinx()                               # its background patch is hidden: always stale
    x = np.linspace(0, 1, 20)
    line, = ax.plot(x, x)
    marker, = twin.plot([0.5], [0.5], "o", ms=20, zorder=1)   # ~300 px: a stale one would show
    ax.set(ylim=(0, 3))
    twin.set(ylim=(0, 1))

    def update(k):
        line.set_ydata(x + k)
        marker.set_visible(k < 1)                   # hidden part of the time

    panel = explore.interact(fig, update, k=widgets.FloatSlider(value=0, min=0, max=1.5, step=0.5))
    panel.controls["k"].value = 0.5
    background = panel._redrawer.background
    panel.controls["k"].value = 0.0
    assert panel._redrawer.background is background  # blitted despite the twin axes
    for k in (1.0, 1.5, 0.5, 0.0):
        panel.controls["k"].value = k
        # Twin axes share their frame: the two spines that coincide may blend in the other order
        # at a few anti-aliased pixels. Anything more (a stale or missing artist) is a bug.
        differ = (_pixels(panel.image.value) != _full_render(fig)).any(-1)
        assert differ.mean() < 1e-3, f"k={k}: {differ.sum()} pixels differ"


def test_an_unchanged_legend_stays_in_the_background(shown, every_change_draws):
    fig, ax = plt.subplots(figsize=(4, 2))
    x = np.linspace(0, 1, 20)
    ax.plot(x, 0 * x + 2.5, label="fixed")
    line, = ax.plot(x, x, label="moving", zorder=6)   # above the legend: the legend never changes
    ax.set(ylim=(0, 3))
    legend = ax.legend(loc="upper left")

    panel = explore.interact(fig, lambda k: line.set_ydata(x + k),
                             k=widgets.FloatSlider(value=0, min=0, max=1.5, step=0.5))
    for k in (0.5, 1.0, 1.5, 0.0):
        panel.controls["k"].value = k
        assert np.array_equal(_pixels(panel.image.value), _full_render(fig)), f"k={k}"
    assert line.get_animated() and not legend.get_animated() and not ax.title.get_animated()


def _count_draws(panel):
    """Record each redraw of the panel's figure in the returned list."""
    draws, png = [], panel._redrawer.png
    panel._redrawer.png = lambda fast=False: draws.append(fast) or png(fast)
    return draws


def test_few_values_are_all_drawn_when_built_and_each_frame_is_right(shown):
    fig, update = _two_panel_figure()
    panel = explore.interact(fig, update, k=widgets.FloatSlider(value=0, min=0, max=1, step=0.25))
    assert panel.precomputed == 5
    draws = _count_draws(panel)
    for k in (0.25, 1.0, 0.5, 0.0, 0.75, 0.5):
        panel.controls["k"].value = k
        # the picture shown is a full draw of the figure for this value
        assert np.array_equal(_pixels(panel.image.value), _full_render(fig)), f"k={k}"
    assert draws == []                              # sliding only swapped pictures


def test_float_values_as_the_browser_sends_them_are_precomputed(shown):
    panel = _panel(value=0.5, min=0, max=1, step=0.1)
    assert panel.precomputed == 11
    assert {(0.3,), (0.7,), (1.0,)} <= set(panel._frames)   # 0.3, as the slider sends it, not 0.1 * 3


def test_many_values_are_cached_as_shown_and_the_last_frame_is_right(shown, monkeypatch):
    monkeypatch.setattr(explore, "KEEP_FRAMES", 4)
    fig, ax = plt.subplots(figsize=(4, 2))
    x = np.linspace(0, 1, 20)
    line, = ax.plot(x, x)
    note = ax.text(0.05, 2.5, "")
    ax.set(ylim=(-1, 3))

    def update(a, b):
        line.set_ydata(a * x + b)
        note.set_text(f"a = {a:.1f}, b = {b:.1f}")

    a, b = (widgets.FloatSlider(value=1, min=0, max=2, step=0.1) for _ in range(2))
    panel = explore.interact(fig, update, a=a, b=b)
    assert panel.precomputed == 3                   # 21 × 21 values: the defaults and one step of each
    draws = _count_draws(panel)
    for slider, v in [(a, 1.1), (a, 1.2), (b, 0.9), (a, 1.1), (b, 1.0), (a, 1.2), (a, 1.0)]:
        slider.value = v
        assert np.array_equal(_pixels(panel.image.value), _full_render(fig)), panel.values
    # drawn: (1.2, 1), (1.2, 0.9), (1.1, 0.9), then (1, 1) again: the least recently shown frame is
    # dropped when a fifth comes; (1.1, 1), built with the panel, and (1.2, 1) were found
    assert len(draws) == 4 and len(panel._frames) == 4


def test_live_frames_are_lossless_pngs():
    rgba = np.random.default_rng(0).integers(0, 256, (7, 13, 4), dtype=np.uint8)   # odd sizes, any alpha
    image = Image.open(io.BytesIO(explore._png(rgba)))
    assert image.mode == "RGBA" and np.array_equal(np.asarray(image), rgba)


def test_artists_painted_before_the_changed_ones_stay_in_the_background(shown, every_change_draws):
    fig, ax = plt.subplots(figsize=(4, 2))
    x = np.linspace(0, 1, 20)
    dots, = ax.plot(x, 1.5 - x, "o")                # same zorder as the line, added first: painted under it
    line, = ax.plot(x, x)
    after, = ax.plot(x, 0 * x + 0.5, lw=4)          # same zorder, added after: painted over it
    ax.set(ylim=(0, 3))
    panel = explore.interact(fig, lambda k: line.set_ydata(x + k),
                             k=widgets.FloatSlider(value=0, min=0, max=1.5, step=0.5))
    for k in (0.5, 1.0, 1.5, 0.0):
        panel.controls["k"].value = k
        assert np.array_equal(_pixels(panel.image.value), _full_render(fig)), f"k={k}"
    assert line.get_animated() and after.get_animated() and not dots.get_animated()


def test_a_changed_title_is_animated_alone(shown, every_change_draws):
    """A title is painted before a legend (zorder 3 < 5) but clear of it: changing the title must
    not drag the legend, whose text is costly to draw, into every frame."""
    fig, ax = plt.subplots(figsize=(4, 2))
    x = np.linspace(0, 1, 20)
    ax.plot(x, 0 * x + 2.5, label="fixed")
    ax.set(ylim=(0, 3))
    legend = ax.legend(loc="upper left")
    title = ax.set_title("")
    twin = ax.twinx()
    line, = twin.plot(x, x, color="C1")
    twin.set_ylim(0, 3)

    def update(k):
        line.set_ydata(x + k)
        title.set_text(f"k = {k:.1f}, a longer title at the end" if k > 1 else f"k = {k:.1f}")

    panel = explore.interact(fig, update, k=widgets.FloatSlider(value=0, min=0, max=1.5, step=0.5))
    for k in (0.5, 1.5, 1.0, 0.0):
        panel.controls["k"].value = k
        assert np.array_equal(_pixels(panel.image.value), _full_render(fig)), f"k={k}"
    assert title.get_animated() and line.get_animated() and not legend.get_animated()


def test_a_title_under_a_legend_outside_the_axes_is_not_animated_alone(shown, every_change_draws):
    """A legend placed over the title's band must be redrawn with it, or the frame would differ."""
    fig, ax = plt.subplots(figsize=(4, 2.4), layout="constrained")
    ax.plot([0, 1], [1, 2], label="fixed")
    ax.set(ylim=(0, 3))
    legend = ax.legend(loc="center", bbox_to_anchor=(0.5, 1.06), framealpha=1)   # over the title
    title = ax.set_title("k = 0.0")

    def update(k):                          # only the title changes
        title.set_text(f"k = {k:.1f}")

    panel = explore.interact(fig, update, k=widgets.FloatSlider(value=0, min=0, max=1.5, step=0.5))
    for k in (0.5, 1.5, 0.0):
        panel.controls["k"].value = k
        assert np.array_equal(_pixels(panel.image.value), _full_render(fig)), f"k={k}"
    assert legend.get_animated()


KERNEL_PANEL = """
import asyncio, time
import ipywidgets as widgets, matplotlib.pyplot as plt
from normkit import explore
fig, ax = plt.subplots(figsize=(4, 2))
line, = ax.plot([0, 1], [0, 0])
t0 = time.perf_counter()
panel = explore.interact(fig, lambda a: line.set_ydata([0, a]), a=widgets.IntSlider(value=0, min=0, max=20))
built_ms = 1e3 * (time.perf_counter() - t0)
"""


def test_frames_are_drawn_while_the_kernel_is_idle_not_during_run_all():
    """In a kernel the panel draws only its default frame when built; the other 20
    frames wait until no cell has run for IDLE_S, then come one per turn of the event loop."""
    nbformat = pytest.importorskip("nbformat")
    from nbclient import NotebookClient
    cells = [KERNEL_PANEL, "print(panel.precomputed)", "await asyncio.sleep(3)",
             "print(panel.precomputed, panel._pending)"]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    NotebookClient(nb, kernel_name="python3", timeout=120).execute()
    out = [("".join(o.get("text", "") for o in c.outputs)).strip() for c in nb.cells]
    assert out[1] == "1", "built with more than the default frame: Run All waited for frames"
    assert out[3] == "21 []", "the idle kernel did not draw the pending frames"
