"""The decks, in chromium: `make slides` opened from file:// with every network request blocked, and
jupyterlab-slideshow's live presenting mode.

Every slide of every deck (a 1280×720 window, as a projector):
- fits: not taller than 720 px nor wider than 1280 px, and no box inside it clips or scrolls its
  content (wide tables, long `pre` listings);
- text is at least 16 px as shown (computed font size × reveal.js's scale);
- each figure is shown large enough that its smallest text (STYLE's smallest size at the PNG's dpi)
  is ~15 px or more (MIN_FIGURE_TEXT_PX);
- every glyph is drawn by the decks' own fonts (Chrome DevTools Protocol, CSS.getPlatformFontsForNode):
  a glyph no vendored font has would come from the machine's fonts, or be a box where there are none.
The decks show code only for cells tagged `show-code` and carry each cell's speaker notes.
Screenshots: every slide that fails a check, and one slide per deck (the first with a figure), go to
artifacts/screenshots/slides/.
"""
import importlib.util
import json
import os
from pathlib import Path

import pytest

from . import labdriver

SHOTS = labdriver.ARTIFACTS / "screenshots" / "slides"
LOCAL = ("file:", "data:", "blob:", "about:")
MIN_TEXT_PX = 16.0
MIN_FIGURE_TEXT_PX = 14.5         # "≈ 15 px": 11 pt at 100 dpi at its own size is 15.3 px × reveal's 0.98

_spec = importlib.util.spec_from_file_location("build_slides", labdriver.ROOT / "slides_assets" / "build.py")
build_slides = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build_slides)


def _vendored_families(deck):
    """The names (family, full) of every font file a deck ships in assets/: what CDP may report."""
    from fontTools.ttLib import TTFont
    names = set()
    for path in (deck.parent / "assets").rglob("*"):
        if path.suffix in (".woff", ".woff2", ".ttf", ".otf"):
            table = TTFont(path)["name"]
            names |= {table.getDebugName(i) for i in (1, 4, 16)} - {None}
    return names


def _smallest_figure_pt():
    from normkit.explore import STYLE
    return min(v for k, v in STYLE.items() if k.endswith("size") and isinstance(v, (int, float)))


@pytest.fixture(scope="module")
def decks(tmp_path_factory):
    out = tmp_path_factory.mktemp("slides")
    return {p.stem.removesuffix(".slides"): p for p in build_slides.build(labdriver.NOTEBOOKS, out)}


@pytest.fixture
def offline_page(chromium):
    """A 1280×720 page whose requests to anything but local files are aborted and recorded."""
    context = chromium.new_context(viewport=build_slides.SLIDE)
    page = context.new_page()
    page.blocked, page.errors = [], []

    def route(r):
        if r.request.url.startswith(LOCAL):
            r.continue_()
        else:
            page.blocked.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.on("request", lambda r: None if r.url.startswith(LOCAL) or r.url in page.blocked
            else page.blocked.append(r.url))
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
    yield page
    context.close()


def _open(page, deck):
    page.goto(deck.as_uri())
    page.wait_for_function("window.Reveal && Reveal.isReady()", timeout=30_000)
    page.evaluate("() => window.MathJax && MathJax.startup && MathJax.startup.promise")
    page.wait_for_function("[...document.images].every(i => i.complete)", timeout=30_000)
    page.wait_for_function("document.body.dataset.nkFitted === '1'", timeout=30_000)


def _cells(notebook):
    nb = json.loads(notebook.read_text(encoding="utf-8"))
    return [c for c in nb["cells"] if c.get("metadata", {}).get("slideshow", {}).get("slide_type") != "skip"]


def _expected(notebook):
    shown = _cells(notebook)
    figures = sum("image/png" in o.get("data", {}) for c in shown if c["cell_type"] == "code"
                  for o in c.get("outputs", []))
    math = any("$" in "".join(c["source"]) for c in shown if c["cell_type"] == "markdown")
    return figures, math


