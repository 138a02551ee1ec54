#!/usr/bin/env bash
# Install the normkit course into one Python environment: the one whose interpreter is $PYTHON
# (default `python3` on PATH: a docker-stacks image's /opt/conda, TLJH's /opt/tljh/user, a venv).
# Every recipe calls this script and nothing else installs anything:
#   binder/postBuild              (after repo2docker's own `pip install -r binder/requirements.txt`)
#   hub/Dockerfile                (Zero to JupyterHub single-user image)
#   sudo PYTHON=/opt/tljh/user/bin/python3 bash hub/install.sh   (The Littlest JupyterHub; hub/README.md)
#   tests/test_hub.py             (a clean venv, then a server and a notebook through it)
#
#   hub/install.sh [STEP ...]     STEP: requirements, package, config, check (default: all four)
#
#   requirements  binder/requirements.txt (= requirements.txt + PyTorch's CPU index + nbgitpuller)
#   package       normkit itself, built from a temporary copy (no build/ or *.egg-info in the tree)
#   config        <env>/etc/jupyter/jupyter_server_config.json (merged, not overwritten): kernels that
#                 no tab is connected to are shut down after 15 idle minutes (a closed tab's kernel
#                 holds its memory until then); the course's custom.css (slides_assets/lab: live decks
#                 hide code unless a cell is tagged show-code), copied to <env>/share/normkit/lab;
#                 the start page when NORMKIT_DEFAULT_URL is set
#   check         fails the build unless torch is the CPU build and the widget, ipympl and slideshow
#                 front ends are enabled; prints what `pip check` finds
#
# Environment:
#   PYTHON              interpreter of the target environment (default: python3)
#   TORCH_INDEX_URL     replaces the index line of binder/requirements.txt: a mirror of PyTorch's CPU
#                       index, or "" to use pip's own configuration only (find-links to a local wheel
#                       store, as on the project's CI machines: tests/test_hub.py sets it so)
#   NORMKIT_DEFAULT_URL the page a new server opens, e.g. /lab/tree/notebooks/00_start_here.ipynb
#                       (binder/postBuild sets it; a hub passes its own default URL, which wins)
#   PIP_*               pip's own variables apply (the Dockerfile sets PIP_NO_CACHE_DIR=1)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python3}
STEPS=("$@")
[[ ${#STEPS[@]} -gt 0 ]] || STEPS=(requirements package config check)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

say() { printf '[normkit install] %s\n' "$*"; }

step_requirements() {
    local req="$ROOT/binder/requirements.txt" index=()
    if [[ -n "${TORCH_INDEX_URL+set}" ]]; then
        # the same file without its index line; its `-r ../requirements.txt` made absolute
        sed -E -e '/^[[:space:]]*--(extra-)?index-url/d' -e "s#^-r \.\./#-r $ROOT/#" "$req" >"$WORK/requirements.txt"
        req="$WORK/requirements.txt"
        [[ -z "$TORCH_INDEX_URL" ]] || index=(--extra-index-url "$TORCH_INDEX_URL")
        say "torch index: ${TORCH_INDEX_URL:-none, pip configuration only (TORCH_INDEX_URL is empty)}"
    fi
    say "pip install -r binder/requirements.txt into $("$PYTHON" -c 'import sys; print(sys.prefix)')"
    "$PYTHON" -m pip install ${index[@]+"${index[@]}"} -r "$req"
}

step_package() {
    mkdir "$WORK/src"
    cp -r "$ROOT/pyproject.toml" "$ROOT/README.md" "$ROOT/normkit" "$WORK/src/"
    find "$WORK/src" -name __pycache__ -prune -exec rm -rf {} +
    say "pip install normkit (no dependencies: binder/requirements.txt pins them)"
    "$PYTHON" -m pip install --no-deps "$WORK/src"
}

step_config() {
    NORMKIT_DEFAULT_URL=${NORMKIT_DEFAULT_URL:-} NORMKIT_LAB_CSS="$ROOT/slides_assets/lab/custom.css" \
        "$PYTHON" - <<'EOF'
import json, os, shutil, sys
from pathlib import Path

path = Path(sys.prefix, "etc", "jupyter", "jupyter_server_config.json")
config = json.loads(path.read_text()) if path.exists() else {}
# Only kernels without a connected tab (closed tabs, a laptop gone to sleep) are culled: an open
# notebook keeps its kernel and its sliders however long the student listens to the lecture.
config.setdefault("MappingKernelManager", {}).update(
    cull_idle_timeout=900, cull_interval=300, cull_connected=False, cull_busy=False)
css = Path(os.environ["NORMKIT_LAB_CSS"])
if css.exists():  # served as /custom/custom.css, as `make lab` does with slides_assets/lab
    static = Path(sys.prefix, "share", "normkit", "lab")
    static.mkdir(parents=True, exist_ok=True)
    shutil.copy(css, static / "custom.css")
    config.setdefault("LabApp", {})["custom_css"] = True
    # ServerApp.static_custom_path is not configurable (jupyter_server 2 ignores it with a warning);
    # tornado_settings override the web app's settings, its static_custom_path included.
    config.setdefault("ServerApp", {}).setdefault("tornado_settings", {})["static_custom_path"] = [str(static)]
url = os.environ["NORMKIT_DEFAULT_URL"]
if url:  # `jupyter server`, `jupyter lab` and `jupyter notebook` each read their own trait
    for app in ("ServerApp", "LabApp", "JupyterNotebookApp"):
        config.setdefault(app, {})["default_url"] = url
path.parent.mkdir(parents=True, exist_ok=True)
path.write_text(json.dumps(config, indent=2) + "\n")
print(f"[normkit install] wrote {path}")
EOF
}

step_check() {
    # -I: the installed normkit, not a source tree in the current directory
    "$PYTHON" -I - <<'EOF'
import torch, normkit
assert torch.version.cuda is None, (
    f"torch {torch.__version__} is a CUDA build: binder/requirements.txt's CPU index line was not used")
print(f"[normkit install] normkit {normkit.__version__} from {normkit.__file__}, torch {torch.__version__} (CPU)")
EOF
    local listing
    listing=$("$PYTHON" -m jupyter labextension list 2>&1 | sed 's/\x1b\[[0-9;]*m//g')
    for ext in @jupyter-widgets/jupyterlab-manager jupyter-matplotlib jupyterlab-slideshow; do
        grep -q -E "^[[:space:]]*$ext v[^ ]+ enabled OK" <<<"$listing" \
            || { printf '%s\n' "$listing"; say "front end $ext is not enabled"; exit 1; }
    done
    say "front ends enabled: widgets, ipympl, slideshow"
    # A warning only: a base image's own packages may disagree among themselves (tests/test_hub.py
    # requires a clean pip check in a fresh venv, where any conflict is the requirements' own).
    "$PYTHON" -m pip check || say "WARNING: pip check found the conflicts above"
}

for step in "${STEPS[@]}"; do
    case "$step" in
        requirements | package | config | check) "step_$step" ;;
        *) say "unknown step '$step' (requirements, package, config, check)"; exit 2 ;;
    esac
done
