"""A real browser for the tests, the screenshots and the browser benchmark: Debian's chromium
driven by Playwright (PyPI ``playwright``; no browser download: ``executable_path`` names the
Debian one), headless, with autoplay allowed (the live view is a muted ``<video>``).

``chromium()`` opens one browser and one page and always closes them; the page's console errors
and uncaught exceptions are collected (``Browser.errors``) so a test can say there were none.

    with chromium(viewport=(390, 844)) as browser:
        browser.page.goto(url)
        ...
        assert browser.errors == []
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from playwright.sync_api import ConsoleMessage, Error, Page, sync_playwright

CHROMIUM = "/usr/bin/chromium"
ARGS = ("--no-sandbox", "--autoplay-policy=no-user-gesture-required")
DEFAULT_TIMEOUT_MS = 15_000  # of each Playwright action (a loaded 2-core machine is slow)


@dataclass
class Browser:
    page: Page
    errors: list[str] = field(default_factory=list)  # console errors and uncaught exceptions
    messages: list[str] = field(default_factory=list)  # every console line, for failure reports

    def console(self, message: ConsoleMessage) -> None:
        line = f"{message.type}: {message.text}"
        location = message.location
        if location and location.get("url"):
            line += f" ({location['url']}:{location.get('lineNumber')})"
        self.messages.append(line)
        if message.type == "error":
            self.errors.append(line)

    def uncaught(self, error: Error) -> None:
        line = f"uncaught: {error.message}"
        self.messages.append(line)
        self.errors.append(line)

    def report(self) -> str:
        return "\n".join(["--- browser console:", *self.messages[-40:]])


@contextlib.contextmanager
def chromium(
    viewport: tuple[int, int] = (1280, 800),
    credentials: tuple[str, str] | None = None,
    **context_options: Any,
) -> Iterator[Browser]:
    """One headless Debian chromium with one page at ``viewport``; with ``credentials`` the
    page answers the server's Basic challenge with them (Playwright's ``http_credentials``)."""
    width, height = viewport
    options: dict[str, Any] = {"viewport": {"width": width, "height": height}, **context_options}
    if credentials is not None:
        options["http_credentials"] = {"username": credentials[0], "password": credentials[1]}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=list(ARGS))
        try:
            context = browser.new_context(**options)
            context.set_default_timeout(DEFAULT_TIMEOUT_MS)
            page = context.new_page()
            watched = Browser(page)
            page.on("console", watched.console)
            page.on("pageerror", watched.uncaught)
            yield watched
        finally:
            browser.close()
