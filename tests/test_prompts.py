"""RaDialog's prompt wording and the Vicuna v1.1 conversation format."""

from __future__ import annotations

import pytest

from radialog.prompts import (
    SYSTEM_PROMPT,
    Conversation,
    build_correction_prompt,
    build_finding_question,
    build_report_prompt,
)


def test_system_prompt_is_radialogs_training_prompt_word_for_word():
    assert SYSTEM_PROMPT == (
        "A chat between a curious user and an artificial intelligence assistant acting as an experienced "
        "radiologist. The assistant gives professional, detailed, and polite answers to the user's questions."
    )


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
    assert build_finding_question("Cardiomegaly") == "Is there any cardiomegaly?"
