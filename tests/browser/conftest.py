"""Fixtures for the real-browser tests: one JupyterLab server and one chromium per pytest worker.

Skipped, with the reason in the summary, only when no chromium is installed (.ci/run installs it).
"""
import os

import pytest

from . import labdriver

LAB_CONFIG = labdriver.ROOT / "slides_assets" / "lab"      # what `make lab` puts on JUPYTER_CONFIG_PATH


@pytest.fixture(scope="session")
def chromium():
    if labdriver.chromium_path() is None:
        pytest.skip("browser tests need chromium: apt-get install -y chromium "
                    "(or NORMKIT_CHROMIUM=/path/to/chrome)")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = labdriver.launch(p)
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def lab(chromium, tmp_path_factory):
    """JupyterLab on a temporary copy of notebooks/ (the repository's files are never touched),
    configured as `make lab` does: slides_assets/lab on JUPYTER_CONFIG_PATH (its custom.css)."""
    saved = os.environ.get("JUPYTER_CONFIG_PATH")
    os.environ["JUPYTER_CONFIG_PATH"] = os.pathsep.join(filter(None, [str(LAB_CONFIG), saved]))
    try:
        with labdriver.jupyterlab(tmp_path_factory.mktemp("lab")) as server:
            yield server
    finally:
        if saved is None:
            os.environ.pop("JUPYTER_CONFIG_PATH", None)
        else:
            os.environ["JUPYTER_CONFIG_PATH"] = saved


@pytest.fixture(scope="session")
def browser_context(chromium):
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    yield context
    context.close()


@pytest.fixture
def page(browser_context):
    page = browser_context.new_page()
    yield page
    page.close()
