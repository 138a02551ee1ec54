"""Fixtures for the real-browser tests: one JupyterLab server and one chromium per pytest worker.

Skipped, with the reason in the summary, only when no chromium is installed (.ci/run installs it).
"""
import pytest

from . import labdriver


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
    """JupyterLab on a temporary copy of notebooks/ (the repository's files are never touched)."""
    with labdriver.jupyterlab(tmp_path_factory.mktemp("lab")) as server:
        yield server


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