@pytest.mark.parametrize("notebook", labdriver.NOTEBOOKS, ids=lambda p: p.stem)
def test_deck_opens_offline(notebook, decks, offline_page):
    page = offline_page
    _open(page, decks[notebook.stem])
    assert page.blocked == [], "the deck tried to reach the network"
    assert page.errors == [], "script errors in the deck"
    assert page.evaluate("Reveal.getTotalSlides()") >= 1

    figures, math = _expected(notebook)
    sizes = page.evaluate("[...document.querySelectorAll('.slides img')].map(i => i.naturalWidth)")
    assert len(sizes) >= figures and all(w > 0 for w in sizes), f"figures (natural widths): {sizes}"
    if math:
        typeset = page.evaluate("document.querySelectorAll('mjx-container').length")
        failed = page.evaluate("document.querySelectorAll('mjx-merror').length")
        raw = page.evaluate("""[...document.querySelectorAll('.jp-RenderedMarkdown')]
                               .some(el => el.textContent.includes('$$'))""")
        assert typeset > 0 and failed == 0 and not raw, f"MathJax: {typeset} typeset, {failed} errors, raw $$: {raw}"


@pytest.mark.parametrize("notebook", labdriver.NOTEBOOKS, ids=lambda p: p.stem)
def test_code_hidden_unless_show_code_and_speaker_notes_are_reveal_notes(notebook, decks, offline_page):
    page = offline_page
    _open(page, decks[notebook.stem])
    shown = _cells(notebook)
    tagged = sum(c["cell_type"] == "code" and build_slides.SHOW_CODE in c.get("metadata", {}).get("tags", [])
                 for c in shown)
    notes = [c["metadata"]["speaker_notes"] for c in shown if c.get("metadata", {}).get("speaker_notes")]
    inputs = page.evaluate("document.querySelectorAll('.slides .jp-CodeCell .jp-InputArea').length")
    assert inputs == tagged, f"{inputs} code inputs shown, {tagged} cells tagged {build_slides.SHOW_CODE!r}"
    asides = page.evaluate("""[...document.querySelectorAll('.slides aside.notes')]
                              .filter(a => a.closest('section')).map(a => a.textContent)""")
    assert len(asides) == len(notes), f"{len(asides)} <aside class=notes>, {len(notes)} cells with speaker_notes"
    assert page.evaluate("!!Reveal.getPlugin('notes')"), "the notes plugin (speaker view, S) is not loaded"
    hidden = page.evaluate("[...document.querySelectorAll('.slides aside.notes')].every(a => !a.offsetParent)")
    assert hidden, "speaker notes show on the slide"


def test_speaker_view_opens_offline_with_the_notes(chromium, tmp_path):
    """S opens reveal.js's speaker view (the vendored notes plugin) from file://, with the cell's
    speaker notes, in the deck's fonts."""
    import nbformat
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# Notes", metadata={
                    "slideshow": {"slide_type": "slide"}, "speaker_notes": "Move **γ** from 1 to 3: 배치 정규화"}),
                nbformat.v4.new_markdown_cell("## Next", metadata={"slideshow": {"slide_type": "slide"}})]
    nbformat.write(nb, tmp_path / "99_notes.ipynb")
    deck = build_slides.build([tmp_path / "99_notes.ipynb"], tmp_path / "out")[0]
    context = chromium.new_context(viewport=build_slides.SLIDE)
    try:
        page = context.new_page()          # (no request routing: Playwright's would stall the popup's font loads)
        _open(page, deck)
        with page.expect_popup() as popup:
            page.keyboard.press("s")
        view = popup.value
        view.wait_for_function("document.querySelector('.speaker-controls-notes .value')"
                               " && document.querySelector('.speaker-controls-notes .value').textContent.includes('γ')",
                               timeout=15_000)
        view.wait_for_function("getComputedStyle(document.querySelector('.speaker-controls-notes .value'))"
                               ".fontFamily.includes('Noto Sans KR normkit')", timeout=10_000)
        assert "배치 정규화" in view.inner_text(".speaker-controls-notes")
        SHOTS.mkdir(parents=True, exist_ok=True)
        view.set_viewport_size(build_slides.SLIDE)
        view.screenshot(path=str(SHOTS / "speaker-view.png"))
    finally:
        context.close()


# --- every slide: fit, text size, figure scale, fonts ---------------------------------------

