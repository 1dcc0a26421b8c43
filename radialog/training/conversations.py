"""Stage-2 conversations as stored: what each turn asks, rendered into the model's own prompt at training time.

A conversation is a list of messages. Answers and follow-up questions are plain text, `{"role", "content"}`
(an assistant turn may add `"train": false`: context, not a target). The turn that shows the image is
stored as what it asks, not as prompt text:

    {"role": "user", "request": "report", "predicted_findings": "cardiomegaly, edema"}

and becomes `RaDialogProcessor.report_prompt(predicted_findings)`, the same call the app's `Session` makes for its
anchor turn. So one instruct file serves every model (RaDialog's 32 image positions with the predicted
findings, R2GenGPT's `<Img>` frame with 49 and no findings), and training renders exactly what serving sends.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from radialog.errors import InputError
from radialog.prompts import ASSISTANT, USER, Conversation

if TYPE_CHECKING:
    from radialog.model.modeling import RaDialogModel

REPORT_REQUEST = "report"


@dataclass(frozen=True)
class ConversationSample:
    """One stage-2 sample: a name for error messages (record id, instruct file line), its turns, its image."""

    name: str
    messages: list[dict]
    image_index: int


def report_request(predicted_findings: str) -> dict[str, str]:
    """The user turn asking for the report of the image, given the predicted findings."""
    return {"role": "user", "request": REPORT_REQUEST, "predicted_findings": predicted_findings}


def to_conversation(model: RaDialogModel, messages: Sequence[dict]) -> Conversation:
    """The closed conversation the model reads: report requests in its report prompt, other turns as written."""
    conversation = Conversation()
    for message in messages:
        role = {"user": USER, "assistant": ASSISTANT}.get(message.get("role"))
        if role is None:
            raise InputError(f"unknown message role {message.get('role')!r} (expected user or assistant)")
        request = message.get("request")
        if request is None:
            if not isinstance(message.get("content"), str):
                raise InputError(f"a {message['role']} message needs a 'content' string or a 'request'")
            conversation.messages.append((role, message["content"]))
        elif request != REPORT_REQUEST or role != USER or not isinstance(message.get("predicted_findings"), str):
            raise InputError(f"a request must be a user turn {report_request('...')}, got {message}")
        else:
            conversation.messages.append((role, model.processor.report_prompt(message["predicted_findings"])))
    return conversation
