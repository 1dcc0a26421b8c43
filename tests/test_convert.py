"""Converting RaDialog v1's released files: synthetic checkpoints with the official key names.

The files are built from a `tiny`-sized reference model, renamed by hand into the layouts the public
code writes (LAVIS `Blip2Qformer`, hi-ml `ImageModel`, old-peft adapter + `img_proj_layer`, Lightning
`LitIGClassifier`), with the stage-1 leftovers the real checkpoint carries. Conversion must give a
checkpoint that loads strictly and computes exactly what the reference computes.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from peft.utils import get_peft_model_state_dict
from transformers import LlamaConfig, LlamaForCausalLM

from radialog.cli import main
from radialog.convert import convert
from radialog.errors import CheckpointError
from radialog.model import RaDialogModel, get_preset
from radialog.model.configuration import ImageEncoderConfig, LanguageModelConfig
from radialog.model.image_encoder import rebuild_projector
from radialog.model.language_model import build_byte_tokenizer

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
    """Tensors a LAVIS stage-1 checkpoint has that inference does not use."""
    vocab, inter = 30523, 2 * hidden
    state = {
        "Qformer.bert.embeddings.word_embeddings.weight": torch.randn(vocab, hidden),
        "Qformer.bert.embeddings.position_embeddings.weight": torch.randn(512, hidden),
        "Qformer.bert.embeddings.position_ids": torch.arange(512)[None],
        "Qformer.cls.predictions.bias": torch.randn(vocab),
        "Qformer.cls.predictions.transform.dense.weight": torch.randn(hidden, hidden),
        "Qformer.cls.predictions.transform.LayerNorm.weight": torch.randn(hidden),
        "vision_proj.weight": torch.randn(256, hidden),
        "vision_proj.bias": torch.randn(256),
        "text_proj.weight": torch.randn(256, hidden),
        "itm_head.weight": torch.randn(2, hidden),
        "itm_head.bias": torch.randn(2),
        "temp": torch.tensor(0.07),
    }
    for n in range(layers):
        state[f"Qformer.bert.encoder.layer.{n}.intermediate.dense.weight"] = torch.randn(inter, hidden)
        state[f"Qformer.bert.encoder.layer.{n}.output.dense.weight"] = torch.randn(hidden, inter)
        state[f"Qformer.bert.encoder.layer.{n}.output.LayerNorm.weight"] = torch.randn(hidden)
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


@pytest.fixture(scope="module")
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


def test_converted_checkpoint_loads_strictly_and_matches_the_reference(release, tmp_path):
    root, reference = release
    report = convert(root, tmp_path / "ckpt", "report", tiny_official_config(), projector_seed=RELEASE_SEED)
    assert report.ok and not report.missing and not report.unexpected
    unused = set(report.unused.values())
    assert {"stage-1 ITC/ITM heads", "stage-1 contrastive temperature", "stage-1 language-modelling head"} <= unused
    assert "BioViL-T's 128-d projector, replaced by RaDialog's 1408-d one" in unused
    assert "training loss weights" in unused and "base LLM weights (taken from Vicuna)" in unused

    converted = RaDialogModel.from_pretrained(tmp_path / "ckpt", device="cpu")
    torch.manual_seed(3)
    size = reference.config.image_encoder.image_size
    pixels = torch.rand(2, 3, size, size)
    with torch.no_grad():
        assert torch.equal(converted.get_image_features(pixels), reference.get_image_features(pixels))
        assert torch.equal(converted.classifier(pixels), reference.classifier(pixels))
        embeds = reference.get_image_features(pixels[:1])
        ids = torch.tensor([[1, 40, 41] + [converted.image_token_id] * 32 + [42, 43]])
        assert torch.equal(converted(ids, image_embeds=embeds).logits, reference(ids, image_embeds=embeds).logits)
    assert converted.component_state_dict().keys() == reference.component_state_dict().keys()


def test_the_projector_comes_from_its_seed_and_another_seed_gives_other_image_features(release, tmp_path):
    root, reference = release
    report = convert(root, tmp_path / "right", "report", tiny_official_config(), projector_seed=RELEASE_SEED)
    assert f"5 projector tensors rebuilt from seed {RELEASE_SEED}" in report.summary()
    convert(root, tmp_path / "wrong", "report", tiny_official_config(), projector_seed=16)
    pixels = torch.rand(1, 3, 128, 128)
    right = RaDialogModel.from_pretrained(tmp_path / "right", device="cpu")
    wrong = RaDialogModel.from_pretrained(tmp_path / "wrong", device="cpu")
    with torch.no_grad():
        assert torch.equal(right.get_image_features(pixels), reference.get_image_features(pixels))
        assert not torch.allclose(wrong.get_image_features(pixels), reference.get_image_features(pixels))
    # The BatchNorm statistics are the stage-1 checkpoint's, whatever the seed.
    stats = "image_encoder.projector.model.1.running_var"
    assert torch.equal(wrong.component_state_dict()[stats], reference.component_state_dict()[stats])


def test_unknown_key_is_reported_and_nothing_is_written(release, tmp_path):
    root, _ = release
    broken = tmp_path / "release"
    shutil.copytree(root, broken)
    checkpoint = torch.load(root / "checkpoint_4.pth", weights_only=True)
    checkpoint["model"]["Qformer.bert.encoder.layer.0.surprise.weight"] = torch.zeros(1)
    torch.save(checkpoint, broken / "checkpoint_4.pth")
    with pytest.raises(
        CheckpointError, match=r"unexpected: 1: checkpoint_4\.pth:Qformer\.bert\.encoder\.layer\.0\.surprise"
    ):
        convert(broken, tmp_path / "out", "report", tiny_official_config())
    assert not (tmp_path / "out").exists()


def test_cli_reports_the_missing_stage1_checkpoint_in_one_line_without_a_traceback(tmp_path, capsys):
    code = main(["convert", "--source", str(tmp_path), "--to", str(tmp_path / "out")])
    assert code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == f"radialog convert: error: stage-1 checkpoint not found under {tmp_path} (see checkpoints/README.md)"
