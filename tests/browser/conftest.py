"""Headless Chromium (Debian's /usr/bin/chromium) driven by Playwright's own driver; no browser downloads."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")  # not session: Playwright's sync API holds an event loop open while it
def browser() -> Iterator[Browser]:  # runs, which would break asyncio.run() in every later test module
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `bash scripts/ensure-chromium.sh` as root (make test does)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS, headless=True)
        yield launched
        launched.close()


class Problems:
    """JavaScript exceptions and CSP violations seen by a page; the test fails on any."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def console(self, message: ConsoleMessage) -> None:
        if message.type == "error" and "Content Security Policy" in message.text:
            self.seen.append(message.text)

    def error(self, error: Exception) -> None:
        self.seen.append(f"{type(error).__name__}: {error}")


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh browser context (no cookies) per test."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(15_000)
    opened = context.new_page()
    problems = Problems()
    opened.on("console", problems.console)
    opened.on("pageerror", problems.error)
    yield opened
    context.close()
    assert not problems.seen, problems.seen


def login(page: Page, base_url: str, token: str, *, landing: str = "/dashboard/logs") -> None:
    """Sign in through the form, starting from a page so that the redirect round trip is exercised."""
    page.goto(f"{base_url}{landing}")
    page.wait_for_url("**/dashboard/login?**")
    page.fill("#token", token)
    page.click("#login-form button[type=submit]")
    page.wait_for_url(f"**{landing}*")
    page.wait_for_selector("body[data-loaded]")
