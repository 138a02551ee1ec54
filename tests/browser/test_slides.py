"""`make slides` decks in chromium, opened from file:// with every network request blocked.

For each notebook: reveal.js initialises, no request leaves the machine, every figure decodes, the
LaTeX is typeset by the vendored MathJax, and every slide fits the 1280×720 canvas. A screenshot of
the first slide with a figure goes to artifacts/screenshots/slides/.
"""
import importlib.util
import json

import pytest

from . import labdriver

SHOTS = labdriver.ARTIFACTS / "screenshots" / "slides"
LOCAL = ("file:", "data:", "blob:", "about:")

_spec = importlib.util.spec_from_file_location("build_slides", labdriver.ROOT / "slides_assets" / "build.py")
build_slides = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build_slides)


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


def _expected(notebook):
    nb = json.loads(notebook.read_text(encoding="utf-8"))
    cells = nb["cells"]
    shown = [c for c in cells if c.get("metadata", {}).get("slideshow", {}).get("slide_type") != "skip"]
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

    if figures:                           # look at it: artifacts/screenshots/slides/
        page.evaluate("""() => { const i = Reveal.getIndices(document.querySelector('.slides img')
                                                            .closest('section')); Reveal.slide(i.h, i.v); }""")
        page.wait_for_timeout(1000)       # the slide transition
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / f"{notebook.stem}.png"))


@pytest.mark.parametrize("notebook", labdriver.NOTEBOOKS, ids=lambda p: p.stem)
def test_every_slide_fits_1280x720(notebook, decks, offline_page):
    page = offline_page
    _open(page, decks[notebook.stem])
    too_tall = page.evaluate("""() => {
      const out = [], H = Reveal.getConfig().height;
      Reveal.getSlides().forEach(s => {
        const i = Reveal.getIndices(s);
        Reveal.slide(i.h, i.v);
        if (s.scrollHeight > H) out.push(`slide ${i.h + 1}.${i.v + 1}: ${s.scrollHeight} px`);
      });
      return out; }""")
    assert not too_tall, (f"{notebook.name}: {'; '.join(too_tall)} taller than 720 px: start a new slide "
                          f"or sub-slide (cell metadata slideshow.slide_type) where the content continues")
