"""The offline deck check without a browser: what counts as loading from the network."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "slides_assets"))
import build  # noqa: E402


def test_a_link_the_reader_clicks_is_not_a_network_load():
    assert build.remote_references('<p><a href="https://arxiv.org/abs/1502.03167">Ioffe</a></p>') == []


def test_scripts_stylesheets_and_imports_from_the_network_are_found():
    for html in ('<script src="https://cdn.example/x.js"></script>', '<img src="//cdn.example/a.png">',
                 '<link rel="stylesheet" href="https://cdn.example/x.css">',
                 '<style>@import url("https://fonts.example/f.css");</style>',
                 '<script type="module">import x from "https://cdn.example/m.js";</script>'):
        assert build.remote_references(html), html
