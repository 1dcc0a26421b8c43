"""Batched generation: several conversations in one left-padded `generate` call.

`RaDialogModel.generate` serves one conversation per call, so concurrent sessions queue behind each
other. Decoding is memory-bound, so one step for B sequences costs little more than for one: batching
the sessions that are waiting raises aggregate tokens/s roughly B-fold until compute saturates.
"""

from __future__ import annotations

import torch

from radialog.errors import InputError
from radialog.model.modeling import RaDialogModel
from radialog.prompts import Conversation


@torch.no_grad()
def generate_batch(
    model: RaDialogModel,
    conversations: list[Conversation],
    image_embeds_list: list[torch.Tensor | None],
    max_new_tokens: int,
    min_new_tokens: int = 0,
) -> list[str]:
    """Answers for each conversation's open assistant turn, in order, decoded as `RaDialogModel.generate` does
    (greedy or beam search, with the same penalties).

    Each prompt is embedded on its own (its `<IMG>` positions filled from its image), then the rows are
    left-padded to a common length (`left_pad`).
    """
    if len(conversations) != len(image_embeds_list):
        raise InputError(f"{len(conversations)} conversations but {len(image_embeds_list)} image embeddings")
    if not conversations:
        return []
    rows = [
        model.prompt_embeds(conversation, image_embeds, max_new_tokens)
        for conversation, image_embeds in zip(conversations, image_embeds_list, strict=True)
    ]
    embeds, mask = left_pad(rows, pad_embedding(model))
    output = model.language_model.generate(
        inputs_embeds=embeds, attention_mask=mask, **model.decoding_kwargs(max_new_tokens, min_new_tokens)
    )
    return [text.strip() for text in model.tokenizer.batch_decode(output, skip_special_tokens=True)]


def pad_embedding(model: RaDialogModel) -> torch.Tensor:
    """(hidden,): the pad token's input embedding, what fills the left of the shorter rows."""
    pad_id = torch.tensor([model.tokenizer.pad_token_id], device=model.device)
    return model.language_model.get_input_embeddings()(pad_id)[0]


def left_pad(rows: list[torch.Tensor], pad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts' (T_i, hidden) embeddings → (B, T, hidden) left-padded with `pad`, and the (B, T) 0/1 mask.

    generate() derives the position ids from the mask, so every row decodes as it would alone.
    """
    length = max(row.shape[0] for row in rows)
    embeds = torch.stack([torch.cat([pad.expand(length - r.shape[0], -1).to(r.dtype), r]) for r in rows])
    mask = torch.stack([torch.cat([torch.zeros(length - r.shape[0]), torch.ones(r.shape[0])]) for r in rows])
    return embeds, mask.to(device=embeds.device, dtype=torch.long)