_MARK_JS = """(dpiDefault) => {
  // Number the elements that hold visible text on the current slide; return what the checks need.
  const scale = Reveal.getScale(), H = Reveal.getConfig().height, W = Reveal.getConfig().width;
  const slide = Reveal.getCurrentSlide();
  document.querySelectorAll('[data-nk-text]').forEach(e => e.removeAttribute('data-nk-text'));
  const texts = [], small = [], clipped = [];
  const walker = document.createTreeWalker(slide, NodeFilter.SHOW_TEXT);
  const owners = new Map();
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    const el = n.parentElement, text = n.textContent.trim();
    if (!text || el.closest('aside.notes, mjx-assistive-mml, script, style')) continue;
    if (!el.getClientRects().length || getComputedStyle(el).visibility === 'hidden') continue;
    if (!owners.has(el)) { owners.set(el, owners.size); el.setAttribute('data-nk-text', owners.get(el));
                           texts.push(text.slice(0, 40)); }
    if (el.closest('svg')) continue;       // MathJax: sized with the text around it
    const px = parseFloat(getComputedStyle(el).fontSize) * scale;
    if (px < MIN - 0.05) small.push(`${px.toFixed(1)} px "${text.slice(0, 30)}"`);
  }
  for (const el of slide.querySelectorAll('*')) {
    if (el.closest('svg, mjx-assistive-mml, aside.notes') || !el.getClientRects().length) continue;
    const cs = getComputedStyle(el);
    const clipsX = cs.overflowX !== 'visible' && el.scrollWidth > el.clientWidth + 1;
    const clipsY = cs.overflowY !== 'visible' && el.scrollHeight > el.clientHeight + 1;
    if ((clipsX || clipsY) && el.clientWidth > 0)
      clipped.push(`${el.tagName.toLowerCase()}.${[...el.classList].slice(0, 2).join('.')} ` +
                   `${el.scrollWidth}×${el.scrollHeight} in ${el.clientWidth}×${el.clientHeight}`);
  }
  const figures = [...slide.querySelectorAll('.jp-RenderedImage img')].map(i => {
    const dpi = parseFloat(i.dataset.dpi || dpiDefault);
    return {dpi, k: i.clientWidth / i.naturalWidth, shown: i.clientWidth, natural: i.naturalWidth};
  });
  const i = Reveal.getIndices(slide);
  return {name: `${i.h + 1}.${(i.v || 0) + 1}`, title: (slide.querySelector('h1, h2, h3')?.textContent || '').trim(),
          scale, height: slide.scrollHeight, width: slide.scrollWidth, H, W,
          texts, small: [...new Set(small)], clipped, figures};
}""".replace("MIN", repr(MIN_TEXT_PX))


def _fonts_of_slide(cdp, count):
    """{element index: [(family, custom?)]} for the elements _MARK_JS numbered (CDP)."""
    root = cdp.send("DOM.getDocument", {"depth": 0})["root"]["nodeId"]
    ids = cdp.send("DOM.querySelectorAll", {"nodeId": root, "selector": "[data-nk-text]"})["nodeIds"]
    fonts = {}
    for node in ids:
        attrs = cdp.send("DOM.getAttributes", {"nodeId": node})["attributes"]
        index = int(dict(zip(attrs[::2], attrs[1::2]))["data-nk-text"])
        used = cdp.send("CSS.getPlatformFontsForNode", {"nodeId": node})["fonts"]
        fonts[index] = [(f["familyName"], f["isCustomFont"], f["glyphCount"]) for f in used]
    return fonts


_RESULTS = {}


