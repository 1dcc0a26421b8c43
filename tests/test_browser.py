"""End to end in a real browser (Debian's chromium, driven by Playwright) against `radialog serve`'s app.

Upload a real X-ray, generate a report and watch it stream in, ask a follow-up, take a screenshot; then the
conversation tasks (a finding question, a ticked correction) and the trust features (consistency flags, a
heatmap, a prior image, the DICOM SR export). The tiny model's text is random: the checks are on structure.
"""

from __future__ import annotations

import io
import itertools
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from app_fixtures import *  # noqa: F403 (pytest fixtures)
from app_fixtures import running_server

from radialog.prompts import build_correction_prompt

CHROMIUM = Path("/usr/bin/chromium")
EXAMPLE = Path(__file__).resolve().parents[1] / "app" / "examples" / "00000001_000.png"
PRIOR_EXAMPLE = EXAMPLE.with_name("00027426_000.png")
# Sentences the rule-based labeler reads as denying a finding, for findings the tiny classifier may call present.
DENIALS = {
    "Pneumothorax": "There is no pneumothorax.",
    "Cardiomegaly": "There is no cardiomegaly.",
    "Pleural Effusion": "There is no pleural effusion.",
    "Edema": "There is no edema.",
}
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


def user_texts(page) -> list[str]:
    return [text.strip() for text in page.locator('#chatbot [data-testid="user"]').all_inner_texts()]


def choose(page, dropdown_id: str, option: str) -> None:
    """Pick `option` in a Gradio dropdown as a user does: open it, click the option."""
    page.click(f"#{dropdown_id} input")
    page.get_by_role("option", name=option, exact=True).click()


def wait_for_answer(page, answers: int) -> None:
    """Until the chat holds `answers` answers, the last one complete.

    Answers are counted, not user turns: Gradio shows consecutive user messages (an edit marker, then a
    question) in one bubble.
    """
    page.wait_for_function(f"document.querySelectorAll('#chatbot [data-testid=\"bot\"]').length >= {answers}")
    # The tiny model streams in milliseconds: an answer unchanged for half a second is complete.
    last, deadline = None, time.monotonic() + 30
    while (current := bot_texts(page)[-1]) != last:
        assert time.monotonic() < deadline, "the answer kept changing"
        last = current
        time.sleep(0.5)


def predicted_findings(page) -> list[str]:
    """The findings the table marks as predicted ("yes" in its last column)."""
    # Read as the table's text, cell by cell (how Gradio nests rows and cells differs between versions):
    # each predicted row is "<finding> <probability> yes".
    cells = [c.strip() for c in re.split(r"[\t\n]+", page.locator("#findings").inner_text()) if c.strip()]
    return [cells[i - 2] for i, cell in enumerate(cells) if cell == "yes" and re.fullmatch(r"[\d.]+", cells[i - 1])]


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


def test_conversation_tasks_and_trust_features(server_url, page):
    """Continues on the same page: each feature is used as a user would, one after the other."""
    turns = len(bot_texts(page))

    choose(page, "finding-question", "Edema")
    page.click("#ask-finding")
    wait_for_answer(page, turns + 1)
    assert user_texts(page)[-1].endswith("Is there any Edema?"), "RaDialog's finding question"
    turns += 1

    # A ticked correction: RaDialog's wording in the chat, its answer becomes the report.
    edited = page.locator("#report textarea").input_value()
    page.get_by_text("Correct the report").click()
    page.locator("#correct-remove").get_by_label("Pneumothorax", exact=True).check()
    page.click("#correct")
    wait_for_answer(page, turns + 1)
    page.wait_for_function("(edited) => document.querySelector('#report textarea').value !== edited", arg=edited)
    wording = build_correction_prompt(remove=["Pneumothorax"])
    assert user_texts(page)[-1] == wording
    corrected = page.locator("#report textarea").input_value()
    assert not page.locator("#correct-remove").get_by_label("Pneumothorax", exact=True).is_checked()
    assert "consistency-summary" in page.locator("#consistency").inner_html(), "the corrected report is checked"

    # An edit denying a finding the classifier predicts is flagged, with its sentence.
    denied = next((f for f in DENIALS if f in predicted_findings(page)), None)
    assert denied, f"the tiny classifier predicts none of {list(DENIALS)}: {predicted_findings(page)}"
    page.fill("#report textarea", f"The heart is normal. {DENIALS[denied]}")
    page.click("#apply-edit")
    flag = page.locator("#consistency li.contradiction", has_text=denied)
    flag.wait_for()
    assert DENIALS[denied].rstrip(".") in flag.inner_text() and "p = 0." in flag.inner_text()

    choose(page, "heatmap-finding", denied)
    page.click("#show-heatmap")
    page.locator("#heatmap img").wait_for()

    page.set_input_files("#prior-upload input[type=file]", str(PRIOR_EXAMPLE))
    page.locator("#prior img").wait_for()
    page.wait_for_function("document.querySelector('#prior-notice').innerText.trim().length > 0")
    assert page.locator("#xray img").is_visible(), "the current image stays beside the prior"

    # The export: a DICOM SR among the files, and the record holds the correction as it was made.
    dicom_link = page.locator('a[href*=".dcm"]').first
    earlier_export = dicom_link.get_attribute("href")  # the previous test's export
    page.click("#export")
    page.wait_for_function(
        "(earlier) => document.querySelector('a[href*=\".dcm\"]')?.getAttribute('href') !== earlier",
        arg=earlier_export,
    )
    sr = pydicom.dcmread(io.BytesIO(page.request.get(dicom_link.get_attribute("href")).body()))
    assert sr.Modality == "SR"
    record = page.request.get(page.locator('a[href*=".json"]').first.get_attribute("href")).json()
    correction = next(t for t in record["turns"] if t["task"] == "correct")
    assert correction["user"] == wording and correction["answer"] == corrected.strip()
    assert record["report"] == f"The heart is normal. {DENIALS[denied]}"
    assert record["prior"]["present"] and record["consistency"]["counts"]["contradiction"] >= 1
