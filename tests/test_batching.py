"""Batched generation (concurrent sessions in one call) answers exactly as one-at-a-time generation."""

from __future__ import annotations

import copy

import pytest
import torch

from radialog.errors import ContextOverflow, InputError
from radialog.imaging import XRay
from radialog.model import RaDialogModel, get_preset
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


def test_batched_beam_search_equals_single_beam_search_with_every_decoding_setting():
    """R2GenGPT decodes with beams, a length penalty and (here) an n-gram ban: batching must apply them all."""
    config = get_preset("r2gengpt-tiny")
    config.generation.no_repeat_ngram_size = 2
    torch.manual_seed(3)
    model = RaDialogModel.from_config(config, device="cpu")
    encoded = [model.encode_image(xray(seed)) for seed in (4, 5)]
    conversations = [model.report_conversation(e) for e in encoded]
    embeds = [e.image_embeds for e in encoded]
    single = [
        model.generate(c, e, max_new_tokens=12, min_new_tokens=6) for c, e in zip(conversations, embeds, strict=True)
    ]
    batched = generate_batch(model, conversations, embeds, max_new_tokens=12, min_new_tokens=6)
    assert batched == single
    # The settings matter for this model: greedy decoding without the n-gram ban answers otherwise.
    config.generation.num_beams, config.generation.no_repeat_ngram_size = 1, 0
    assert generate_batch(model, conversations, embeds, max_new_tokens=12, min_new_tokens=6) != single


def test_a_conversation_over_the_context_is_refused_with_its_length(model):
    conversation = Conversation()
    conversation.add_user("effusion " * 2000)
    conversation.add_assistant(None)
    with pytest.raises(ContextOverflow, match="more than the 1016 the context allows") as refused:
        generate_batch(model, [conversation], [None], max_new_tokens=8)
    assert refused.value.budget == model.max_context - 8 == 1016


def test_batch_arguments_must_pair_up(model):
    with pytest.raises(InputError, match="2 conversations but 1 image embeddings"):
        generate_batch(model, [Conversation(), Conversation()], [None], max_new_tokens=4)
    assert generate_batch(model, [], [], max_new_tokens=4) == []
