"""Project conventions that a reviewer would otherwise check by hand: notebook structure, where code lives."""
import ast
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks found in notebooks/"


@pytest.fixture(params=NOTEBOOKS, ids=lambda p: p.stem)
def nb(request):
    return json.loads(request.param.read_text(encoding="utf-8"))


def _text(cell):
    src = cell["source"]
    return "".join(src) if isinstance(src, list) else src


def test_kernelspec_so_lab_does_not_ask_for_a_kernel(nb):
    assert nb["metadata"]["kernelspec"]["name"] == "python3"


SLIDE_TYPES = {"slide", "subslide", "fragment", "skip", "notes", None}


def test_every_cell_has_a_slide_type_both_deck_makers_know(nb):
    """Every cell says where it goes in a deck. A cell that continues its slide says null: nbconvert
    reads null as "-", while jupyterlab-slideshow 0.3.4 (live presenting) knows slide, subslide,
    fragment, notes, skip and null, and shows a "-" cell on no slide at all."""
    missing = [i for i, c in enumerate(nb["cells"]) if "slide_type" not in c["metadata"].get("slideshow", {})]
    assert not missing, f"cells without slideshow.slide_type (null continues the slide): {missing}"
    odd = {i: c["metadata"]["slideshow"]["slide_type"] for i, c in enumerate(nb["cells"])
           if c["metadata"]["slideshow"]["slide_type"] not in SLIDE_TYPES}
    assert not odd, f"cells with a slide_type other than {sorted(map(str, SLIDE_TYPES))}: {odd}"
    assert nb["cells"][0]["metadata"]["slideshow"]["slide_type"] == "slide", "the first cell starts the deck"


def test_exercise_code_stays_out_of_the_decks(nb):
    """The exercise's task is on its slide; its code cell is where students work, and on a slide it
    would show only the checkers' ✗ lines. Code in the Exercises section is `skip` unless a cell is
    tagged show-code (the capstone's templates)."""
    inside, shown = False, []
    for i, c in enumerate(nb["cells"]):
        if c["cell_type"] == "markdown" and _text(c).lstrip().startswith("## "):
            inside = _text(c).lstrip().startswith("## Exercises")
        elif inside and c["cell_type"] == "code" and "show-code" not in c["metadata"].get("tags", []):
            if c["metadata"].get("slideshow", {}).get("slide_type") != "skip":
                shown.append(i)
    assert not shown, f"exercise code cells on a slide: {shown} (slideshow.slide_type 'skip')"


def test_no_slide_is_blank_once_code_is_hidden(nb):
    """Decks show a code cell's outputs only (unless tagged show-code): a slide made of set-up cells
    without output would be blank, live and offline. Such a cell continues the slide before it."""
    def starts(c):
        return c["metadata"].get("slideshow", {}).get("slide_type") in ("slide", "subslide")

    def shows(c):
        return c["metadata"].get("slideshow", {}).get("slide_type") != "skip" and (
            c["cell_type"] == "markdown" or c.get("outputs") or "show-code" in c["metadata"].get("tags", []))
    cells, blank = nb["cells"], []
    for i, c in enumerate(cells):
        if starts(c):
            end = next((j for j in range(i + 1, len(cells)) if starts(cells[j])), len(cells))
            if not any(shows(x) for x in cells[i:end]):
                blank.append(i)
    assert not blank, f"slides with nothing to show once code is hidden, starting at cells {blank}"


def test_first_cell_states_goal_prerequisites_and_time(nb):
    first = nb["cells"][0]
    assert first["cell_type"] == "markdown"
    text = _text(first)
    assert "After this notebook you will be able to" in text
    assert "**Prerequisites:**" in text, "the first cell names the prerequisites (**Prerequisites:** …)"
    assert re.search(r"\*\*Time:\*\* about \d+ minutes", text), "say **Time:** about N minutes in the first cell"


