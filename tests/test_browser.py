"""End to end in a real browser (Debian's chromium, driven by Playwright) against `radialog serve`'s app.

Upload a real X-ray, generate a report and watch it stream in, ask a follow-up, take a screenshot.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from app_fixtures import *  # noqa: F403 (pytest fixtures)
from app_fixtures import running_server

CHROMIUM = Path("/usr/bin/chromium")
EXAMPLE = Path(__file__).resolve().parents[1] / "app" / "examples" / "00000001_000.png"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.is_file(), reason="needs Debian's chromium (scripts/install.sh installs it)"),
]


@pytest.fixture(scope="module")
def server_url(tiny_app) -> Iterator[str]:
    with running_server(tiny_app) as url:
        yield url


@pytest.fixture(scope="module")
def page():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=[*CHROMIUM_ARGS, "--no-first-run"]
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.set_default_timeout(30_000)
        yield page
        browser.close()


def bot_texts(page) -> list[str]:
    return page.locator('#chatbot [data-testid="bot"]').all_inner_texts()


def test_upload_generate_stream_and_follow_up(server_url, page, slow_stream, tmp_path):
    outside = []
    page.on("request", lambda request: outside.append(request.url) if "127.0.0.1" not in request.url else None)
    page.goto(f"{server_url}/ui/")
    assert "not for clinical use" in page.locator("#banner").inner_text()

    page.set_input_files("#upload input[type=file]", str(EXAMPLE))
    page.locator("#xray img").wait_for()  # the session exists once the image the model reads is shown
    assert "0." in page.locator("#findings").inner_text(), "the findings show probabilities"

    page.click("#generate")
    seen: list[str] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        texts = bot_texts(page)
        if texts and texts[-1].strip() and (not seen or seen[-1] != texts[-1]):
            seen.append(texts[-1])
        if page.locator("#report textarea").input_value().strip():
            break
        time.sleep(0.02)
    report = page.locator("#report textarea").input_value().strip()
    assert report, "the report box was never filled"
    assert len(seen) >= 2, f"the report did not arrive in pieces: {seen}"
    assert all(len(a) <= len(b) for a, b in itertools.pairwise(seen)), "the text only grows"

    page.fill("#message textarea", "Is there any pleural effusion?")
    page.click("#send")
    page.locator('#chatbot [data-testid="user"]').nth(1).wait_for()
    page.wait_for_function(
        "document.querySelectorAll('#chatbot [data-testid=\"bot\"]').length >= 2"
        " && document.querySelector('#message textarea').value === ''"
    )
    users = page.locator('#chatbot [data-testid="user"]').all_inner_texts()
    assert users[-1].strip() == "Is there any pleural effusion?"
    assert bot_texts(page)[-1].strip()

    screenshot = tmp_path / "radialog-ui.png"
    page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.stat().st_size > 10_000
    assert not outside, f"the page reached outside the machine: {outside}"


def test_edit_and_export(server_url, page):
    """Continues from the previous test's page: the edited report is what gets exported."""
    assert page.locator("#report textarea").input_value().strip(), "the previous test left no report to edit"
    page.fill("#report textarea", "The lungs are clear. No pleural effusion.")
    page.click("#apply-edit")
    page.locator('#chatbot [data-testid="user"]').get_by_text("(report edited)").wait_for()
    page.click("#export")
    link = page.locator('a[href*=".json"]').first
    link.wait_for()
    record = page.request.get(link.get_attribute("href")).json()
    assert record["report"] == "The lungs are clear. No pleural effusion."
    assert record["model_id"] == "preset:tiny" and len(record["findings"]) == 14 and record["exported_at"]