def _inspect(notebook, deck, chromium):
    """Walk every slide of a deck once; the four checks below read the result."""
    if notebook.stem in _RESULTS:
        return _RESULTS[notebook.stem]
    context = chromium.new_context(viewport=build_slides.SLIDE)
    page = context.new_page()
    page.route("**/*", lambda r: r.continue_() if r.request.url.startswith(LOCAL) else r.abort())
    min_pt = _smallest_figure_pt()
    vendored = _vendored_families(deck)
    slides, screenshot_taken = [], False
    for old in SHOTS.glob(f"{notebook.stem}*.png"):
        old.unlink()
    try:
        _open(page, deck)
        page.evaluate("Reveal.configure({transition: 'none', backgroundTransition: 'none'})")
        cdp = page.context.new_cdp_session(page)
        cdp.send("DOM.enable")
        cdp.send("CSS.enable")
        count = page.evaluate("Reveal.getSlides().length")
        for n in range(count):
            page.evaluate("(n) => { const i = Reveal.getIndices(Reveal.getSlides()[n]); Reveal.slide(i.h, i.v); }", n)
            page.evaluate("() => document.fonts.ready.then(() => new Promise(r => requestAnimationFrame(r)))")
            s = page.evaluate(_MARK_JS, build_slides.DEFAULT_DPI)
            fonts = _fonts_of_slide(cdp, len(s["texts"]))
            s["foreign"] = sorted({f"{fam}{'' if custom else ' (system)'}" for used in fonts.values()
                                   for fam, custom, _ in used if not custom or fam not in vendored})
            s["foreign_text"] = [s["texts"][i] for i, used in sorted(fonts.items())
                                 if any(not custom or fam not in vendored for fam, custom, _ in used)][:3]
            s["too_big"] = []
            if s["height"] > s["H"] + 1:
                s["too_big"].append(f"{s['height']} px tall")
            if s["width"] > s["W"] + 1:
                s["too_big"].append(f"{s['width']} px wide")
            s["small_figures"] = [f"figure at {f['k']:.2f}× its pixels ({f['shown']} of {f['natural']} px): "
                                  f"{min_pt} pt text at {f['dpi']:g} dpi is "
                                  f"{min_pt / 72 * f['dpi'] * f['k'] * s['scale']:.1f} px"
                                  for f in s["figures"]
                                  if min_pt / 72 * f["dpi"] * f["k"] * s["scale"] < MIN_FIGURE_TEXT_PX]
            failed = s["too_big"] or s["clipped"] or s["small"] or s["small_figures"] or s["foreign"]
            first_figure = s["figures"] and not screenshot_taken
            if failed or first_figure:
                SHOTS.mkdir(parents=True, exist_ok=True)
                suffix = f"-{s['name']}" if failed else ""
                page.screenshot(path=str(SHOTS / f"{notebook.stem}{suffix}.png"))
                screenshot_taken = screenshot_taken or first_figure
            slides.append(s)
        if not screenshot_taken:
            page.evaluate("Reveal.slide(0, 0)")
            SHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SHOTS / f"{notebook.stem}.png"))
    finally:
        context.close()
    _RESULTS[notebook.stem] = slides
    return slides


def _report(notebook, slides, key, what):
    bad = [f"slide {s['name']} ({s['title'][:40]!r}): {'; '.join(s[key][:4])}" for s in slides if s[key]]
    return f"{notebook.name}: {len(bad)} slide(s) {what}:\n  " + "\n  ".join(bad)


@pytest.mark.parametrize("notebook", labdriver.NOTEBOOKS, ids=lambda p: p.stem)
def test_every_slide_fits_1280x720(notebook, decks, chromium):
    slides = _inspect(notebook, decks[notebook.stem], chromium)
    for s in slides:
        s["overflow"] = s["too_big"] + [f"clips/scrolls: {c}" for c in s["clipped"]]
    assert not any(s["overflow"] for s in slides), (
        _report(notebook, slides, "overflow", "overflow 1280×720") + "\nstart a new slide or sub-slide "
        "(cell metadata slideshow.slide_type) where the content continues")


@pytest.mark.parametrize("notebook", labdriver.NOTEBOOKS, ids=lambda p: p.stem)
def test_no_text_below_16px(notebook, decks, chromium):
    slides = _inspect(notebook, decks[notebook.stem], chromium)
    assert not any(s["small"] for s in slides), _report(notebook, slides, "small", f"with text below {MIN_TEXT_PX} px")


@pytest.mark.parametrize("notebook", labdriver.NOTEBOOKS, ids=lambda p: p.stem)
def test_figure_text_readable(notebook, decks, chromium):
    slides = _inspect(notebook, decks[notebook.stem], chromium)
    assert not any(s["small_figures"] for s in slides), (
        _report(notebook, slides, "small_figures", f"with figure text below {MIN_FIGURE_TEXT_PX} px")
        + "\nthe figure is shrunk to fit: give it a slide with less text, or make it smaller (figsize)")


@pytest.mark.parametrize("notebook", labdriver.NOTEBOOKS, ids=lambda p: p.stem)
def test_every_glyph_from_a_vendored_font(notebook, decks, chromium):
    slides = _inspect(notebook, decks[notebook.stem], chromium)
    for s in slides:
        s["fonts"] = [f"{', '.join(s['foreign'])} for {s['foreign_text']}"] if s["foreign"] else []
    assert not any(s["fonts"] for s in slides), (
        _report(notebook, slides, "fonts", "drawn with a font the deck does not ship")
        + "\nrun `make fonts` (slides_assets/fonts.py) to add the characters to the subsets")


# --- live: JupyterLab + jupyterlab-slideshow ---------------------------------------------------

LIVE_NOTEBOOK = os.environ.get("NORMKIT_LIVE_DECK", "00_start_here.ipynb")


