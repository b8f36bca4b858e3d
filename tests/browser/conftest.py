"""Fixtures for the browser tests: Debian's Chromium, headless, driven by Playwright.

The browser is the system package (scripts/install-test-deps.sh installs it); nothing
is ever downloaded, so a missing binary is a set-up failure, not a skip."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import Browser, BrowserContext, Playwright, sync_playwright

CHROMIUM = os.environ.get("PUSHUP_TEST_CHROMIUM", "/usr/bin/chromium")


# Package-scoped: Playwright's driver and its event loop end with these tests, before
# the asyncio tests of other packages run.
@pytest.fixture(scope="package")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="package")
def browser(playwright: Playwright) -> Iterator[Browser]:
    if not shutil.which(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: run scripts/install-test-deps.sh")
    browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
    yield browser
    browser.close()


ContextFactory = Callable[[], BrowserContext]


@pytest.fixture
def new_context(browser: Browser) -> Iterator[ContextFactory]:
    """Open browser contexts (separate profiles: storage, locks, connections); all are
    closed after the test, which fails if a page threw an uncaught error."""
    opened: list[BrowserContext] = []
    errors: list[str] = []

    def open_context() -> BrowserContext:
        context = browser.new_context()
        context.set_default_timeout(15_000)
        context.on("weberror", lambda error: errors.append(str(error.error)))
        opened.append(context)
        return context

    yield open_context
    for context in opened:
        context.close()
    assert not errors, f"uncaught errors in pages: {errors}"
