"""The conversation engine on the `tiny` model: tasks, cached image embeddings, report edits, context rule."""

from __future__ import annotations

import gc
import json
import weakref
from pathlib import Path

import pytest

from radialog.chat import PLAIN_LANGUAGE_PROMPT, SUMMARY_PROMPT, Session, Task
from radialog.errors import InputError
from radialog.imaging import load_xray
from radialog.prompts import ASSISTANT, IMAGE_PLACEHOLDER, USER

EXAMPLE = Path(__file__).resolve().parents[1] / "app" / "examples" / "00000001_000.png"


@pytest.fixture
def session(tiny_model) -> Session:
    return Session.start(tiny_model, load_xray(EXAMPLE))


def test_report_then_followups_reuse_the_image_embeddings(session, tiny_model, monkeypatch):
    seen = []
    original = tiny_model.prompt_embeds

    def spy(conversation, image_embeds, max_new_tokens):
        seen.append((conversation, image_embeds))
        return original(conversation, image_embeds, max_new_tokens)

    monkeypatch.setattr(tiny_model, "encode_image", lambda xray: pytest.fail("the image was encoded again"))
    monkeypatch.setattr(tiny_model, "prompt_embeds", spy)
    report = session.ask(Task.REPORT)
    assert session.report == report
    session.ask(Task.QUESTION, "Is the heart enlarged?")
    session.ask(Task.PLAIN_LANGUAGE)
    session.ask(Task.SUMMARIZE)
    assert all(embeds is session.encoded.image_embeds for _, embeds in seen)
    for conversation, _ in seen:
        prompt = "".join(text or "" for _, text in conversation.messages)
        assert prompt.count(IMAGE_PLACEHOLDER) == 32, "exactly one image in every prompt"

    # The follow-up sees the report turn answered by the report, then the question.
    last = seen[-1][0].messages
    assert last[1] == (ASSISTANT, report)
    assert last[-2] == (USER, SUMMARY_PROMPT) and last[-1] == (ASSISTANT, None)
    assert (USER, PLAIN_LANGUAGE_PROMPT) in last
    assert [t.task for t in session.transcript] == [Task.REPORT, Task.QUESTION, Task.PLAIN_LANGUAGE, Task.SUMMARIZE]


def test_streaming_yields_pieces_and_records_the_turn(session):
    pending = session.prepare(Task.REPORT)
    pieces = list(session.run(pending))
    assert pieces
    assert session.report == "".join(pieces).strip()


def test_correction_uses_radialog_wording_and_becomes_the_report(session):
    session.ask(Task.REPORT)
    pending = session.prepare(Task.CORRECT, remove=["Edema"])
    assert pending.prompt == "The patient does not have edema. Update the report. Don't make other changes."
    assert session.prepare(Task.CORRECT, add=["Pneumonia"]).prompt.startswith("The patient also has pneumonia")
    corrected = "".join(session.run(pending)).strip()
    assert session.report == corrected
    # The conversation continues from the corrected report, not from the correction exchange.
    follow_up = session.prepare(Task.CHAT, "Thanks. Anything else?").conversation.messages
    assert follow_up[1] == (ASSISTANT, corrected) and len(follow_up) == 4


def test_free_text_correction(session):
    session.ask(Task.REPORT)
    assert session.prepare(Task.CORRECT, "Remove the sentence about the heart.").prompt == (
        "Remove the sentence about the heart."
    )


def test_edited_report_replaces_the_report_turn(session):
    session.ask(Task.REPORT)
    session.ask(Task.CHAT, "Is there an effusion?")
    session.set_report("  The lungs are clear. No effusion.  ")
    assert session.report == "The lungs are clear. No effusion."
    messages = session.prepare(Task.SUMMARIZE).conversation.messages
    assert messages[1] == (ASSISTANT, "The lungs are clear. No effusion.")
    assert len(messages) == 4, "turns about the old report left the context"
    with pytest.raises(InputError, match="empty"):
        session.set_report("   ")


