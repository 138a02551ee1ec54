"""`make release`: an nbgrader course in course/, one assignment per notebook that has an answer key.

    course/nbgrader_config.py                 ClearSolutions.code_stub = edition.STUB: the student
                                              version of an exercise cell is the cell of notebooks/
    course/source/NN_name/NN_name.ipynb       the instructor edition with nbgrader's cell metadata
    course/release/NN_name/NN_name.ipynb      the student version (`nbgrader generate_assignment`)
    course/instructor/NN_name.ipynb           the instructor edition, executed, for reading

Grading metadata of the source notebook:
- an exercise cell of the answer key is an autograded answer (its BEGIN/END SOLUTION region);
- after every exercise cell, one locked test cell per graded check (a top-level line of the cell
  that calls `lesson.check_…` or `nk.check.compare`), `assert <that line>` between BEGIN/END
  HIDDEN TESTS, 1 point; a cell with a `lesson.check_…` line that the key leaves as it is (the
  capstone's `lesson.check_table(table)`) is graded the same way: its answers are the cells above;
- a written answer is a manually graded markdown answer, 1 point per question or exercise it
  answers (its `1.` items or its `**Exercise N…**` paragraphs; at least 1);
- every other markdown cell is read-only (locked); the other code cells stay editable.

Rebuilding keeps course/submitted, autograded, feedback and gradebook.db (the grading state).
"""
import argparse
import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parent))
import edition as ed  # noqa: E402

COURSE = ed.ROOT / "course"
COURSE_ID = "normkit"
TEXT_STUB = "YOUR ANSWER HERE"                    # nbgrader's default, replaces a written answer
HIDDEN = "### BEGIN HIDDEN TESTS\nassert {check}\n### END HIDDEN TESTS"
TIMEOUT = 300                                     # s per cell when autograding (a loaded machine)
CONFIG = f'''\
# Written by `make release` (instructor/release.py): run nbgrader from this directory.
c = get_config()  # noqa: F821
c.CourseDirectory.course_id = "{COURSE_ID}"
c.ClearSolutions.code_stub = {{"python": {ed.STUB!r}}}   # the student's cell = notebooks/
c.ClearSolutions.text_stub = {TEXT_STUB!r}
c.Execute.timeout = {TIMEOUT}
'''


def checks(source):
    """The graded checks of a cell: its top-level `lesson.check_…(…)` and `nk.check.compare(…)` calls."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    found = []
    for stmt in tree.body:
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call):
            name = ast.unparse(stmt.value.func)
            if name.startswith("lesson.check_") or name == "nk.check.compare":
                found.append(ast.get_source_segment(source, stmt))
    return found


def is_check_cell(cell):
    """An exercise's check: a code cell with a top-level `lesson.check_…` line (convention 3)."""
    return cell.cell_type == "code" and any(c.startswith("lesson.check_") for c in checks(cell.source))


def unanswered_checks(nb, blocks):
    """Check cells whose exercise has no model answer: neither the cell nor a code cell after the
    previous check cell is replaced by the answer key."""
    answered, missing, since = {b.cell_id for b in blocks if b.kind == "cell"}, [], False
    for cell in nb.cells:
        since = since or cell.get("id") in answered
        if is_check_cell(cell):
            if not since:
                missing.append(cell.get("id"))
            since = False
    return missing


def questions_cell(nb):
    """The id of the `## Questions` cell, or None."""
    return next((c.get("id") for c in nb.cells if c.cell_type == "markdown"
                 and c.source.lstrip().startswith("## Questions")), None)


def points(answer):
    """1 point per question or exercise a written answer answers (its `1.` items or `**Exercise N`)."""
    items = re.findall(r"^(?:\d+\.\s|\*\*(?:Exercise|Question)s?\s+\d)", answer, re.M)
    return max(1, len(items))


def _grading(cell, grade_id, *, grade=False, solution=False, locked=False, points=None):
    meta = {"grade": grade, "grade_id": grade_id, "locked": locked, "schema_version": 3,
            "solution": solution, "task": False}
    if grade:
        meta["points"] = points
    cell.metadata["nbgrader"] = meta
    return cell