def test_live_presenting_hides_code_unless_show_code(lab, page):
    """`make lab` serves slides_assets/lab/custom.css: while jupyterlab-slideshow presents, a code
    cell shows its outputs only, unless it carries the tag `show-code` (jupyterlab-fonts, which
    jupyterlab-slideshow builds on, copies each cell's tags to `data-jpf-cell-tags`)."""
    labdriver.open_notebook(page, lab, LIVE_NOTEBOOK)
    try:
        labdriver.run_all(page)
        # tag one more code cell `show-code` in the browser (the server works on a temporary copy)
        tagged = page.evaluate("""() => { const nb = window.jupyterapp.shell.currentWidget.content;
            const has = c => (c.model.getMetadata('tags') || []).includes('show-code');
            const i = nb.widgets.findIndex(c => c.model.type === 'code' && !has(c));
            nb.widgets[i].model.setMetadata('tags', [...(nb.widgets[i].model.getMetadata('tags') || []), 'show-code']);
            return nb.widgets.filter(c => c.model.type === 'code' && has(c)).length; }""")
        page.wait_for_function("(n) => document.querySelectorAll('.jp-CodeCell[data-jpf-cell-tags*=\",show-code,\"]')"
                               ".length === n", arg=tagged, timeout=10_000)
        page.evaluate("() => window.jupyterapp.commands.execute('deck:start')")
        page.wait_for_function("document.body.dataset.jpDeckMode === 'presenting'", timeout=10_000)
        shots = {}
        for kind in ("show-code", "hidden"):  # the slide of the last tagged cell, of the last other one
            page.evaluate("""(kind) => { const nb = window.jupyterapp.shell.currentWidget.content;
                const has = c => (c.model.getMetadata('tags') || []).includes('show-code');
                const cells = nb.widgets.map((c, i) => [c, i])
                                .filter(([c]) => c.model.type === 'code' && has(c) === (kind === 'show-code')
                                        && (c.model.getMetadata('slideshow') || {}).slide_type !== 'skip');
                let i = cells[cells.length - 1][1];          // the deck moves by slides: go to the slide's first cell
                const starts = c => ['slide', 'subslide'].includes((c.model.getMetadata('slideshow') || {}).slide_type);
                while (i > 0 && !starts(nb.widgets[i])) i--;
                nb.activeCellIndex = i; }""", kind)
            page.wait_for_timeout(1500)
            on_screen = page.evaluate("""(kind) => [...document.querySelectorAll(
                '.jp-Deck .jp-CodeCell.jp-deck-mod-onscreen')]
                .some(c => (c.dataset.jpfCellTags || '').includes(',show-code,') === (kind === 'show-code'))""", kind)
            assert on_screen, f"no {kind} code cell on the slide presented"
            shots[kind] = SHOTS / f"live-{Path(LIVE_NOTEBOOK).stem}-{kind}.png"
            SHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shots[kind]))
        state = page.evaluate("""() => {
          const cells = [...document.querySelectorAll('.jp-Deck .jp-CodeCell')];
          const display = c => getComputedStyle(c.querySelector('.jp-Cell-inputWrapper')).display;
          const tagged = c => (c.dataset.jpfCellTags || '').includes(',show-code,');
          return {code: cells.length, tagged: cells.filter(tagged).length,
                  tagged_hidden: cells.filter(c => tagged(c) && display(c) === 'none').length,
                  other_shown: cells.filter(c => !tagged(c) && display(c) !== 'none').length,
                  css: [...document.querySelectorAll('link[rel=stylesheet]')]
                         .some(l => /custom\\/custom.css/.test(l.href))};
        }""")
        assert state["css"], "custom.css is not loaded: start JupyterLab as `make lab` does"
        assert state["tagged"] == tagged and state["code"] > tagged, state
        assert state["other_shown"] == 0, f"untagged code cells show their code while presenting: {state}"
        assert state["tagged_hidden"] == 0, f"a show-code cell's code is hidden while presenting: {state}"
        page.evaluate("() => window.jupyterapp.commands.execute('deck:stop')")
        page.wait_for_function("!document.body.dataset.jpDeckMode", timeout=10_000)
        editing = page.evaluate("""[...document.querySelectorAll('.jp-CodeCell .jp-Cell-inputWrapper')]
                                   .every(w => getComputedStyle(w).display !== 'none')""")
        assert editing, "code stays hidden after presenting stopped"
    finally:
        labdriver.shutdown_kernel(page)
