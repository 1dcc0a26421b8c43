"""Batched generation (concurrent sessions in one call) answers exactly as one-at-a-time generation."""

from __future__ import annotations

import copy

import pytest
import torch

from radialog.errors import InputError
from radialog.imaging import XRay
from radialog.model.batching import generate_batch
from radialog.prompts import Conversation


def xray(seed: int) -> XRay:
    pixels = (torch.rand(200, 180, generator=torch.Generator().manual_seed(seed)) * 255).to(torch.uint8).numpy()
    return XRay(pixels=pixels, source_format="png", original_dtype="uint8")


@pytest.fixture(scope="module")
def model(tiny_model):
    perturbed = copy.deepcopy(tiny_model)
    torch.manual_seed(7)
    with torch.no_grad():  # non-zero LoRA so that prompts and images steer the output
        for name, param in perturbed.language_model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.5)
    return perturbed


def test_batched_answers_equal_single_answers_for_prompts_of_different_lengths(model):
    encoded = [model.encode_image(xray(seed)) for seed in (0, 1, 2)]
    conversations = [model.report_conversation(e) for e in encoded]
    conversations[1].messages[-1] = ("ASSISTANT", "the heart is normal.")
    conversations[1].add_user("is there any pleural effusion? please answer briefly and clearly.")
    conversations[1].add_assistant(None)
    text_only = Conversation()
    text_only.add_user("what is a pneumothorax?")
    text_only.add_assistant(None)
    conversations.append(text_only)
    embeds = [e.image_embeds for e in encoded] + [None]
    single = [model.generate(c, e, max_new_tokens=8) for c, e in zip(conversations, embeds, strict=True)]
    batched = generate_batch(model, conversations, embeds, max_new_tokens=8)
    assert batched == single
    assert len(set(single)) > 1


def test_batch_arguments_must_pair_up(model):
    with pytest.raises(InputError, match="2 conversations but 1 image embeddings"):
        generate_batch(model, [Conversation(), Conversation()], [None], max_new_tokens=4)
    assert generate_batch(model, [], [], max_new_tokens=4) == []