def _headings(nb):
    """(cell index, heading text) of every markdown heading."""
    return [(i, m.group(1)) for i, c in enumerate(nb["cells"]) if c["cell_type"] == "markdown"
            for m in re.finditer(r"^#+ (.*)$", _text(c), re.M)]


def test_ends_with_exercises_questions_summary_references(nb):
    """Exercises, then 2–3 written questions on their own slide, the summary, and the references last."""
    heads = _headings(nb)
    where = {key: max((i for i, h in heads if re.match(key, h)), default=None)
             for key in ("Exercises|.*Exercises", "Questions", "Summary", "References")}
    assert all(v is not None for v in where.values()), f"missing headings: {[k for k, v in where.items() if v is None]}"
    assert list(where.values()) == sorted(where.values()), f"expected this order near the end: {where}"
    assert where["References"] == len(nb["cells"]) - 1, "the references are the last cell"
    questions = nb["cells"][where["Questions"]]
    assert questions["metadata"]["slideshow"]["slide_type"] == "slide", "the questions get their own slide"
    n = len(re.findall(r"^\d+\. ", _text(questions), re.M))
    assert 2 <= n <= 3, f"expected 2–3 numbered written questions, found {n}"


# A citation in the prose: "Ioffe & Szegedy 2015", "Santurkar et al. (2018)", "Bishop 1995".
CITATION = re.compile(r"\b([A-Z][a-zA-Z-]+)(?: et al\.| & [A-Z][a-zA-Z-]+| and [A-Z][a-zA-Z-]+)?,? "
                      r"\(?((?:19|20)\d\d)\b")
NOT_AUTHORS = {"In", "Since", "From", "By", "The", "Fig", "Table", "Python", "PyTorch", "Keras", "TensorFlow",
               "ImageNet", "ICML", "NeurIPS", "ICLR", "CVPR", "ECCV", "ICCV", "JMLR", "Dec", "Figure", "Until"}


def test_every_cited_paper_is_in_the_references_with_a_link(nb):
    """Every "Author et al. YEAR" of the prose has a line in the last cell with the surname, the
    year and a link (arXiv or DOI for papers)."""
    refs = _text(nb["cells"][-1]).splitlines()
    prose = "\n".join(_text(c) for c in nb["cells"][:-1] if c["cell_type"] == "markdown")
    cited = {(m.group(1), m.group(2)) for m in CITATION.finditer(prose) if m.group(1) not in NOT_AUTHORS}
    missing = [f"{name} {year}" for name, year in sorted(cited)
               if not any(name in ln and year in ln and "https://" in ln for ln in refs)]
    assert not missing, f"cited without a linked reference in the last cell: {missing}"
    for ln in refs:
        if ln.startswith("- "):
            assert "https://" in ln, f"reference without a link: {ln}"


# Where SYLLABUS.md says a seed statement is quoted and corrected: notebook -> seeds with a box there.
CORRECTIONS = {"01": {"000"}, "03": {"000"}, "04": {"000", "003"}, "06": {"003", "004"}, "07": {"004"},
               "09": {"002"}}
