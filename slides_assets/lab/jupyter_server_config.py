"""JupyterLab settings for the course: `make lab` puts this folder on JUPYTER_CONFIG_PATH.

Loads custom.css (beside this file): while jupyterlab-slideshow presents a notebook, code cells show
their outputs only unless tagged `show-code`. A class server (JupyterHub, Binder) does the same by
putting this folder on JUPYTER_CONFIG_PATH, or by copying these two lines, with the absolute path,
into the image's jupyter_server_config.py.
"""
from pathlib import Path

from jupyter_core.paths import jupyter_config_dir

c = get_config()  # noqa: F821  (defined by traitlets when it loads a config file)
c.LabApp.custom_css = True
# /custom/custom.css is looked up in the web app's `static_custom_path` (not a config option itself;
# by default ~/.jupyter/custom): tornado_settings override it, keeping the user's folder second.
c.ServerApp.tornado_settings = {"static_custom_path": [str(Path(__file__).resolve().parent),
                                                       str(Path(jupyter_config_dir()) / "custom")]}
