"""A tiny RaDialog release in the files' official layouts, for the conversion and release-check tests.

The files are built from a `tiny`-sized reference model, renamed by hand into the layouts the public
code writes (LAVIS `Blip2Qformer`, hi-ml `ImageModel`, old-peft adapter + `img_proj_layer`, Lightning
`LitIGClassifier`), with the stage-1 leftovers the real checkpoint carries.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from peft.utils import get_peft_model_state_dict
from transformers import LlamaConfig, LlamaForCausalLM

from radialog.model import RaDialogModel, get_preset
from radialog.model.configuration import ImageEncoderConfig, LanguageModelConfig
from radialog.model.image_encoder import rebuild_projector
from radialog.model.language_model import build_byte_tokenizer

__all__ = ["LLM_DIR", "RELEASE_SEED", "release", "tiny_official_config"]

LLM_DIR = "vicuna-7b-v1.3"
RELEASE_SEED = 42


def tiny_official_config():
    config = get_preset("tiny")
    config.language_model = LanguageModelConfig(pretrained=LLM_DIR, max_context=1024)
    return config


def save_tiny_llama(directory: Path) -> None:
    """A tiny random Llama with its tokenizer, standing in for Vicuna-7b."""
    tokenizer = build_byte_tokenizer()
    llama = {k: v for k, v in get_preset("tiny").language_model.random_init.items() if k != "model_type"}
    torch.manual_seed(1)
    LlamaForCausalLM(LlamaConfig(**llama, vocab_size=len(tokenizer))).save_pretrained(directory)
    tokenizer.save_pretrained(directory)


def lavis_qformer_name(key: str) -> str:
    """Our Blip2QFormerModel key → LAVIS `Qformer.bert.*` (written out, not derived from the converter)."""
    if key.startswith("layernorm."):
        return "Qformer.bert.embeddings.LayerNorm." + key.removeprefix("layernorm.")
    key = key.replace(".attention.attention.", ".attention.self.").replace(
        ".crossattention.attention.", ".crossattention.self."
    )
    return "Qformer.bert." + key


def stage1_leftovers(hidden: int, layers: int) -> dict[str, torch.Tensor]:
    """Tensors a LAVIS stage-1 checkpoint has that inference does not use: the ITC/ITM heads and the Q-Former's
    text branch (kept for `radialog check-release`), and the language-modelling head (dropped)."""
    vocab, inter, embed = 30523, 2 * hidden, 256
    state = {
        "Qformer.bert.embeddings.word_embeddings.weight": torch.randn(vocab, hidden),
        "Qformer.bert.embeddings.position_embeddings.weight": torch.randn(512, hidden),
        "Qformer.bert.embeddings.position_ids": torch.arange(512)[None],
        "Qformer.cls.predictions.bias": torch.randn(vocab),
        "Qformer.cls.predictions.transform.dense.weight": torch.randn(hidden, hidden),
        "Qformer.cls.predictions.transform.LayerNorm.weight": torch.randn(hidden),
        "vision_proj.weight": torch.randn(embed, hidden),
        "vision_proj.bias": torch.randn(embed),
        "text_proj.weight": torch.randn(embed, hidden),
        "text_proj.bias": torch.randn(embed),
        "itm_head.weight": torch.randn(2, hidden),
        "itm_head.bias": torch.randn(2),
        "temp": torch.tensor(0.07),
    }
    for n in range(layers):
        layer = f"Qformer.bert.encoder.layer.{n}"
        state[f"{layer}.intermediate.dense.weight"] = torch.randn(inter, hidden)
        state[f"{layer}.intermediate.dense.bias"] = torch.randn(inter)
        state[f"{layer}.output.dense.weight"] = torch.randn(hidden, inter)
        state[f"{layer}.output.dense.bias"] = torch.randn(hidden)
        state[f"{layer}.output.LayerNorm.weight"] = torch.randn(hidden)
        state[f"{layer}.output.LayerNorm.bias"] = torch.randn(hidden)
    return state


def write_release(reference: RaDialogModel, root: Path) -> None:
    """The release files, named as the public code names them, holding `reference`'s weights."""
    config = reference.config
    encoder = reference.image_encoder.state_dict()
    params = {name for name, _ in reference.image_encoder.named_parameters()}
    trunk = {k: v for k, v in encoder.items() if not k.startswith(("projector.", "ln_vision."))}

    # BioViL-T: hi-ml ImageModel with its own 128-d projector (here a smaller one, 16-d).
    biovil = biovil_image_model(config.image_encoder)
    state = {**trunk, **{k: v for k, v in biovil.state_dict().items() if k.startswith("projector.")}}
    (root / "biovil_t").mkdir()
    torch.save(state, root / "biovil_t" / "biovil_t_image_model_proj_size_128.pt")

    # Stage 1: LAVIS keeps buffers and trainable parameters only: the frozen trunk's and projector's
    # weights are absent, their BatchNorm statistics present.
    model = {"query_tokens": reference.alignment.query_tokens.detach().clone()}
    model |= {lavis_qformer_name(k): v for k, v in reference.alignment.qformer.state_dict().items()}
    for key, value in encoder.items():
        if key.startswith("ln_vision."):
            model[key] = value
        elif key not in params:
            model["visual_encoder." + key] = value
    model |= stage1_leftovers(config.alignment.hidden_size, config.alignment.num_hidden_layers)
    torch.save({"model": model, "epoch": 4, "config": {"run": {"seed": 42}}}, root / "checkpoint_4.pth")

    # Stage 2: old peft adapter (no adapter name in keys) plus the image projection on the LlamaModel.
    adapter_dir = root / "vicuna-7b-img-report" / "checkpoint-11200"
    adapter_dir.mkdir(parents=True)
    adapter = dict(get_peft_model_state_dict(reference.language_model))
    projection = reference.alignment.language_projection
    adapter["base_model.model.model.img_proj_layer.weight"] = projection.weight.detach().clone()
    adapter["base_model.model.model.img_proj_layer.bias"] = projection.bias.detach().clone()
    adapter["base_model.model.model.norm.weight"] = torch.ones(projection.out_features)  # a stray base weight
    torch.save(adapter, adapter_dir / "pytorch_model.bin")
    (adapter_dir / "adapter_config.json").write_text(
        json.dumps({"r": 8, "lora_alpha": 16, "lora_dropout": 0.05, "target_modules": ["q_proj", "v_proj"]})
    )

    # Classifier: Lightning checkpoint of LitIGClassifier(model=ChexpertClassifier(biovil_encoder, fc1, fc2)).
    classifier = reference.classifier.state_dict()
    lightning = {"model." + k.replace("image_encoder.", "biovil_encoder.", 1): v for k, v in classifier.items()}
    lightning["criterion.pos_weight"] = torch.rand(14)
    ckpt_dir = root / "chexpert_train"
    ckpt_dir.mkdir()
    torch.save(
        {"state_dict": lightning, "epoch": 6, "hyper_parameters": {"num_classes": 14, "learning_rate": 1e-5}},
        ckpt_dir / "ChexpertClassifier-epoch=06-val_f1=0.36.ckpt",
    )


def biovil_image_model(config: ImageEncoderConfig):
    from radialog.model.image_encoder import ImageEncoder

    return ImageEncoder(replace(config, projection_dim=16, token_layer_norm=False))


@pytest.fixture(scope="session")
def release(tmp_path_factory):
    root = tmp_path_factory.mktemp("release")
    save_tiny_llama(root / LLM_DIR)
    torch.manual_seed(0)
    reference = RaDialogModel.from_config(tiny_official_config(), device="cpu", base_dir=root)
    with torch.no_grad():
        # The projector RaDialog ran with: what its seeded construction drew (RELEASE_SEED).
        projector = rebuild_projector(reference.config.image_encoder, RELEASE_SEED)
        for name, param in reference.image_encoder.projector.named_parameters():
            param.copy_(projector[name])
        # LoRA B starts at zero; make the adapter matter
        for name, param in reference.language_model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.05)
        for module in reference.modules():  # non-trivial BatchNorm statistics
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(std=0.1)
                module.running_var.uniform_(0.5, 1.5)
    write_release(reference, root)
    return root, reference
