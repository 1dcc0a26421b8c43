"""Turning a conversation into training tokens with the loss on the assistant's answers only."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from radialog.errors import InputError
from radialog.prompts import ASSISTANT, Conversation
from radialog.training.conversations import to_conversation

if TYPE_CHECKING:
    from radialog.model.modeling import RaDialogModel

IGNORE_INDEX = -100


def answer_spans(text: str, conversation: Conversation, eos: str, trained: Sequence[bool]) -> list[tuple[int, int]]:
    """Character spans of the trained assistant answers (and the end-of-turn token after each)."""
    spans, cursor = [], 0
    for (role, content), train in zip(conversation.messages, trained, strict=True):
        if role != ASSISTANT or not content:
            continue
        start = text.find(content, cursor)
        if start < 0:
            raise InputError("an assistant answer was not found in the rendered prompt")
        end = start + len(content)
        eos_at = text.find(eos, end)
        if eos_at >= 0 and not text[end:eos_at].strip():
            end = eos_at + len(eos)  # learn to stop: the end-of-turn token is trained too
        if train:
            spans.append((start, end))
        cursor = end
    return spans


def encode_conversation(
    model: RaDialogModel, messages: Sequence[dict], max_length: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, labels), 1-D; labels are IGNORE_INDEX outside assistant answers.

    The prompt is rendered exactly as at inference (`RaDialogProcessor.render` of the closed
    conversation, report requests in the model's report prompt), and token offsets decide which tokens
    belong to an answer. `max_length` keeps the first tokens only; `ConversationDataset` cuts itself,
    after checking the whole sample.
    """
    conversation = to_conversation(model, messages)
    tokenizer = model.tokenizer
    text = model.processor.render(conversation, add_generation_prompt=False)
    add_special = model.processor.prompt_format.add_special_tokens
    encoded = tokenizer(text, add_special_tokens=add_special, return_offsets_mapping=True)
    input_ids = torch.tensor(encoded["input_ids"])
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    # Earlier turns marked `"train": false` are context only (e.g. the flawed report a correction fixes).
    trained = [message.get("train", True) for message in messages]
    spans = answer_spans(text, conversation, tokenizer.eos_token, trained)
    for i, (start, end) in enumerate(encoded["offset_mapping"]):
        if end > start and any(s <= start < e for s, e in spans):
            labels[i] = input_ids[i]
    return input_ids[:max_length], labels[:max_length]
