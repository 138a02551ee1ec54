"""The answer keys and the nbgrader release (`make release`, instructor/release.py).

Fast, no kernel: every notebook has an answer key; every exercise with a checker and every
Questions cell is answered; the student version that `nbgrader generate_assignment` gives keeps
notebooks/ exactly and holds no solution, no hidden test and no model answer.

End to end, one class per notebook (so `pytest -n 2 --dist loadscope` spreads them over both
workers): in a temp course, `nbgrader autograde` of the model answers (the source notebook handed
in as a student's work) gives full marks on every test and prints no ✗; the untouched release
scores zero on every test and runs to the end without an error outside its test cells. The first
class goes through the exchange as on a Hub (release, fetch, submit, collect), then feedback and
export: the commands of INSTRUCTORS.md, *Build and grade a release*.
"""
import re
import shutil
import sys
from pathlib import Path

import nbformat
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "instructor"))
import edition as ed  # noqa: E402
import release  # noqa: E402

NOTEBOOKS = sorted(ed.NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
KEYED = [p for p in NOTEBOOKS if ed.answers_path(p).exists()]
STEM = [p.stem for p in KEYED]


def test_every_notebook_has_an_answer_key():
    missing = [p.stem for p in NOTEBOOKS if p not in KEYED]
    assert not missing, f"no answer key in instructor/answers/ for: {', '.join(missing)}"


@pytest.mark.parametrize("notebook", KEYED, ids=STEM)
def test_stubbed_answers_are_the_student_cells_and_every_check_is_answered(notebook):
    _, blocks = ed.edition(notebook)              # raises if a stubbed answer is not the student's cell
    missing = release.unanswered_checks(nbformat.read(notebook, as_version=4), blocks)
    assert not missing, f"{notebook.name}: check cells {missing} have no model answer in the key"


@pytest.mark.parametrize("notebook", KEYED, ids=STEM)
def test_the_questions_are_answered_numbered_like_the_questions(notebook):
    nb = nbformat.read(notebook, as_version=4)
    qid = release.questions_cell(nb)
    assert qid, f"{notebook.name}: no '## Questions' cell"
    answers = [b for b in ed.parse(ed.answers_path(notebook).read_text(encoding="utf-8")) if b.cell_id == qid]
    assert len(answers) == 1, f"{notebook.name}: expected one '<!-- answer {qid} -->' block"
    asked = len(re.findall(r"^\d+\.\s", next(c for c in nb.cells if c.get("id") == qid).source, re.M))
    assert release.points(answers[0].source) == asked, "answer each question under its own number"


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """A course of every keyed notebook, built without executing anything."""
    root = tmp_path_factory.mktemp("course")
    release.build(root, KEYED, executed=False, log=lambda *a: None)
    return root


def _text(cells):
    return "\n".join(c.source for c in cells)


def _cells(cells, kind):
    return [(c.get("id"), c.source) for c in cells if c.cell_type == kind]


@pytest.mark.parametrize("notebook", KEYED, ids=STEM)
def test_the_student_version_is_notebooks_and_holds_no_answer(course, notebook):
    student = nbformat.read(notebook, as_version=4)
    out = nbformat.read(course / "release" / notebook.stem / notebook.name, as_version=4)
    grading = {c.get("id"): c.metadata.get("nbgrader", {}) for c in out.cells}
    text = _text(out.cells)
    for marker in ("BEGIN SOLUTION", "END SOLUTION", "HIDDEN TESTS"):
        assert marker not in text, f"{notebook.name}: {marker!r} in the student version"
    tests = [c.source for c in out.cells if c.cell_type == "code" and grading[c.get("id")].get("grade")]
    assert all(t.startswith("# autograded") and "\n" not in t for t in tests), "a test cell shows more than its title"
    ungraded = [c for c in out.cells if not grading[c.get("id")].get("grade")]   # no test, no written answer
    for kind in ("code", "markdown"):
        assert _cells(ungraded, kind) == _cells(student.cells, kind), f"{notebook.name}: {kind} cells differ"
    assert all(c.metadata.get("editable") is False for c in out.cells if grading[c.get("id")].get("locked"))
    known = _text(student.cells)
    for b in ed.parse(ed.answers_path(notebook).read_text(encoding="utf-8")):
        lines = b.source.splitlines() if b.kind == "answer" else [     # written answers, solution regions
            x for m in ed._REGION.finditer(b.source) for x in m.group(0).splitlines()[1:-1]]
        leaked = [x.strip() for x in lines if len(x.strip()) >= 20 and x.strip() not in known and x.strip() in text]
        assert not leaked, f"{notebook.name}: model answer text in the student version: {leaked[:3]}"


# ------------------------------------------------------------------------------ end to end
def _outputs(cell):
    for o in cell.get("outputs", []):
        if o.output_type == "stream":
            yield o, o.text
        elif o.output_type == "error":
            yield o, f"{o.ename}: {o.evalue}"
        else:
            yield o, o.get("data", {}).get("text/plain", "")


class _Autograde:
    notebook = None                        # a Path, set by each generated subclass
    via_exchange = False                   # the first class: release, fetch, submit, collect as on a Hub

    @pytest.fixture(scope="class")
    @classmethod
    def graded(cls, tmp_path_factory):
        """The course after `nbgrader autograde`: student 'model' handed in the source notebook,
        'untouched' the release as it is. Returns (course, {student: {test: (score, max)}})."""
        name, stem = cls.notebook.name, cls.notebook.stem
        course = tmp_path_factory.mktemp(f"course-{stem}")
        release.build(course, [cls.notebook], executed=False, log=lambda *a: None)
        model = "model"
        if cls.via_exchange:             # the commands of INSTRUCTORS.md, with a temp exchange
            exchange, home = course.parent / f"exchange-{stem}", course.parent / f"home-{stem}"
            exchange.mkdir(mode=0o777)
            home.mkdir()
            where = [f"--Exchange.root={exchange}"]
            release.nbgrader(course, "release_assignment", stem, *where)
            release.nbgrader(home, "fetch_assignment", stem, "--course", release.COURSE_ID, *where)
            shutil.copy(course / "source" / stem / name, home / stem / name)      # the student's work
            release.nbgrader(home, "submit", stem, "--course", release.COURSE_ID, *where)
            release.nbgrader(course, "collect", stem, *where)
            model = next(p.name for p in (course / "submitted").iterdir())     # the user's name
        else:
            (course / "submitted" / model / stem).mkdir(parents=True)
            shutil.copy(course / "source" / stem / name, course / "submitted" / model / stem / name)
        (course / "submitted" / "untouched" / stem).mkdir(parents=True)
        shutil.copy(course / "release" / stem / name, course / "submitted" / "untouched" / stem / name)
        release.nbgrader(course, "autograde", stem)
        from nbgrader.api import Gradebook
        scores = {}
        with Gradebook(f"sqlite:///{course / 'gradebook.db'}", release.COURSE_ID) as gb:
            for student in (model, "untouched"):
                sub = gb.find_submission_notebook(stem, stem, student)
                scores[student] = {g.name: (g.auto_score, g.max_score) for g in sub.grades if g.cell_type == "code"}
        return course, {"model": scores[model], "untouched": scores["untouched"]}, model

    def _autograded(self, course, student):
        stem = self.notebook.stem
        return nbformat.read(course / "autograded" / student / stem / self.notebook.name, as_version=4)

    def test_the_model_answers_score_full_marks_and_every_checker_is_green(self, graded):
        course, scores, model = graded
        expected = [c.get("id") for c in release.source_notebook(self.notebook).cells
                    if c.metadata.get("nbgrader", {}).get("grade") and c.cell_type == "code"]
        assert sorted(scores["model"]) == sorted(expected)
        lost = {k: v for k, v in scores["model"].items() if v[0] != v[1]}
        assert not lost, f"model answers lost points on {lost}"
        problems = [(c.get("id"), text.strip()[:200]) for c in self._autograded(course, model).cells
                    for o, text in _outputs(c) if "✗" in text or o.output_type == "error"]
        assert not problems, f"the model answers print ✗ or raise: {problems}"

    def test_the_untouched_release_scores_zero_and_runs_to_the_end(self, graded):
        course, scores, _ = graded
        assert {k: v[0] for k, v in scores["untouched"].items()} == {k: 0 for k in scores["untouched"]}
        tests = {k for k in scores["untouched"]}
        errors = [(c.get("id"), text.strip()[:200]) for c in self._autograded(course, "untouched").cells
                  if c.get("id") not in tests for o, text in _outputs(c) if o.output_type == "error"]
        assert not errors, f"Run All of the student version stops with an error: {errors}"


def _feedback_and_export(self, graded):
    """`nbgrader generate_feedback` and `export`, once (in the class that used the exchange)."""
    course, scores, model = graded
    stem = self.notebook.stem
    release.nbgrader(course, "generate_feedback", stem)
    feedback = course / "feedback" / model / stem / f"{stem}.html"
    assert feedback.exists() and "✓" in feedback.read_text(encoding="utf-8")
    release.nbgrader(course, "export", "--to", "grades.csv")
    rows = (course / "grades.csv").read_text(encoding="utf-8").splitlines()
    assert len(rows) == 3 and all(stem in r for r in rows[1:])


for _i, _path in enumerate(KEYED):
    _name = "TestAutograde_" + _path.stem
    _extra = {"via_exchange": True, "test_feedback_and_export": _feedback_and_export} if _i == 0 else {}
    globals()[_name] = type(_name, (_Autograde,), {"notebook": _path, **_extra})
