"""The offline decks and the vendored fonts, without a browser (tests/browser/test_slides.py opens them).

- what counts as loading from the network;
- what a deck shows of a notebook: code only for cells tagged `show-code`, speaker notes as reveal.js
  notes, each PNG's dpi;
- every character of the notebooks has a vendored font (else: which characters, and `make fonts`);
- matplotlib draws Hangul with the packaged font (no "Glyph … missing" warning).
"""
import base64
import importlib.util
import io
import sys
import warnings
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]


def _load(name):
    spec = importlib.util.spec_from_file_location(f"slides_{name}", ROOT / "slides_assets" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


build = _load("build")
fonts = _load("fonts")


def test_a_link_the_reader_clicks_is_not_a_network_load():
    assert build.remote_references('<p><a href="https://arxiv.org/abs/1502.03167">Ioffe</a></p>') == []


def test_scripts_stylesheets_and_imports_from_the_network_are_found():
    for html in ('<script src="https://cdn.example/x.js"></script>', '<img src="//cdn.example/a.png">',
                 '<link rel="stylesheet" href="https://cdn.example/x.css">',
                 '<style>@import url("https://fonts.example/f.css");</style>',
                 '<script type="module">import x from "https://cdn.example/m.js";</script>'):
        assert build.remote_references(html), html


# --- what a deck shows -------------------------------------------------------------------------

def _png(dpi=None):
    from PIL import Image
    buf = io.BytesIO()
    Image.new("RGB", (40, 20), "white").save(buf, format="png", **({"dpi": (dpi, dpi)} if dpi else {}))
    return base64.b64encode(buf.getvalue()).decode()


def _notebook():
    md = {"slideshow": {"slide_type": "slide"}, "speaker_notes": "Move **γ** from 1 to 3: 배치 정규화"}
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Title", metadata=md),
        nbformat.v4.new_code_cell("y = x @ w  # the lesson", metadata={"slideshow": {"slide_type": "-"},
                                                                        "tags": ["show-code"]},
                                  outputs=[nbformat.v4.new_output("stream", name="stdout", text="ok\n")]),
        nbformat.v4.new_code_cell("fig, ax = plt.subplots()  # set-up", metadata={"slideshow": {"slide_type": "-"}},
                                  outputs=[nbformat.v4.new_output("display_data", data={"image/png": _png(150),
                                                                                         "text/plain": "<Figure>"})]),
        nbformat.v4.new_code_cell("import os  # no output", metadata={"slideshow": {"slide_type": "subslide"},
                                                                     "speaker_notes": "second note"}),
        nbformat.v4.new_code_cell("plt.plot()", metadata={"slideshow": {"slide_type": "-"}},
                                  outputs=[nbformat.v4.new_output("display_data", data={"image/png": _png(),
                                                                                         "text/plain": "<Figure>"})]),
    ]
    return nb


def test_code_is_hidden_unless_tagged_show_code_and_empty_cells_keep_their_slide():
    nb = build.offline_copy(_notebook())
    shown, hidden, empty = nb.cells[1], nb.cells[2], nb.cells[3]
    assert "transient" not in shown.metadata
    assert hidden.metadata["transient"] == {"remove_source": True}
    assert empty.cell_type == "raw" and empty.source == ""
    assert empty.metadata["slideshow"]["slide_type"] == "subslide" and empty.metadata["speaker_notes"]


def test_png_dpi_is_noted_for_the_figure_checks():
    nb = build.offline_copy(_notebook())
    assert nb.cells[2].outputs[0]["metadata"]["image/png"]["dpi"] == 150
    assert nb.cells[4].outputs[0]["metadata"]["image/png"]["dpi"] == build.DEFAULT_DPI


def test_deck_html_shows_only_tagged_code_and_carries_speaker_notes(tmp_path):
    path = tmp_path / "99_test.ipynb"
    nbformat.write(_notebook(), path)
    html = build.build([path], tmp_path / "out")[0].read_text(encoding="utf-8")
    assert "the lesson" in html
    assert "set-up" not in html and "no output" not in html
    assert html.count('<aside class="notes">') == 2
    assert "<strong>γ</strong>" in html and "배치 정규화" in html
    assert 'data-dpi="150' in html
    for asset in ("deck/deck.css", "deck/deck.js", "fonts/NotoSansKR-normkit.ttf",
                  "fonts/NotoSansMono-normkit.woff", "fonts/NotoSansSymbols2-normkit.woff"):
        assert (tmp_path / "out" / "assets" / asset).exists(), asset


# --- fonts -----------------------------------------------------------------------------------

def test_every_character_of_the_notebooks_has_a_vendored_font():
    where = fonts.used_characters()
    lacking = fonts.missing(where)
    assert not lacking, (f"no vendored font has {fonts.describe(lacking, where)}: run `make fonts` "
                         "(slides_assets/fonts.py; needs Debian's fonts-noto-cjk and fonts-noto-core)")


def test_a_new_character_is_named(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("정규화 and a new one: 㐀 ⛄")]
    path = tmp_path / "99_new.ipynb"
    nbformat.write(nb, path)
    where = fonts.used_characters([path], [])
    lacking = fonts.missing(where)
    assert "㐀" in lacking and "⛄" in lacking and "정" not in lacking and " " not in lacking
    assert "U+3400" in fonts.describe(lacking, where) and "99_new.ipynb" in fonts.describe(lacking, where)


def test_vendored_fonts_are_subsets_with_their_license():
    from fontTools.ttLib import TTFont
    for path, family in fonts.FAMILY.items():
        font = TTFont(path)
        assert font["name"].getDebugName(1) == family
        assert "Open Font License" in font["name"].getDebugName(13)
        assert (path.parent / "LICENSE").read_text(encoding="utf-8").count("SIL OPEN FONT LICENSE Version 1.1")
        assert path.stat().st_size < 200_000, f"{path.name}: {path.stat().st_size} bytes, not a subset"
    assert "glyf" in TTFont(fonts.KR), "the matplotlib font must be TrueType (PDF and PostScript embed it)"


def test_matplotlib_draws_hangul_with_the_packaged_font(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import font_manager

    from normkit import explore

    assert explore.FONT_KR.exists() and "Noto Sans KR normkit" in explore.STYLE["font.family"]
    with plt.rc_context(explore.STYLE), warnings.catch_warnings():
        warnings.simplefilter("error")                       # "Glyph … missing from font(s)" is a warning
        fig, ax = plt.subplots(figsize=(3, 2))
        ax.set_title("정규화 · 일반화 오류")
        ax.set_xlabel("배치 정규화 (batch normalization)")
        fig.savefig(tmp_path / "kr.png")
        fig.savefig(tmp_path / "kr.pdf")
        plt.close(fig)
    used = {Path(f.fname).name for f in font_manager.fontManager.ttflist if f.name == "Noto Sans KR normkit"}
    assert used == {explore.FONT_KR.name}
