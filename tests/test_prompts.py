"""RaDialog's prompt wording and the Vicuna v1.1 conversation format."""

from __future__ import annotations

import pytest

from radialog.prompts import (
    Conversation,
    build_correction_prompt,
    build_finding_question,
    build_report_prompt,
)

# RaDialog's training system prompt, copied from its code: the released adapter answers best to it.
RADIALOG_SYSTEM_PROMPT = (
    "A chat between a curious user and an artificial intelligence assistant acting as an experienced "
    "radiologist. The assistant gives professional, detailed, and polite answers to the user's questions."
)


def test_a_new_conversation_opens_with_radialogs_training_system_prompt():
    conversation = Conversation()
    conversation.add_user("Is there any edema?")
    conversation.add_assistant(None)
    assert conversation.render_vicuna() == f"{RADIALOG_SYSTEM_PROMPT} USER: Is there any edema? ASSISTANT:"
    assert conversation.as_chat_messages() == [
        {"role": "system", "content": RADIALOG_SYSTEM_PROMPT},
        {"role": "user", "content": "Is there any edema?"},
    ]


def test_report_prompt_has_32_placeholders_findings_and_instruction():
    prompt = build_report_prompt("cardiomegaly, pleural effusion")
    assert prompt.startswith(
        "Image information: " + "<IMG>" * 32 + ". Predicted Findings: cardiomegaly, pleural effusion. "
    )
    assert prompt.endswith(
        "You are to act as a radiologist and write the finding section of a chest x-ray radiology report for this "
        "X-ray image and the given predicted findings. Write in the style of a radiologist, write one fluent text "
        "without enumeration, be concise and don't provide explanations or reasons."
    )
    assert prompt.count("<IMG>") == 32


def test_vicuna_rendering_of_a_two_turn_conversation():
    conversation = Conversation(system="SYS")
    conversation.add_user("first")
    conversation.add_assistant("answer")
    conversation.add_user("second")
    conversation.add_assistant(None)
    assert conversation.render_vicuna() == "SYS USER: first ASSISTANT: answer</s>USER: second ASSISTANT:"


def test_correction_prompts_use_radialogs_wording():
    assert build_correction_prompt(remove=["Pleural Effusion"]) == (
        "The patient does not have pleural effusion. Update the report. Don't make other changes."
    )
    assert build_correction_prompt(add=["Edema"]) == (
        "The patient also has edema, correct the report. Don't make other changes."
    )
    assert build_correction_prompt(remove=["Edema"], add=["Pneumothorax"]) == (
        "Please adapt the report with the following corrections: Include pneumothorax and remove edema. "
        "Don't make other changes."
    )
    with pytest.raises(ValueError):
        build_correction_prompt()


def test_several_findings_are_joined_with_and_before_the_last_and_no_finding_is_never_named():
    assert build_correction_prompt(remove=["Edema", "Pleural Effusion", "No Finding"]) == (
        "The patient does not have edema and pleural effusion. Update the report. Don't make other changes."
    )
    assert build_correction_prompt(add=["Edema", "Atelectasis", "Support Devices"], remove=["No Finding"]) == (
        "The patient also has edema, atelectasis and support devices, correct the report. Don't make other changes."
    )
    with pytest.raises(ValueError):
        build_correction_prompt(remove=["No Finding"])


def test_finding_question_keeps_the_labels_capitals_and_radialogs_two_spaces_after_user():
    assert build_finding_question("Pleural Effusion") == " Is there any Pleural Effusion?"
    conversation = Conversation(system="SYS")
    conversation.add_user("report please")
    conversation.add_assistant("No effusion.")
    conversation.add_user(build_finding_question("Cardiomegaly"))
    conversation.add_assistant(None)
    assert conversation.render_vicuna().endswith("No effusion.</s>USER:  Is there any Cardiomegaly? ASSISTANT:")