def test_question_before_report_carries_the_image(session):
    pending = session.prepare(Task.QUESTION, "Is there a pneumothorax?")
    assert pending.prompt.startswith("Image information: " + IMAGE_PLACEHOLDER)
    assert pending.prompt.endswith("Is there a pneumothorax?")
    assert pending.user == "Is there a pneumothorax?"
    "".join(session.run(pending))
    second = session.prepare(Task.CHAT, "And the heart?")
    assert "".join(t or "" for _, t in second.conversation.messages).count(IMAGE_PLACEHOLDER) == 32


def test_finding_question_uses_radialog_wording(session):
    pending = session.prepare(Task.QUESTION, add=["Pleural Effusion"])
    assert pending.user == "Is there any Pleural Effusion?"  # shown without RaDialog's leading space
    assert pending.max_new_tokens == session.model.config.generation.yes_no_max_new_tokens
    "".join(session.run(session.prepare(Task.REPORT)))
    after_report = session.prepare(Task.QUESTION, add=["Pleural Effusion"])
    # After a report the turn reads as RaDialog's evaluation wrote it: two spaces after "USER:".
    assert after_report.conversation.messages[-2] == ("USER", " Is there any Pleural Effusion?")


@pytest.mark.parametrize("task", [Task.CORRECT, Task.PLAIN_LANGUAGE, Task.SUMMARIZE])
def test_report_tasks_need_a_report(session, task):
    with pytest.raises(InputError, match="generate one first"):
        session.prepare(task, "x")


@pytest.mark.parametrize("text", ["", "   ", None])
def test_empty_message_is_refused(session, text):
    with pytest.raises(InputError, match="empty"):
        session.prepare(Task.CHAT, text)


def test_history_drops_oldest_turns_first_and_keeps_the_report(session):
    report = session.ask(Task.REPORT)
    long_message = "word " * 100  # about 100 tokens with the tiny word-piece tokenizer
    for i in range(12):
        pending = session.prepare(Task.CHAT, f"question {i}: {long_message}")
        "".join(session.run(pending))
        if pending.dropped_turns:
            break
    else:
        pytest.fail("the history never reached the context limit")
    messages = pending.conversation.messages
    assert messages[1] == (ASSISTANT, report), "the report turn is kept"
    assert IMAGE_PLACEHOLDER in messages[0][1], "the image turn is kept"
    assert not any(text and text.startswith("question 0:") for _, text in messages), "the oldest turn went first"
    assert messages[-2][1].startswith(f"question {i}:")
    assert session.model.processor.tokenize(pending.conversation).shape[1] <= (
        session.model.max_context - pending.max_new_tokens
    )
    assert len(session.transcript) == i + 2, "the transcript keeps every turn"


def test_message_longer_than_the_context_is_refused(session):
    with pytest.raises(InputError, match=r"context|characters"):
        session.prepare(Task.CHAT, "word " * 1500)


def test_a_closed_stream_is_cancelled_and_not_recorded(session):
    stream = session.run(session.prepare(Task.REPORT))
    next(stream)
    stream.close()  # a client that went away
    assert session.report is None and session.transcript == [], "a truncated report is not kept"
    assert session.ask(Task.REPORT) == session.report, "the session goes on as if the turn had not started"


def test_record_is_json(session):
    session.ask(Task.REPORT)
    record = json.loads(json.dumps(session.record("preset:tiny"), allow_nan=False))
    assert record["report"] == session.report and record["model_id"] == "preset:tiny"
    assert set(record["findings"]) == set(session.probabilities) and record["turns"][0]["task"] == "report"


def test_a_session_keeps_the_image_metadata_not_the_pixels(tiny_model, chest_dicom):
    xray = load_xray(chest_dicom)
    pixels = weakref.ref(xray.pixels)
    expected = {"format": "dicom", "window": list(xray.window)}
    session = Session.start(tiny_model, xray)
    del xray
    gc.collect()
    assert pixels() is None, "the session keeps the decoded pixel array alive"
    record = json.loads(json.dumps(session.record("preset:tiny")))
    assert record["image"] == expected, "the record still names the image's format and DICOM window"
