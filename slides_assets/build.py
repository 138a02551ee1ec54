"""`make slides`: every notebook → slides/NN_name.slides.html, a reveal.js deck that opens offline.

    python slides_assets/build.py                      # all notebooks → slides/
    python slides_assets/build.py notebooks/03_*.ipynb --out /tmp/deck

The notebooks are committed executed, so nothing runs here: the saved outputs are converted (figures
show the default slider values). What makes the decks work without a network (README, "Presenting"):

- the template `slides_assets/template/offline_reveal` loads reveal.js 5 and MathJax 3 from
  `slides/assets/` (copied from this folder) instead of CDNs, and drops mermaid, jQuery and require.js;
- theme `white`, whose fonts are vendored (the default `simple` pulls Google web fonts);
- the converted copy drops `metadata.widgets` (else the page loads the widget renderer from a CDN);
  outputs that are only a widget (no picture to fall back on) are dropped too.

Afterwards every page is checked for an http(s) reference; tests/browser/test_slides.py opens the
decks in chromium with every network request blocked.
"""
import argparse
import copy
import re
import shutil
import sys
from pathlib import Path

import nbformat
from nbconvert import SlidesExporter

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
ASSETS = ("reveal.js", "mathjax")          # folders of HERE copied to <out>/assets/
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
SLIDE = {"width": 1280, "height": 720}     # a slide fits a 1280×720 screen (the browser tests check it)

# A reference the browser would fetch (not a link the reader clicks, <a href>, nor a comment in CSS).
REMOTE = re.compile(r"""(?:\bsrc|<link\b[^>]*\bhref)\s*=\s*["']?(?:https?:)?//|@import\s+(?:url\()?["']?(?:https?:)?//|"""
                    r"""url\(\s*["']?(?:https?:)?//|\bimport\s[^;]*?from\s*["'](?:https?:)?//""", re.I)


def offline_copy(nb):
    """The notebook without widget state and without outputs that are only a widget."""
    nb = copy.deepcopy(nb)
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs
                            if not (WIDGET_VIEW in o.get("data", {}) and set(o["data"]) <= {WIDGET_VIEW, "text/plain"})]
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
    e = exporter()
    written = []
    for path in notebooks:
        path = Path(path)
        nb = offline_copy(nbformat.read(path, as_version=4))
        resources = {"metadata": {"name": path.stem, "path": str(path.parent)},
                     "offline": {"mathjax": "assets/mathjax/tex-svg-full.js"}}
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