HANGUL = re.compile(r"[\uac00-\ud7a3]")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_seed_corrections_are_boxed(path):
    """A seed statement the course corrects gets a box: the Korean quote, what holds, the evidence here."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    boxes = [_text(c) for c in nb["cells"] if c["cell_type"] == "markdown" and "**The lecture notes say**" in _text(c)]
    seeds = set()
    for box in boxes:
        quote = box[box.index("**The lecture notes say**"):]
        m = re.match(r"\*\*The lecture notes say\*\* \(seeds? (\d{3})", quote)
        assert m, f"a box names its seed: (seed 00N) after the label:\n{box[:200]}"
        seeds.add(m.group(1))
        assert HANGUL.search(quote.split("\n")[0]), f"the box quotes the seed's Korean text:\n{box[:200]}"
        for label in ("**What holds:**", "**Evidence here:**"):
            assert label in box, f"the box lacks {label}:\n{box[:200]}"
        lines = [ln for ln in box.strip().splitlines() if ln.strip()]
        assert all(ln.startswith(">") for ln in lines), "a box is one blockquote"
    missing = CORRECTIONS.get(path.name[:2], set()) - seeds
    assert not missing, f"no correction box for seed(s) {sorted(missing)} (SYLLABUS: seed statements to correct)"


def test_exercises_say_a_cross_before_coding_is_expected(nb):
    code = "\n".join(_text(c) for c in nb["cells"] if c["cell_type"] == "code")
    if "lesson.check_" not in code:
        return
    prose = [_text(c) for c in nb["cells"] if c["cell_type"] == "markdown"]
    assert any("✗" in t and "expected" in t for t in prose), \
        "tell the student that a ✗ before they have written code is expected"


SMALL_TEXT = re.compile(r"\b(?:fontsize|labelsize|titlesize|size)[\"']?\s*[=:]\s*"
                        r"(?:[\"'](?:xx-small|x-small|small)[\"']|"
                        r"(?:[0-9]|10)(?:\.\d+)?\b)")


def test_figure_text_is_readable_on_a_projector():
    """explore.STYLE sets 11–13 pt; nothing passes a smaller size (issue 13: 1280×720 projectors)."""
    sources = {p.name: "\n".join(_text(c) for c in json.loads(p.read_text(encoding="utf-8"))["cells"]
                                 if c["cell_type"] == "code") for p in NOTEBOOKS}
    sources |= {p.name: p.read_text(encoding="utf-8") for p in (ROOT / "normkit").rglob("*.py")}
    small = {name: SMALL_TEXT.findall(src) for name, src in sources.items() if SMALL_TEXT.search(src)}
    assert not small, f"text smaller than 11 pt: {small}"


def test_committed_executed_without_errors(nb):
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(c.get("execution_count") for c in code), "not every code cell was executed"
    errors = [o for c in code for o in c.get("outputs", []) if o["output_type"] == "error"]
    assert not errors, f"error outputs saved: {[e['ename'] for e in errors]}"
    assert any("image/png" in o.get("data", {}) for c in code for o in c.get("outputs", [])), \
        "no figure saved: executed with MPLBACKEND=Agg?"


def test_no_commented_out_code_or_empty_cells(nb):
    for i, c in enumerate(nb["cells"]):
        assert _text(c).strip(), f"cell {i} is empty"
        if c["cell_type"] == "code":
            dead = [ln for ln in _text(c).splitlines() if re.match(r"\s*#\s*(import|print|plt\.|for |def )", ln)]
            assert not dead, f"cell {i} has commented-out code: {dead}"


def _checker_code(tree):
    """Top-level functions of a lesson that are exercise checkers (check_*) or private helpers they call."""
    funcs = {f.name: f for f in tree.body if isinstance(f, ast.FunctionDef)}
    checkers = {n for n in funcs if n.startswith("check_")}
    used = {node.id for n in checkers for node in ast.walk(funcs[n]) if isinstance(node, ast.Name)}
    return [funcs[n] for n in checkers | {u for u in used if u.startswith("_") and u in funcs}]


def test_normkit_does_not_call_the_torch_reference():
    """torch's own norm layers and functions are what normkit is tested against, not what it runs;
    only exercise checkers (check.py, check_* in the lessons) may compute torch's answer."""
    pattern = re.compile(r"F\.(batch_norm|layer_norm|group_norm|instance_norm|rms_norm|dropout)\(|"
                         r"nn\.(BatchNorm[123]d|LayerNorm|GroupNorm|InstanceNorm[123]d|RMSNorm|Dropout)\(|"
                         r"torch\.nn\.functional\.(batch_norm|layer_norm|group_norm|instance_norm|rms_norm|dropout)\(")
    for path in (ROOT / "normkit").rglob("*.py"):
        if path.name == "check.py":
            continue
        lines = path.read_text().splitlines()
        exempt = {i for f in _checker_code(ast.parse("\n".join(lines)))
                  for i in range(f.lineno - 1, f.end_lineno)}
        hits = [ln for i, ln in enumerate(lines) if i not in exempt and pattern.search(ln)]
        assert not hits, f"{path.name} calls torch's own implementation: {hits}"


