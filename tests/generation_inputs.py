"""Generation inputs for tests: distinct, reproducible noise X-rays, and prompts of every shape a batch may mix."""

from __future__ import annotations

import torch

from radialog.imaging import XRay
from radialog.prompts import Conversation


def noise_xray(seed: int) -> XRay:
    pixels = (torch.rand(200, 180, generator=torch.Generator().manual_seed(seed)) * 255).to(torch.uint8).numpy()
    return XRay(pixels=pixels, source_format="png", original_dtype="uint8")


def mixed_prompts(model) -> list[tuple[Conversation, torch.Tensor | None, int]]:
    """Four prompts of different lengths and token budgets: three reports, one follow-up, one text only."""
    encoded = [model.encode_image(noise_xray(seed)) for seed in (0, 1, 2)]
    conversations = [model.processor.report_conversation(e.predicted_findings) for e in encoded]
    conversations[1].messages[-1] = ("ASSISTANT", "the heart is normal.")
    conversations[1].add_user("is there any pleural effusion? please answer briefly and clearly.")
    conversations[1].add_assistant(None)
    text_only = Conversation()
    text_only.add_user("what is a pneumothorax?")
    text_only.add_assistant(None)
    budgets = (12, 5, 9)
    images = [(c, e.image_embeds, b) for c, e, b in zip(conversations, encoded, budgets, strict=True)]
    return [*images, (text_only, None, 7)]
