"""`make fonts`: the vendored fonts, subset to the characters the notebooks use.

    python slides_assets/fonts.py            # regenerate (needs Debian's fonts-noto-cjk and fonts-noto-core)
    python slides_assets/fonts.py --check    # only list the characters no vendored font has

The decks must not depend on the viewer's system fonts: a machine without a CJK font shows every
Hangul word as a row of boxes. So every character of the notebooks (markdown, outputs, code, speaker
notes) and of the lesson modules (figure labels) is drawn by a font the decks ship:

- Source Sans Pro (reveal.js 5's theme font, not subset): prose, Latin.
- "Noto Sans KR normkit", normkit/fonts/NotoSansKR-normkit.ttf, from Noto Sans CJK KR (Debian
  fonts-noto-cjk): Hangul, and the Greek, math signs and arrows Source Sans Pro or the mono font lack.
- "Noto Sans Mono normkit", slides_assets/fonts/NotoSansMono-normkit.woff (fonts-noto-core): code and
  printed output.
- "Noto Sans Symbols2 normkit", slides_assets/fonts/NotoSansSymbols2-normkit.woff (fonts-noto-core):
  ✓ ✗ ★, U+2600–27BF (its @font-face unicode-range), so the checkers' marks match.

All three are OFL-1.1 (LICENSE beside each), renamed as the OFL asks of a modified font.
The decks' stacks (deck.css): prose `Source Sans Pro, Symbols2, KR, Mono`; code `Mono, Symbols2, KR`.
A character goes into the KR subset when Source Sans Pro or Noto Sans Mono lacks it, so each stack
finds it. The KR file is TrueType (its CFF outlines converted with cu2qu), so matplotlib can also
embed it in PDF and PostScript; `normkit.explore` puts it in matplotlib's fallback list, so a figure
title in Korean renders on every machine. tests/test_slides_build.py fails, naming the characters,
when a notebook gains one that no vendored font has (then run this script).
"""
import argparse
import html
import json
import re
import sys
import unicodedata
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
NOTEBOOKS = "notebooks/[0-9][0-9]_*.ipynb"
MODULES = "normkit/lessons/*.py"            # figure labels are drawn there

SSP = HERE / "reveal.js/dist/theme/fonts/source-sans-pro/source-sans-pro-regular.woff"
KR = ROOT / "normkit/fonts/NotoSansKR-normkit.ttf"
MONO = HERE / "fonts/NotoSansMono-normkit.woff"
SYMBOLS = HERE / "fonts/NotoSansSymbols2-normkit.woff"
FAMILY = {KR: "Noto Sans KR normkit", MONO: "Noto Sans Mono normkit", SYMBOLS: "Noto Sans Symbols2 normkit"}
SOURCE = {KR: ("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc", "Noto Sans CJK KR"),
          MONO: ("/usr/share/fonts/truetype/noto/NotoSansMono-Regular.ttf", None),
          SYMBOLS: ("/usr/share/fonts/truetype/noto/NotoSansSymbols2-Regular.ttf", None)}
PACKAGES = "fonts-noto-cjk fonts-noto-core"
SYMBOL_RANGE = (0x2600, 0x27BF)            # Miscellaneous Symbols, Dingbats: the @font-face unicode-range

_TAG = re.compile(r"<[^>]*>")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _text(value):
    return "".join(value) if isinstance(value, list) else str(value)


def notebook_text(nb):
    """Everything of a notebook that a deck, JupyterLab or a figure may draw with a font."""
    parts = []
    for cell in nb.get("cells", []):
        source = _text(cell.get("source", ""))
        parts.append(html.unescape(source) if cell.get("cell_type") == "markdown" else source)
        parts.append(_text(cell.get("metadata", {}).get("speaker_notes", "")))
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                parts.append(_text(out.get("text", "")))
            elif out.get("output_type") == "error":
                parts.append(_ANSI.sub("", "\n".join(out.get("traceback", []))))
            data = out.get("data", {})
            for mime in ("text/plain", "text/markdown", "text/latex"):
                parts.append(_text(data.get(mime, "")))
            parts.append(html.unescape(_TAG.sub("", _text(data.get("text/html", "")))))
    return "\n".join(parts)


def drawn(ch):
    """A character a font must have: not a control, format, private-use or line-break character (a
    space is drawn: a font without one hands the spaces between its words to a system font)."""
    return unicodedata.category(ch) not in ("Cc", "Cf", "Co", "Cs", "Zl", "Zp")


def used_characters(notebooks=None, modules=None):
    """{character: 'where it first occurs'} over the notebooks and lesson modules."""
    notebooks = sorted(ROOT.glob(NOTEBOOKS)) if notebooks is None else notebooks
    modules = sorted(ROOT.glob(MODULES)) if modules is None else modules
    found = {" ": "every text", "\u00a0": "HTML's &nbsp;"}
    for path in notebooks:
        for ch in notebook_text(json.loads(Path(path).read_text(encoding="utf-8"))):
            found.setdefault(ch, Path(path).name)
    for path in modules:
        for ch in Path(path).read_text(encoding="utf-8"):
            found.setdefault(ch, Path(path).name)
    return {ch: where for ch, where in found.items() if drawn(ch)}


def cmap(path):
    from fontTools.ttLib import TTFont
    return set(map(chr, TTFont(path).getBestCmap()))


def vendored():
    """{font file: characters it has} for the fonts the decks ship."""
    return {path: cmap(path) for path in (SSP, KR, MONO, SYMBOLS)}


