"""`make slides`: every notebook → slides/NN_name.slides.html, a reveal.js deck that opens offline.

    python slides_assets/build.py                      # all notebooks → slides/
    python slides_assets/build.py notebooks/03_*.ipynb --out /tmp/deck

The notebooks are committed executed, so nothing runs here: the saved outputs are converted (figures
show the default slider values). What the decks do (README, "Presenting"):

- code is hidden: a code cell shows its outputs only, its code too if it carries the tag `show-code`
  (a short cell whose code *is* the lesson); a cell with nothing left to show leaves no gap;
- speaker notes: a cell's `metadata.speaker_notes` (markdown) becomes reveal.js notes
  (`<aside class="notes">`): press S for the speaker view (the vendored notes plugin, offline);
- figures fill the room their slide's text leaves (deck/deck.js), text is at least 16 px on a
  1280×720 screen, and every glyph comes from a vendored font (deck/deck.css, fonts.py);
- offline: the template `slides_assets/template/offline_reveal` loads reveal.js 5 and MathJax 3 from
  `slides/assets/` (copied from this folder) instead of CDNs, and drops mermaid, jQuery and require.js;
  theme `white`, whose fonts are vendored (the default `simple` pulls Google web fonts); the converted
  copy drops `metadata.widgets` (else the page loads the widget renderer from a CDN); outputs that
  are only a widget (no picture to fall back on) are dropped too.

Afterwards every page is checked for an http(s) reference; tests/browser/test_slides.py opens the
decks in chromium with every network request blocked and checks every slide.
"""
import argparse
import base64
import copy
import io
import re
import shutil
import sys
from pathlib import Path

import nbformat
from nbconvert import SlidesExporter
from PIL import Image

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
ASSETS = ("reveal.js", "mathjax", "deck")  # folders of HERE copied to <out>/assets/
FONTS = [HERE / "fonts" / "NotoSansMono-normkit.woff", HERE / "fonts" / "NotoSansSymbols2-normkit.woff",
         ROOT / "normkit" / "fonts" / "NotoSansKR-normkit.ttf"]          # → <out>/assets/fonts/ (fonts.py)
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
SLIDE = {"width": 1280, "height": 720}     # a slide fits a 1280×720 screen (the browser tests check it)
MARGIN = 0.02                              # reveal.js's margin: scale 1/1.02 on a 1280×720 screen
SHOW_CODE = "show-code"                    # the cell tag that shows a code cell's code in the deck
DEFAULT_DPI = 100                          # a PNG without a pHYs chunk (normkit.explore's) was drawn at this

# A reference the browser would fetch (not a link the reader clicks, <a href>, nor a comment in CSS).
REMOTE = re.compile(r"""(?:\bsrc|<link\b[^>]*\bhref)\s*=\s*["']?(?:https?:)?//|"""
                    r"""@import\s+(?:url\()?["']?(?:https?:)?//|"""
                    r"""url\(\s*["']?(?:https?:)?//|\bimport\s[^;]*?from\s*["'](?:https?:)?//""", re.I)


def png_dpi(b64):
    """The dpi a PNG says it was drawn at (its pHYs chunk), else DEFAULT_DPI."""
    dpi = Image.open(io.BytesIO(base64.b64decode(b64))).info.get("dpi")
    return round(float(dpi[0]), 1) if dpi else DEFAULT_DPI


def offline_copy(nb):
    """The notebook as the deck shows it: no widget state, no outputs that are only a widget, code
    hidden unless tagged `show-code`, a cell with nothing left to show emptied, each PNG's dpi noted."""
    nb = copy.deepcopy(nb)
    nb.metadata.pop("widgets", None)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        cell.outputs = [o for o in cell.outputs
                        if not (WIDGET_VIEW in o.get("data", {}) and set(o["data"]) <= {WIDGET_VIEW, "text/plain"})]
        for o in cell.outputs:
            if "image/png" in o.get("data", {}):
                o.setdefault("metadata", {}).setdefault("image/png", {})["dpi"] = png_dpi(o["data"]["image/png"])
        if SHOW_CODE in cell.metadata.get("tags", []):
            continue
        if cell.outputs:
            cell.metadata["transient"] = {"remove_source": True}
        else:                              # keeps its place (slide boundaries, notes), shows nothing
            nb.cells[i] = nbformat.v4.new_raw_cell("", metadata=cell.metadata, id=cell.get("id"))
    return nb


def exporter():
    e = SlidesExporter(template_name="offline_reveal", extra_template_basedirs=[str(HERE / "template")])
    e.reveal_url_prefix = "assets/reveal.js"
    e.reveal_theme = "white"
    e.reveal_number = "c/t"
    e.reveal_width, e.reveal_height = str(SLIDE["width"]), str(SLIDE["height"])
    e.exclude_input_prompt = e.exclude_output_prompt = True
    return e


def remote_references(html):
    return sorted({html[max(0, m.start() - 20):m.end() + 60].replace("\n", " ") for m in REMOTE.finditer(html)})


def build(notebooks, out):
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name in ASSETS:
        shutil.copytree(HERE / name, out / "assets" / name, dirs_exist_ok=True)
    (out / "assets" / "fonts").mkdir(exist_ok=True)
    for font in FONTS:
        shutil.copy2(font, out / "assets" / "fonts" / font.name)
    for license_, name in ((ROOT / "normkit" / "fonts" / "LICENSE", "LICENSE-NotoSansKR"),
                           (HERE / "fonts" / "LICENSE", "LICENSE-NotoSansMono-NotoSansSymbols2")):
        shutil.copy2(license_, out / "assets" / "fonts" / name)      # the OFL travels with the fonts
    e = exporter()
    written = []
    for path in notebooks:
        path = Path(path)
        nb = offline_copy(nbformat.read(path, as_version=4))
        resources = {"metadata": {"name": path.stem, "path": str(path.parent)},
                     "offline": {"mathjax": "assets/mathjax/tex-svg-full.js"}, "reveal": {"margin": MARGIN}}
        html, _ = e.from_notebook_node(nb, resources=resources)
        remote = remote_references(html)
        if remote:
            raise SystemExit(f"{path.name}: the deck would load from the network: {remote}")
        target = out / f"{path.stem}.slides.html"
        target.write_text(html, encoding="utf-8")
        written.append(target)
    return written


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path,
                        default=sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")))
    parser.add_argument("--out", type=Path, default=ROOT / "slides")
    args = parser.parse_args(argv)
    for target in build(args.notebooks, args.out):
        print(f"wrote {target.relative_to(args.out.parent) if target.is_relative_to(args.out.parent) else target}")


if __name__ == "__main__":
    sys.exit(main())
