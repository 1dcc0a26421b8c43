"""Batched generation (concurrent sessions in one call) answers exactly as one-at-a-time generation."""

from __future__ import annotations

import pytest
import torch
from generation_inputs import mixed_prompts, noise_xray

from radialog.errors import ContextOverflow, InputError
from radialog.model import RaDialogModel, get_preset
from radialog.model.batching import generate_batch
from radialog.prompts import Conversation


@pytest.fixture(scope="module")
def model(steered_tiny_model):
    return steered_tiny_model


def test_batched_answers_equal_single_answers_for_prompts_of_different_lengths(model):
    conversations, embeds, _ = (list(column) for column in zip(*mixed_prompts(model), strict=True))
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
    encoded = [model.encode_image(noise_xray(seed)) for seed in (4, 5)]
    conversations = [model.processor.report_conversation(e.predicted_findings) for e in encoded]
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