# ----------------------------------------------------------------------------- where code lives
LIBRARY = {"functional", "layers", "manual", "regularize", "optim", "distributed", "validate"}
INFRASTRUCTURE = {"data", "models", "train", "explore", "check", "overfitting"}
LESSONS = sorted((ROOT / "normkit" / "lessons").glob("l[0-9][0-9]_*.py"))


def _module_name(path):
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def _imports(path):
    """Every module a file imports (absolute dotted names), at any depth of the file."""
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}    # `from normkit import data`
    known = {_module_name(p) for p in (ROOT / "normkit").rglob("*.py")}
    return {m for m in found if m in known or m.split(".")[0] in ("tests", "notebooks", "benchmarks")}


def _kind(module):
    parts = module.split(".")
    if parts[:2] == ["normkit", "lessons"]:
        return "lessons" if len(parts) == 2 else "lesson"
    return "top" if module == "normkit" else ("library" if parts[1] in LIBRARY else "infrastructure")


# what each kind of module may import: library ← infrastructure ← lessons
ALLOWED = {"library": {"library", "top"}, "infrastructure": {"library", "infrastructure", "top"},
           "top": {"library", "infrastructure", "top"}, "lesson": {"library", "infrastructure", "top"},
           "lessons": {"library", "infrastructure", "top", "lessons", "lesson"}}


def test_every_normkit_module_is_library_infrastructure_or_a_lesson():
    for path in (ROOT / "normkit").glob("*.py"):
        assert path.stem in LIBRARY | INFRASTRUCTURE | {"__init__"}, f"normkit/{path.name}: which layer is it?"
    assert {p.name for p in (ROOT / "normkit" / "lessons").glob("*.py")} == {"__init__.py"} | {p.name for p in LESSONS}


@pytest.mark.parametrize("path", sorted((ROOT / "normkit").rglob("*.py")), ids=lambda p: _module_name(p))
def test_imports_point_one_way(path):
    """library ← infrastructure ← lessons; no lesson imports another; nothing imports tests, notebooks
    or benchmarks; only normkit.lessons itself may import a lesson."""
    kind = _kind(_module_name(path))
    for module in _imports(path) - {_module_name(path)}:
        assert module.split(".")[0] == "normkit", f"{path.name} imports {module}"
        assert _kind(module) in ALLOWED[kind], f"{_module_name(path)} ({kind}) imports {module} ({_kind(module)})"


def test_a_lesson_for_every_notebook_after_00():
    numbers = {p.name[:2] for p in NOTEBOOKS} - {"00"}
    assert {p.name[1:3] for p in LESSONS} == numbers
    for p in LESSONS:
        assert (ROOT / "notebooks" / f"{p.stem[1:]}.ipynb").exists(), f"{p.name} is not named after its notebook"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_imports_its_own_lesson_only(path):
    code = "\n".join(_text(c) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code")
    lessons = set(re.findall(r"\bl(\d\d)_\w+", code))
    expected = set() if path.name.startswith("00") else {path.name[:2]}
    assert lessons == expected, f"{path.name} uses lessons {sorted(lessons)}, expected {sorted(expected)}"
    if expected:
        assert f"from normkit.lessons import l{path.stem} as lesson" in code


def test_output_checks_are_masked_per_cell_not_per_notebook(nb):
    """Cells whose output varies by machine carry the `nbval-ignore-output` tag (invisible on slides);
    their claims are test_claim_* tests. Nothing is skipped, and every notebook keeps compared output."""
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    for c in code:
        assert "NBVAL" not in _text(c), "use the cell tag nbval-ignore-output, not a comment on the slide"
        assert not set(c["metadata"].get("tags", [])) & {"nbval-skip", "nbval-check-output"}
    compared = [c for c in code if c.get("outputs") and "nbval-ignore-output" not in c["metadata"].get("tags", [])]
    assert compared, "every output of the notebook is masked"
