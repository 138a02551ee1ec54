"""`pip install .` (not editable: the JupyterHub path in README) installs the whole package, lessons included."""
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_pip_install_dot_installs_every_module(tmp_path):
    # Build from a copy: an in-tree build would write build/ and *.egg-info into the repository.
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "normkit", src / "normkit", ignore=shutil.ignore_patterns("__pycache__"))
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(site), str(src)], check=True)
    modules = sorted(".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
                     for p in (ROOT / "normkit").rglob("*.py"))
    assert "normkit.lessons" in modules and len(modules) > 15
    # Import each from the installed copy only (PYTHONPATH precedes the editable install; cwd is elsewhere).
    code = ("import importlib, sys\n"
            f"for name in {modules!r}:\n"
            "    m = importlib.import_module(name)\n"
            f"    assert m.__file__.startswith({str(site)!r}), (name, m.__file__)\n"
            "print(len(sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={"PYTHONPATH": str(site)},
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
