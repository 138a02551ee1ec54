"""Project conventions that a reviewer would otherwise check by hand (DESIGN.md, "Notebooks")."""
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


def test_every_cell_has_a_slide_type(nb):
    missing = [i for i, c in enumerate(nb["cells"]) if "slide_type" not in c["metadata"].get("slideshow", {})]
    assert not missing, f"cells without slideshow.slide_type: {missing}"


def test_first_cell_states_the_learning_goal(nb):
    first = nb["cells"][0]
    assert first["cell_type"] == "markdown"
    assert "After this notebook you will be able to" in _text(first)


def test_ends_with_exercises_and_summary(nb):
    tail = "\n".join(_text(c) for c in nb["cells"][-4:] if c["cell_type"] == "markdown")
    assert re.search(r"^#+ .*Exercises", tail, re.M), "no Exercises heading near the end"
    assert re.search(r"^#+ .*Summary", tail, re.M), "no Summary heading near the end"


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


def test_normkit_does_not_call_the_torch_reference():
    pattern = re.compile(r"F\.(batch_norm|layer_norm|group_norm|instance_norm|rms_norm|dropout)\(|"
                         r"nn\.(BatchNorm[123]d|LayerNorm|GroupNorm|InstanceNorm[123]d|RMSNorm|Dropout)\(|"
                         r"torch\.nn\.functional\.(batch_norm|layer_norm|group_norm|instance_norm|rms_norm|dropout)\(")
    for path in (ROOT / "normkit").glob("*.py"):
        if path.name == "check.py":
            continue
        hits = [ln for ln in path.read_text().splitlines() if pattern.search(ln)]
        assert not hits, f"{path.name} calls torch's own implementation: {hits}"


def test_output_checks_are_masked_per_cell_not_per_notebook(nb):
    """Cells whose output varies by machine carry the `nbval-ignore-output` tag (invisible on slides);
    their claims are test_claim_* tests. Nothing is skipped, and every notebook keeps compared output."""
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    for c in code:
        assert "NBVAL" not in _text(c), "use the cell tag nbval-ignore-output, not a comment on the slide"
        assert not set(c["metadata"].get("tags", [])) & {"nbval-skip", "nbval-check-output"}
    compared = [c for c in code if c.get("outputs") and "nbval-ignore-output" not in c["metadata"].get("tags", [])]
    assert compared, "every output of the notebook is masked"
