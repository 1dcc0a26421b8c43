"""The LLM side: any causal LM from a transformers config, and the context length it brings along."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from radialog.errors import CheckpointError, ContextOverflow
from radialog.imaging import XRay
from radialog.model import RaDialogModel, get_preset
from radialog.model.configuration import LanguageModelConfig, LoraSettings, PrecisionSettings, RaDialogConfig
from radialog.model.language_model import load_language_model
from radialog.model.modeling import part_dtypes
from radialog.model.presets import TINY_TOKENIZER

TINY_GPT2 = {"model_type": "gpt2", "n_embd": 32, "n_layer": 2, "n_head": 2, "n_positions": 512}


def xray(seed: int = 0) -> XRay:
    pixels = np.random.default_rng(seed).integers(0, 255, (160, 160), dtype=np.uint8)
    return XRay(pixels=pixels, source_format="png", original_dtype="uint8")


def gpt2_config():
    config = get_preset("tiny")
    config.name = "tiny-gpt2"
    config.language_model = LanguageModelConfig(random_init=dict(TINY_GPT2), tokenizer=TINY_TOKENIZER)
    config.lora = LoraSettings(target_modules=("c_attn",))  # GPT-2 fuses q, k and v into one projection
    return config


def test_a_random_llm_can_be_any_causal_architecture_and_survives_a_save(tmp_path):
    torch.manual_seed(0)
    model = RaDialogModel.from_config(gpt2_config(), device="cpu")
    assert model.base_language_model.config.model_type == "gpt2"
    report = model.generate_report(xray(), 6)
    model.save_pretrained(tmp_path)
    reloaded = RaDialogModel.from_pretrained(tmp_path, device="cpu")
    assert reloaded.base_language_model.config.model_type == "gpt2"
    assert reloaded.generate_report(xray(), 6) == report


def test_the_context_length_is_the_llms_own_unless_the_config_lowers_it():
    torch.manual_seed(0)
    config = gpt2_config()
    assert RaDialogModel.from_config(config, device="cpu").max_context == 512  # GPT-2's n_positions
    config.language_model.max_context = 100
    model = RaDialogModel.from_config(config, device="cpu")
    assert model.max_context == 100
    conversation = model.processor.report_conversation(model.encode_image(xray()).predicted_findings)
    with pytest.raises(ContextOverflow) as refused:
        model.prompt_ids(conversation, max_new_tokens=90)
    assert refused.value.budget == 10


def test_random_init_must_name_its_architecture():
    with pytest.raises(ValueError, match="model_type"):
        LanguageModelConfig(random_init={"hidden_size": 64})


def test_on_a_gpu_radialog_v1_runs_vision_in_float32_and_vicuna_in_float16_unless_told_otherwise():
    gpu, cpu = torch.device("cuda"), torch.device("cpu")
    assert part_dtypes(get_preset("radialog-v1"), gpu) == (torch.float32, torch.float16)
    assert part_dtypes(get_preset("mini"), gpu) == (torch.bfloat16, torch.bfloat16)
    assert part_dtypes(get_preset("radialog-v1"), gpu, torch.bfloat16) == (torch.bfloat16, torch.bfloat16)
    assert part_dtypes(get_preset("radialog-v1"), cpu) == (torch.float32, torch.float32)


def test_precision_settings_survive_a_config_round_trip(tmp_path):
    config = get_preset("radialog-v1")
    config.save(tmp_path)
    assert RaDialogConfig.load(tmp_path).precision == PrecisionSettings(vision="float32", language_model="float16")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
@pytest.mark.parametrize("mode", ["8bit", "4bit"])
def test_quantizing_a_random_llm_is_not_silently_skipped(mode):
    # A random-init LLM once ignored `quantization`, so a "4-bit" benchmark ran in full precision.
    config = LanguageModelConfig(random_init=dict(TINY_GPT2), tokenizer=TINY_TOKENIZER)
    with pytest.raises(CheckpointError, match="CUDA"):
        load_language_model(config, vocab_size=100, dtype=torch.float32, device=torch.device("cpu"), quantization=mode)