def missing(characters, fonts=None):
    """The characters no vendored font draws, sorted."""
    fonts = vendored() if fonts is None else fonts
    have = set().union(*fonts.values())
    return sorted(ch for ch in characters if ch not in have)


def describe(chars, where=None):
    where = where or {}
    return ", ".join(f"{ch} U+{ord(ch):04X} {unicodedata.name(ch, '?')}"
                     + (f" ({where[ch]})" if ch in where else "") for ch in chars)


# --- regenerate ------------------------------------------------------------------------------

def _source(path):
    from fontTools.ttLib import TTCollection, TTFont
    file, family = SOURCE[path]
    if not Path(file).exists():
        raise SystemExit(f"{file} is missing: apt-get install -y {PACKAGES}")
    if file.endswith(".ttc"):
        return next(f for f in TTCollection(file).fonts if f["name"].getDebugName(1) == family)
    return TTFont(file)


def plan(characters):
    """{font file: the characters to subset it to}, and the characters no source has."""
    ssp = cmap(SSP)
    src = {path: set(map(chr, _source(path).getBestCmap())) for path in SOURCE}
    symbols = {c for c in characters if SYMBOL_RANGE[0] <= ord(c) <= SYMBOL_RANGE[1] and c in src[SYMBOLS]}
    mono = {c for c in characters if c in src[MONO]}
    kr = {c for c in characters if not (c in ssp and c in mono) and c not in symbols and c in src[KR]}
    lacking = sorted(set(characters) - ssp - mono - symbols - kr)
    return {KR: kr, MONO: mono, SYMBOLS: symbols}, lacking


def _rename(font, family):
    """A modified OFL font takes a name of its own (OFL §3); the license and copyright stay."""
    name = font["name"]
    keep = {0, 7, 8, 9, 11, 12, 13, 14}
    name.names = [n for n in name.names if n.nameID in keep]
    ps = family.replace(" ", "") + "-Regular"
    for nid, value in {1: family, 2: "Regular", 3: f"{ps};subset for the normkit decks", 4: f"{family} Regular",
                       5: "Version 1.0; subset with fontTools by slides_assets/fonts.py", 6: ps}.items():
        name.setName(value, nid, 3, 1, 0x409)
    if "CFF " in font:
        cff = font["CFF "].cff
        cff.fontNames = [ps]
        cff[0].FullName = family


def _to_truetype(font, max_err=1.0):
    """CFF (cubic) outlines → glyf (quadratic): fontTools' otf2ttf recipe."""
    from fontTools.pens.cu2quPen import Cu2QuPen
    from fontTools.pens.ttGlyphPen import TTGlyphPen
    from fontTools.ttLib import newTable

    order = font.getGlyphOrder()
    glyphset = font.getGlyphSet()
    glyphs = {}
    for name in order:
        pen = TTGlyphPen(glyphset)
        glyphset[name].draw(Cu2QuPen(pen, max_err, reverse_direction=True))
        glyphs[name] = pen.glyph()
    font["loca"] = newTable("loca")
    font["glyf"] = glyf = newTable("glyf")
    glyf.glyphOrder, glyf.glyphs = order, glyphs
    for tag in ("CFF ", "VORG"):
        if tag in font:
            del font[tag]
    glyf.compile(font)
    hmtx = font["hmtx"]
    for name, glyph in glyf.glyphs.items():
        if hasattr(glyph, "xMin"):
            hmtx[name] = (hmtx[name][0], glyph.xMin)
    font["maxp"] = maxp = newTable("maxp")
    maxp.tableVersion = 0x00010000
    for field in ("maxZones", "maxTwilightPoints", "maxStorage", "maxFunctionDefs", "maxInstructionDefs",
                  "maxStackElements", "maxSizeOfInstructions", "maxComponentElements"):
        setattr(maxp, field, 1 if field == "maxZones" else 0)
    post = font["post"]
    post.formatType, post.extraNames, post.mapping, post.glyphOrder = 2.0, [], {}, order
    font.sfntVersion = "\000\001\000\000"


def subset(path, characters):
    from fontTools import subset as ftsubset
    font = _source(path)
    options = ftsubset.Options()
    options.name_IDs = ["*"]
    options.name_languages = ["*"]
    options.notdef_outline = True
    options.hinting = False                 # screens scale them; hints are a third of a TrueType file
    options.desubroutinize = True
    options.drop_tables += ["VORG", "vhea", "vmtx", "BASE", "DSIG"]
    sub = ftsubset.Subsetter(options)
    sub.populate(unicodes=[ord(c) for c in characters])
    sub.subset(font)
    _rename(font, FAMILY[path])
    if path.suffix == ".ttf" and "CFF " in font:
        _to_truetype(font)
    font.flavor = "woff" if path.suffix == ".woff" else None
    font.recalcTimestamp = False            # same characters, same bytes: `make fonts` leaves no diff
    path.parent.mkdir(parents=True, exist_ok=True)
    font.save(path)
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="only list the characters no vendored font has")
    args = parser.parse_args(argv)
    where = used_characters()
    if args.check:
        lacking = missing(where)
        print(f"{len(where)} characters; " + (f"no vendored font has: {describe(lacking, where)}"
                                                if lacking else "every one has a vendored font"))
        return 1 if lacking else 0
    subsets, lacking = plan(where)
    if lacking:
        print(f"no source font has: {describe(lacking, where)}", file=sys.stderr)
    for path, chars in subsets.items():
        subset(path, chars)
        print(f"{path.relative_to(ROOT)}: {len(chars)} characters, {path.stat().st_size / 1024:.0f} kB")
    return 1 if lacking else 0


if __name__ == "__main__":
    sys.exit(main())
