"""Browser tests: the real site in headless Chromium (Debian's package), driven by Playwright.

Playwright's own browser download is never used: the tests launch /usr/bin/chromium and are skipped, with the reason,
where it (or the playwright package) is missing. CI installs it (.ci/run).

Every test gets a fresh browser context (no cookies shared between tests) on pytest-django's live server, which
serves static files itself and, through tests.browser.urls, the test's uploaded media.
Screenshots of each step go to the test's tmp dir; SAVE_SCREENSHOTS=docs/screenshots also writes the README's there.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",  # CI runs as root, where Chromium refuses to start sandboxed
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DESKTOP = {"width": 1280, "height": 800}
TIMEOUT_MS = 30_000  # a photo search on a cold model takes a few seconds on 2 CPU cores
BROWSER_DIR = Path(__file__).resolve().parent

# Friendlier names than the catalog fixture's "Title of RUN-3": the screenshots of these tests go into the README.
TITLES = {
    "CHAIR-1": "Blue velvet armchair",
    "CHAIR-2": "Black shell chair",
    "RUN-1": "Trail running shoe",
    "RUN-3": "Road running shoe",
    "TEE-1": "Turquoise cotton T-shirt",
}


def _unavailable() -> str:
    if importlib.util.find_spec("playwright") is None:
        return "the playwright package is not installed (pip install -r requirements-dev.txt)"
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    return ""


def pytest_configure(config):
    config.addinivalue_line("markers", "browser: drives the site in headless Chromium (skipped without it)")


def pytest_collection_modifyitems(config, items):
    # Skip before any fixture runs, so a missing browser does not first embed a catalog for nothing.
    reason = _unavailable()
    if reason:
        for item in items:
            if BROWSER_DIR in Path(item.path).parents:
                item.add_marker(pytest.mark.skip(reason=f"browser tests need Chromium: {reason}"))


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an asyncio loop running in this thread while it is started, and Django then
    # refuses ORM calls from the test ("cannot call this from an async context") although they are synchronous.
    # Both last only for one test module, so that no other test runs beside that loop or sees the variable
    # (subprocesses would inherit it, and `check --deploy` rightly fails on it).
    with pytest.MonkeyPatch.context() as patch, sync_playwright() as playwright:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def site(live_server, settings):
    """The live server's base URL, with uploaded media served."""
    settings.ROOT_URLCONF = "tests.browser.urls"
    return live_server.url


def _new_page(browser, **context_options):
    # Reduced motion: the site then jumps to anchors instead of scrolling smoothly, so screenshots are not mid-scroll.
    context = browser.new_context(**{"reduced_motion": "reduce", **context_options})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    # What the site's Content-Security-Policy refused (a script, a style, a picture or a request it needs).
    page.on("console", lambda message: errors.append(message.text)
            if message.type == "error" and "Content Security Policy" in message.text else None)
    return context, page, errors


@pytest.fixture
def page(browser, site):
    """A desktop-sized page; fails the test if the page threw a JavaScript error or broke its own security policy."""
    context, page, errors = _new_page(browser, viewport=DESKTOP, base_url=site)
    yield page
    context.close()
    assert errors == [], f"JavaScript errors on the page: {errors}"


PHONE = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 1, "is_mobile": True, "has_touch": True}


@pytest.fixture
def phone_page(browser, site):
    """A phone-sized touch page (390x844, like an iPhone 13/14)."""
    context, page, errors = _new_page(browser, **PHONE, base_url=site)
    yield page
    context.close()
    assert errors == [], f"JavaScript errors on the page: {errors}"


@pytest.fixture
def smooth_phone_page(browser, site):
    """The phone page as most phones show it: scrolling smoothly (the other pages ask for reduced motion)."""
    context, page, errors = _new_page(browser, **PHONE, base_url=site, reduced_motion="no-preference")
    yield page
    context.close()
    assert errors == [], f"JavaScript errors on the page: {errors}"


@pytest.fixture
def screenshot(tmp_path):
    """screenshot(page, name) saves name.png in the test's tmp dir; with readme=True, also into $SAVE_SCREENSHOTS.

    `SAVE_SCREENSHOTS=docs/screenshots bin/lookalike test tests/browser` retakes the README's pictures.
    """
    keep = os.environ.get("SAVE_SCREENSHOTS")

    def take(page, name: str, *, full_page: bool = False, readme: bool = False) -> Path:
        path = tmp_path / f"{name}.png"
        page.screenshot(path=str(path), full_page=full_page, animations="disabled", caret="hide")
        if keep and readme:
            Path(keep).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, Path(keep) / path.name)
        return path

    return take


@pytest.fixture
def shop(catalog):
    """The embedded catalog fixture with shop-like titles; returns products by SKU."""
    from catalog.services import product_update

    for sku, product in catalog.items():
        catalog[sku] = product_update(product=product, title=TITLES[sku])
    return catalog