def source_notebook(notebook, answers=None):
    """The nbgrader source notebook: the instructor edition with grading metadata and test cells."""
    nb, blocks = ed.edition(notebook, answers)
    code = {b.cell_id for b in blocks if b.kind == "cell"}
    written = {f"answer-{b.cell_id}" for b in blocks if b.kind == "answer"}
    cells, qid = [], questions_cell(nb)
    for cell in nb.cells:
        cid = cell.get("id")
        cells.append(cell)
        if cid in code:
            _grading(cell, cid, solution=True)
        elif cid in written:
            n = points(cell.source)
            what = "the questions above" if cid == f"answer-{qid}" else "the exercise above"
            cell.source = (f"**Your answer to {what}** (graded by hand, {n} point{'s' * (n > 1)}):\n\n"
                           f"{ed.BEGIN}\n{cell.source}\n{ed.END}")
            _grading(cell, cid, grade=True, solution=True, points=n)
        elif cell.cell_type == "markdown":
            _grading(cell, f"text-{cid}", locked=True)
        if cid in code or (cell.cell_type == "code" and is_check_cell(cell)):
            for k, check in enumerate(checks(ed.stubbed(cell.source)), 1):
                test = nbformat.v4.new_code_cell(
                    f"# autograded, 1 point: {check.splitlines()[0]}\n" + HIDDEN.format(check=check),
                    id=f"{cid}-test{k}")
                test.metadata["slideshow"] = {"slide_type": "skip"}
                cells.append(_grading(test, f"{cid}-test{k}", grade=True, locked=True, points=1))
    nb.cells = cells
    return nb


def execute(nb, cwd=ed.NOTEBOOKS, timeout=600):
    """Run a notebook in a fresh kernel (cwd: notebooks/, so its relative paths hold); return it."""
    from nbclient import NotebookClient
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}   # would strip the figures
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(cwd)}}).execute(env=env)
    return nb


def nbgrader(course, *args):
    """Run `nbgrader ARGS` in the course directory (its nbgrader_config.py applies)."""
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"   # it runs `alembic`
    cmd = [sys.executable, "-m", "nbgrader", *args]
    done = subprocess.run(cmd, cwd=course, env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd[2:])} failed in {course}:\n{done.stdout}\n{done.stderr}")
    return done


def build(course=COURSE, notebooks=None, answers=ed.ANSWERS, executed=True, log=print):
    """Write the course (see the module docstring) for `notebooks` (default: those with a key)."""
    course, answers = Path(course), Path(answers)
    notebooks = [Path(p) for p in notebooks] if notebooks else sorted(
        p for p in ed.NOTEBOOKS.glob("[0-9][0-9]_*.ipynb") if (answers / f"{p.stem}.md").exists())
    course.mkdir(parents=True, exist_ok=True)
    (course / "nbgrader_config.py").write_text(CONFIG, encoding="utf-8")
    for path in notebooks:
        nb = source_notebook(path, answers / f"{path.stem}.md")
        folder = course / "source" / path.stem
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        nbformat.write(nb, folder / path.name)
        log(f"wrote {folder / path.name}")
        if executed:
            edition, _ = ed.edition(path, answers / f"{path.stem}.md")
            (course / "instructor").mkdir(exist_ok=True)
            nbformat.write(execute(edition), course / "instructor" / path.name)
            red = [c.get("id") for c in edition.cells for o in c.get("outputs", []) if "✗" in o.get("text", "")]
            log(f"wrote {course / 'instructor' / path.name} (executed)" + (f"; ✗ in cells {red}" if red else ""))
    nbgrader(course, "generate_assignment", "*", "--force")     # one process: it takes seconds to start
    for path in notebooks:
        log(f"wrote {course / 'release' / path.stem / path.name}")
    return notebooks


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: every notebook with an answer key")
    parser.add_argument("--course", type=Path, default=COURSE)
    parser.add_argument("--no-execute", dest="executed", action="store_false",
                        help="skip running the instructor editions (course/instructor/)")
    args = parser.parse_args(argv)
    done = {p.stem for p in build(args.course, args.notebooks, executed=args.executed)}
    missing = [p.stem for p in sorted(ed.NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")) if p.stem not in done]
    if missing and not args.notebooks:
        print(f"no answer key, no assignment: {', '.join(missing)}")


if __name__ == "__main__":
    main()
