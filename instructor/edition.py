"""The instructor edition: a student notebook with the model answers of instructor/answers/ put in.

instructor/answers/NN_name.md is the answer key of notebooks/NN_name.ipynb, readable on its own.
Two kinds of block, each introduced by an HTML comment naming a cell id of the notebook:

    <!-- cell c186d524 -->          replaces code cell c186d524 with the fenced python block below it.
    ```python                       Its solution sits between `### BEGIN SOLUTION` and
    def f(x):                       `### END SOLUTION`; with each such region replaced by STUB
        ### BEGIN SOLUTION          (at the indentation of its BEGIN line) the block must give the
        return 2 * x                student's cell exactly: one student version, wherever it comes from.
        ### END SOLUTION
    lesson.check_f(f)
    ```

    <!-- answer 9e510004 -->        a written answer (markdown up to the next block), inserted as a
    1. ...                          new markdown cell after cell 9e510004: the Questions cell, or the
                                    cell of an exercise that is answered in words.

Text before the first block (a title, a note to instructors) is not part of the edition.
"""
import copy
import re
from dataclasses import dataclass
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
ANSWERS = Path(__file__).resolve().parent / "answers"

STUB = "...  # your code here"       # what a student sees where a solution was (nbgrader's code_stub)
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"

_BLOCK = re.compile(r"^<!--\s*(cell|answer)\s+(\S+)\s*-->\s*$", re.M)
_FENCE = re.compile(r"\A\s*```python\n(.*?)\n```\s*\Z", re.S)
_REGION = re.compile(rf"^([ \t]*){re.escape(BEGIN)}\n.*?^[ \t]*{re.escape(END)}$", re.M | re.S)


@dataclass
class Block:
    kind: str        # "cell" (a code cell's model answer) or "answer" (a written answer)
    cell_id: str     # the notebook cell it replaces ("cell") or follows ("answer")
    source: str      # python for "cell", markdown for "answer"


def answers_path(notebook):
    return ANSWERS / f"{Path(notebook).stem}.md"


def parse(text, name="answers"):
    """The blocks of an answer key, in order."""
    parts = _BLOCK.split(text)
    blocks = []
    for kind, cell_id, body in zip(parts[1::3], parts[2::3], parts[3::3]):
        if kind == "cell":
            fence = _FENCE.match(body)
            if not fence:
                raise ValueError(f"{name}: block 'cell {cell_id}' must be exactly one ```python fenced block")
            body = fence.group(1)
        blocks.append(Block(kind, cell_id, body.strip("\n")))
    return blocks


def stubbed(source):
    """The student's version of a model answer: every solution region replaced by STUB."""
    return _REGION.sub(lambda m: m.group(1) + STUB, source)


def edition(notebook, answers=None):
    """(instructor edition, blocks): the notebook with the answer key's blocks put in.

    Raises ValueError if a block names a cell the notebook lacks, if a model answer has no solution
    region, or if its stubbed version differs from the student's cell.
    """
    notebook = Path(notebook)
    answers = Path(answers) if answers else answers_path(notebook)
    nb = nbformat.read(notebook, as_version=4)
    blocks = parse(answers.read_text(encoding="utf-8"), answers.name)
    index = {c.get("id"): c for c in nb.cells}
    out = copy.deepcopy(nb)
    cells = {c.get("id"): c for c in out.cells}
    for b in blocks:
        if b.cell_id not in index:
            raise ValueError(f"{answers.name}: no cell {b.cell_id!r} in {notebook.name}")
        if b.kind == "cell":
            student = index[b.cell_id].source
            if BEGIN not in b.source:
                raise ValueError(f"{answers.name}: cell {b.cell_id} has no '{BEGIN}' region")
            if stubbed(b.source) != student:
                raise ValueError(f"{answers.name}: cell {b.cell_id} with its solutions stubbed is not the "
                                 f"student's cell.\n--- stubbed answer\n{stubbed(b.source)}\n--- student\n{student}")
            cells[b.cell_id].source = b.source
            cells[b.cell_id].outputs, cells[b.cell_id].execution_count = [], None
    for b in reversed([b for b in blocks if b.kind == "answer"]):
        at = next(i for i, c in enumerate(out.cells) if c.get("id") == b.cell_id)
        cell = nbformat.v4.new_markdown_cell(b.source, id=f"answer-{b.cell_id}")
        cell.metadata["slideshow"] = {"slide_type": "skip"}
        out.cells.insert(at + 1, cell)
    return out, blocks


def main(argv=None):
    import argparse
    parser = argparse.ArgumentParser(description="Write the instructor edition of notebooks (unexecuted).")
    parser.add_argument("notebooks", nargs="*", type=Path,
                        default=sorted(p for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb") if answers_path(p).exists()))
    parser.add_argument("--out", type=Path, default=ROOT / "course" / "instructor")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for path in args.notebooks:
        nb, _ = edition(path)
        nbformat.write(nb, args.out / path.name)
        print(f"wrote {args.out / path.name}")


if __name__ == "__main__":
    main()
