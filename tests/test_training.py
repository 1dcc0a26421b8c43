"""The training pipeline: answer-only loss, the three stages, exact resumption, the train command."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator

from radialog.check_release import check_release, load_alignment_parts, manifest_retrieval_set
from radialog.cli import main
from radialog.data import read_manifest
from radialog.errors import InputError
from radialog.instruct_data.builder import InstructConfig, InstructResult, build_instruct_data, write_instruct_data
from radialog.labeler import RuleBasedLabeler
from radialog.model import FindingsClassifierConfig, ImageEncoderConfig, RaDialogModel, get_preset
from radialog.model.alignment import ALIGNMENT_HEADS_NAME
from radialog.model.checkpoint import WEIGHTS_NAME
from radialog.prompts import build_report_prompt
from radialog.synthetic import SyntheticConfig, make_synthetic_dataset
from radialog.training.config import StageConfig, TrainConfig
from radialog.training.conversations import ConversationSample, report_request, to_conversation
from radialog.training.datasets import (
    ConversationDataset,
    ImageReportDataset,
    blank_xray,
    collate_images,
    make_conversation_collate,
    report_sample,
)
from radialog.training.loop import run_stage
from radialog.training.objectives import (
    ClassifierObjective,
    LanguageObjective,
    answer_turns,
    cache_query_features,
)
from radialog.training.pipeline import train
from radialog.training.tokenization import IGNORE_INDEX, encode_conversation


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synthetic")
    return make_synthetic_dataset(out, count=40, seed=0, config=SyntheticConfig(image_size=128))


def fresh_tiny() -> RaDialogModel:
    torch.manual_seed(0)
    return RaDialogModel.from_config(get_preset("tiny"), device="cpu")


def image_dataset(model: RaDialogModel, manifest: Path) -> tuple[list, ImageReportDataset]:
    records = [r for r in read_manifest(manifest) if r.split == "train"]
    images = ImageReportDataset(
        records, manifest.parent, model.config.image_encoder.processor, model.config.classifier.image_encoder.processor
    )
    return records, images


def test_only_assistant_answers_are_trained(tiny_model):
    messages = [
        {"role": "user", "content": "Describe the image."},
        {"role": "assistant", "content": "A flawed report.", "train": False},
        {"role": "user", "content": "Fix it."},
        {"role": "assistant", "content": "The heart is normal."},
    ]
    input_ids, labels = encode_conversation(tiny_model, messages)
    trained = tiny_model.tokenizer.decode(input_ids[labels != IGNORE_INDEX])
    assert trained == "the heart is normal. [SEP]"  # the answer and its end-of-turn token, nothing else


def test_answer_only_loss_equals_the_causal_lm_loss(tiny_model, synthetic):
    records, images = image_dataset(tiny_model, synthetic)
    cache = cache_query_features(tiny_model, images)
    conversations = ConversationDataset(tiny_model, [report_sample(r, i) for i, r in enumerate(records[:4])], 600)
    batch = make_conversation_collate(tiny_model.tokenizer.pad_token_id)([conversations[i] for i in range(4)])
    objective = LanguageObjective(tiny_model, "lora", images, cache)
    with torch.no_grad():
        loss = objective(batch)
        embeds = tiny_model.alignment.language_projection(cache[batch["image_index"]])
        reference = tiny_model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            image_embeds=embeds,
            labels=batch["labels"],
        ).loss
    torch.testing.assert_close(loss, reference)


def test_answer_turns_number_each_run_of_answer_tokens():
    answer = torch.tensor([[False, True, True, False, True, False], [True, False, False, True, True, True]])
    assert answer_turns(answer).tolist() == [0, 0, 1, 2, 3, 3, 3]


def test_turn_weighting_gives_each_answer_the_same_weight(synthetic):
    model = fresh_tiny()
    records, images = image_dataset(model, synthetic)
    cache = cache_query_features(model, images)
    conversations = ConversationDataset(model, [report_sample(r, i) for i, r in enumerate(records[:4])], 600)
    collate = make_conversation_collate(model.tokenizer.pad_token_id)
    by_token = LanguageObjective(model, "full", images, cache)
    by_turn = LanguageObjective(model, "full", images, cache, answer_weighting="turn")
    # Fit the first sample a little, so the samples' answer losses differ and the two weightings part.
    optimizer = torch.optim.AdamW([p for p in by_token.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(5):
        optimizer.zero_grad()
        by_token(collate([conversations[0]])).backward()
        optimizer.step()
    lengths = torch.tensor([float((conversations[i][1] != IGNORE_INDEX).sum()) for i in range(4)])
    with torch.no_grad():
        each = torch.stack([by_token(collate([conversations[i]])) for i in range(4)])
        batch = collate([conversations[i] for i in range(4)])
        # One answer per sample here: the turn-weighted loss is the mean of the per-sample answer losses,
        # the token-weighted one their mean weighted by answer length.
        torch.testing.assert_close(by_turn(batch), each.mean(), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(by_token(batch), (each * lengths).sum() / lengths.sum(), rtol=1e-4, atol=1e-5)
    assert abs(each.mean() - (each * lengths).sum() / lengths.sum()) > 0.02  # far above the tolerance above


def test_classifier_stage_learns_and_resumes_exactly(synthetic, tmp_path):
    config = StageConfig(max_steps=4, batch_size=4, lr=1e-3, warmup_steps=1)

    def stage(model: RaDialogModel, state_dir: Path, checkpoint_every: int):
        _, images = image_dataset(model, synthetic)
        objective = ClassifierObjective(model)
        return run_stage(
            "classifier", objective, images, collate_images, config, Accelerator(), state_dir, 0, checkpoint_every
        )

    straight = fresh_tiny()
    assert len(stage(straight, tmp_path / "straight", 100).losses) == 4

    # A run that saves its state at step 2 stands for one killed after step 2 …
    stage(fresh_tiny(), tmp_path / "interrupted", 2)
    assert json.loads((tmp_path / "interrupted" / "loop_state.json").read_text())["step"] == 2
    # … and a fresh process picks it up there and ends exactly where the uninterrupted run ended.
    resumed = fresh_tiny()
    assert stage(resumed, tmp_path / "interrupted", 2).resumed_from == 2
    expected, actual = straight.classifier.state_dict(), resumed.classifier.state_dict()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], msg=name)
    assert not torch.equal(straight.classifier.fc2.weight, fresh_tiny().classifier.fc2.weight)


@pytest.fixture(scope="module")
def three_stage_run(synthetic, tmp_path_factory) -> tuple[Path, Path]:
    """`radialog train` through all three stages of `tiny`: (config, output directory)."""
    tmp_path = tmp_path_factory.mktemp("three-stages")
    config = tmp_path / "train.yaml"
    config.write_text(
        f"""
preset: tiny
output_dir: {tmp_path / "run"}
data: {{manifest: {synthetic}}}
classifier: {{max_steps: 2, batch_size: 4}}
alignment: {{max_steps: 2, batch_size: 4, embed_dim: 16, max_text_tokens: 32}}
language: {{max_steps: 2, batch_size: 4, llm: lora}}
eval_max_samples: 2
"""
    )
    assert main(["train", str(config)]) == 0
    return config, tmp_path / "run"


def test_train_command_runs_all_stages_then_skips_them_when_run_again(three_stage_run, synthetic, capsys):
    config, run = three_stage_run
    state = json.loads((run / "trainer_state.json").read_text())
    assert state["completed"] == ["classifier", "alignment", "language"]
    assert all(len(state["losses"][stage]) == 2 for stage in state["completed"])
    n_train = sum(r.split == "train" for r in read_manifest(synthetic))
    assert state["samples"] == dict.fromkeys(state["completed"], n_train)  # one report sample per image
    assert (run / "loss.png").stat().st_size > 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["num_samples"] == 2 and "macro_14" in metrics["ce"]
    capsys.readouterr()

    assert main(["train", str(config)]) == 0  # everything done: nothing is trained again
    assert json.loads((run / "trainer_state.json").read_text()) == state


def text_branch_keys(weights: dict[str, torch.Tensor]) -> list[str]:
    return [k for k in weights if k.startswith("alignment.text_embeddings.") or ".intermediate.dense." in k]


def test_only_the_alignment_checkpoint_keeps_the_text_branch_and_heads(three_stage_run, synthetic):
    from safetensors.torch import load_file

    _, run = three_stage_run
    # Every checkpoint is the inference model: no text branch in its weights or config.
    for checkpoint in ("stage-alignment", "stage-language", "final"):
        assert not text_branch_keys(load_file(str(run / checkpoint / WEIGHTS_NAME))), checkpoint
        loaded = RaDialogModel.from_pretrained(run / checkpoint, device="cpu")
        assert not loaded.config.alignment.text_input and loaded.alignment.text_embeddings is None
    # Stage 1's own parts sit beside its checkpoint only, in the file `radialog check-release` reads.
    assert (
        not (run / "stage-language" / ALIGNMENT_HEADS_NAME).exists()
        and not (run / "final" / ALIGNMENT_HEADS_NAME).exists()
    )
    stage_one = load_file(str(run / "stage-alignment" / ALIGNMENT_HEADS_NAME))
    assert text_branch_keys(stage_one) and {"itm_head.weight", "temp"} <= set(stage_one)
    _, _, alignment, heads = load_alignment_parts(run / "stage-alignment")
    assert heads.vision_proj.out_features == heads.text_proj.out_features == 16  # the config's embed_dim
    assert alignment.text_embeddings is not None  # the trained branch, loaded strictly
    retrieval = check_release(run / "stage-alignment", manifest_retrieval_set(synthetic), seeds=(), keep_stored=True)
    assert len(retrieval.scores) == 1 and 0.0 <= retrieval.scores[0].rank_score <= 1.0
    # The Q-Former that stage 1 trained is the one the later stages kept (the language stage freezes it).
    final = RaDialogModel.from_pretrained(run / "final", device="cpu")
    torch.testing.assert_close(final.alignment.query_tokens, alignment.query_tokens)


def test_bad_training_configs_are_refused(tmp_path):
    with pytest.raises(InputError, match="unknown training config keys"):
        TrainConfig.from_dict({"data": {"manifest": "m.jsonl"}, "epochz": 3})
    with pytest.raises(InputError, match="unknown stages"):
        TrainConfig.from_dict({"data": {"manifest": "m.jsonl"}, "stages": ["vision"]})
    with pytest.raises(InputError, match="needs a `data:` section"):
        TrainConfig.from_dict({"preset": "tiny"})
    with pytest.raises(InputError, match="no such training config"):
        TrainConfig.from_yaml(tmp_path / "absent.yaml")
    with pytest.raises(InputError, match=r"unknown keys in the alignment section: \['embed_dims'\]"):
        TrainConfig.from_dict({"data": {"manifest": "m.jsonl"}, "alignment": {"embed_dims": 64}})
    with pytest.raises(InputError, match="max_grad_norm must be positive"):
        TrainConfig.from_dict({"data": {"manifest": "m.jsonl"}, "language": {"max_grad_norm": 0}})
    with pytest.raises(InputError, match="dtype must be one of"):
        TrainConfig.from_dict({"data": {"manifest": "m.jsonl"}, "dtype": "half"})
    with pytest.raises(InputError, match="dtype bfloat16 needs mixed_precision 'bf16'"):
        TrainConfig.from_dict({"data": {"manifest": "m.jsonl"}, "dtype": "bfloat16"})


def test_stage_settings_come_from_yaml_with_the_documented_defaults(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text(
        "data: {manifest: m.jsonl}\n"
        "alignment: {embed_dim: 64, max_text_tokens: 48}\n"
        "language: {max_grad_norm: null}\n"
        "dtype: bfloat16\nmixed_precision: bf16\n"
    )
    config = TrainConfig.from_yaml(path)
    assert (config.alignment.embed_dim, config.alignment.max_text_tokens) == (64, 48)
    assert config.alignment.lr == 1e-4 and config.alignment.max_grad_norm == 1.0  # the stage's other defaults
    assert config.language.max_grad_norm is None and config.classifier.embed_dim == 256
    assert config.torch_dtype == torch.bfloat16
    assert TrainConfig.from_dict({"data": {"manifest": "m.jsonl"}}).torch_dtype == torch.float32


def test_stages_a_model_lacks_are_refused(synthetic, tmp_path):
    config = TrainConfig.from_dict(
        {"preset": "r2gengpt-tiny", "output_dir": str(tmp_path), "data": {"manifest": str(synthetic)}}
    )
    with pytest.raises(InputError, match="no findings classifier"):
        train(config)


def test_r2gengpt_delta_mode_trains_through_the_train_pipeline(synthetic, tmp_path):
    config = TrainConfig.from_dict(
        {
            "preset": "r2gengpt-tiny",
            "output_dir": str(tmp_path),
            "data": {"manifest": str(synthetic)},
            "stages": ["language"],
            "language": {"max_steps": 2, "batch_size": 4, "llm": "frozen", "vision": "lora"},
            "eval_max_samples": 1,
        }
    )
    result = train(config)
    assert len(result.losses["language"]) == 2 and result.metrics["num_samples"] == 1
    trained = RaDialogModel.from_pretrained(tmp_path / "final", device="cpu")
    assert trained.classifier is None and trained.num_image_tokens == 49


@pytest.mark.parametrize("max_grad_norm", [0.5, None])
def test_gradient_clipping_follows_the_stage_config(synthetic, tmp_path, monkeypatch, max_grad_norm):
    clipped: list[float] = []
    monkeypatch.setattr(Accelerator, "clip_grad_norm_", lambda self, params, max_norm: clipped.append(max_norm))
    model = fresh_tiny()
    _, images = image_dataset(model, synthetic)
    config = StageConfig(max_steps=2, batch_size=4, warmup_steps=1, max_grad_norm=max_grad_norm)
    run_stage("classifier", ClassifierObjective(model), images, collate_images, config, Accelerator(), tmp_path, 0, 100)
    assert clipped == ([max_grad_norm] * 2 if max_grad_norm else [])


def test_a_stage_trains_float32_master_weights_and_stores_them_in_the_models_dtype(synthetic, tmp_path):
    model = fresh_tiny()
    model.classifier.to(torch.bfloat16)
    before = model.classifier.fc2.weight.detach().clone()
    _, images = image_dataset(model, synthetic)
    config = StageConfig(max_steps=2, batch_size=4, lr=1e-2, warmup_steps=1)
    run_stage("classifier", ClassifierObjective(model), images, collate_images, config, Accelerator(), tmp_path, 0, 1)
    # The state saved after step 1 holds what the optimizer updates: float32, BatchNorm statistics too.
    saved = torch.load(tmp_path / "state.pt", weights_only=True)["params"]
    assert {v.dtype for v in saved.values() if v.is_floating_point()} == {torch.float32}
    assert {p.dtype for p in model.classifier.parameters()} == {torch.bfloat16}  # back for saving
    assert {b.dtype for b in model.classifier.buffers() if b.is_floating_point()} == {torch.bfloat16}
    assert not torch.equal(model.classifier.fc2.weight, before)


def test_train_loads_the_model_in_the_configured_dtype(synthetic, tmp_path):
    """bf16 needs autocast (mixed_precision bf16), which accelerate fixes once per process: a fresh one."""
    config = tmp_path / "train.yaml"
    config.write_text(
        f"""
preset: tiny
output_dir: {tmp_path / "run"}
data: {{manifest: {synthetic}}}
stages: [classifier, alignment, language]
classifier: {{max_steps: 1, batch_size: 4}}
alignment: {{max_steps: 1, batch_size: 4}}
language: {{max_steps: 1, batch_size: 4, llm: lora}}
dtype: bfloat16
mixed_precision: bf16
eval_max_samples: 1
"""
    )
    done = subprocess.run(
        [sys.executable, "-m", "radialog.cli", "train", str(config)], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    from safetensors.torch import load_file

    for checkpoint in ("stage-classifier", "stage-alignment", "stage-language", "final"):
        weights = load_file(str(tmp_path / "run" / checkpoint / WEIGHTS_NAME))
        assert {v.dtype for v in weights.values() if v.is_floating_point()} == {torch.bfloat16}, checkpoint
    llm = load_file(str(tmp_path / "run" / "final" / "language_model" / "model.safetensors"))
    assert {v.dtype for v in llm.values()} == {torch.bfloat16}  # the frozen base LLM, stored as loaded
    losses = json.loads((tmp_path / "run" / "trainer_state.json").read_text())["losses"]
    assert all(math.isfinite(loss) for values in losses.values() for loss in values)


@pytest.fixture(scope="module")
def instruct_file(synthetic, tmp_path_factory) -> tuple[Path, int]:
    """`make-instruct`'s samples for every split of the synthetic manifest: (file, samples of training images)."""
    records = read_manifest(synthetic)
    results = {
        split: build_instruct_data(records, RuleBasedLabeler(), InstructConfig(seed=0, split=split))
        for split in ("train", "test")
    }
    path = tmp_path_factory.mktemp("instruct") / "instruct.jsonl"
    write_instruct_data(InstructResult(results["train"].samples + results["test"].samples), path)
    return path, len(results["train"].samples)


@pytest.mark.parametrize(("preset", "llm"), [("tiny", "lora"), ("r2gengpt-tiny", "frozen")])
def test_instruct_training_uses_every_sample_of_the_training_images(synthetic, instruct_file, tmp_path, preset, llm):
    path, n_train = instruct_file
    config = TrainConfig.from_dict(
        {
            "preset": preset,
            "output_dir": str(tmp_path),
            "data": {"manifest": str(synthetic), "instruct": str(path)},
            "stages": ["language"],
            "language": {"max_steps": 2, "batch_size": 4, "llm": llm, "max_length": 1000},
            "eval_max_samples": 1,
        }
    )
    result = train(config)
    assert result.samples["language"] == n_train  # the test images' samples, and only they, left out
    assert len(result.losses["language"]) == 2 and all(math.isfinite(loss) for loss in result.losses["language"])


@pytest.mark.parametrize("preset", ["tiny", "r2gengpt-tiny"])
def test_training_renders_the_report_request_as_the_app_prompts_for_it(preset):
    torch.manual_seed(0)
    model = RaDialogModel.from_config(get_preset(preset), device="cpu")
    encoded = model.encode_image(blank_xray())  # what the app's session starts from
    served = model.processor.render(model.processor.report_conversation(encoded.predicted_findings))
    messages = [report_request(encoded.predicted_findings), {"role": "assistant", "content": "Mild edema."}]
    trained = model.processor.render(to_conversation(model, messages), add_generation_prompt=False)
    assert trained.startswith(served) and trained[len(served) :].strip().startswith("Mild edema.")
    input_ids, _ = encode_conversation(model, messages)
    assert int((input_ids == model.image_token_id).sum()) == model.num_image_tokens


def test_a_sample_with_another_models_image_positions_is_refused_by_name():
    torch.manual_seed(0)
    r2gengpt = RaDialogModel.from_config(get_preset("r2gengpt-tiny"), device="cpu")
    # The old instruct format: RaDialog's prompt text with its 32 placeholders, R2GenGPT reads 49.
    old = [{"role": "user", "content": build_report_prompt("edema")}, {"role": "assistant", "content": "Edema."}]
    with pytest.raises(InputError, match=r"instruct\.jsonl:7 \(r1:RG\): the prompt has 32 image positions.* reads 49"):
        ConversationDataset(r2gengpt, [ConversationSample("instruct.jsonl:7 (r1:RG)", old, 0)], 600)
    unknown = [{"role": "user", "request": "summary"}, {"role": "assistant", "content": "Edema."}]
    with pytest.raises(InputError, match=r"instruct\.jsonl:8: a request must be a user turn"):
        ConversationDataset(r2gengpt, [ConversationSample("instruct.jsonl:8", unknown, 0)], 600)


def test_samples_cut_inside_the_image_positions_are_left_out_with_a_warning(tiny_model, caplog):
    image = ConversationSample("with-image", [report_request("edema"), {"role": "assistant", "content": "Edema."}], 0)
    text = ConversationSample(
        "text-only", [{"role": "user", "content": "Hi."}, {"role": "assistant", "content": "Hello."}], 1
    )
    image_ids, _ = encode_conversation(tiny_model, image.messages)
    text_ids, _ = encode_conversation(tiny_model, text.messages)
    cut_at = int((image_ids == tiny_model.image_token_id).nonzero()[0]) + 4  # 4 of the 32 positions kept
    assert len(text_ids) <= cut_at  # the text-only sample fits whole
    with caplog.at_level("WARNING", logger="radialog.training.datasets"):
        dataset = ConversationDataset(tiny_model, [image, text], cut_at)
    assert len(dataset) == 1 and dataset[0][2] == 1
    assert "1 of 2 conversations left out" in caplog.text and "with-image" in caplog.text
    with pytest.raises(InputError, match="no conversation to train on"):
        ConversationDataset(tiny_model, [image], cut_at)


def test_torchxrayvision_classifier_trains_in_the_classifier_stage(synthetic, tmp_path):
    config = get_preset("tiny")
    # weights=None: a randomly initialised DenseNet, nothing downloaded; 224 px is what it reads.
    processor_side = ImageEncoderConfig(backbone="resnet18", image_size=224, resize=256)
    config.classifier = FindingsClassifierConfig(backend="torchxrayvision", image_encoder=processor_side)
    torch.manual_seed(0)
    start = tmp_path / "start"
    RaDialogModel.from_config(config, device="cpu").save_pretrained(start)
    train_config = TrainConfig.from_dict(
        {
            "checkpoint": str(start),
            "output_dir": str(tmp_path / "run"),
            "data": {"manifest": str(synthetic)},
            "stages": ["classifier"],
            "classifier": {"max_steps": 2, "batch_size": 4, "lr": 1e-2},
            "eval_max_samples": 1,
        }
    )
    result = train(train_config)
    assert len(result.losses["classifier"]) == 2 and all(math.isfinite(loss) for loss in result.losses["classifier"])
    before = RaDialogModel.from_pretrained(start, device="cpu").classifier.model.classifier.weight
    trained = RaDialogModel.from_pretrained(tmp_path / "run" / "final", device="cpu")
    assert not torch.equal(trained.classifier.model.classifier.weight, before)


def test_language_stage_widens_the_lora_and_trains_the_added_modules(synthetic, tmp_path):
    config = TrainConfig.from_dict(
        {
            "preset": "tiny",
            "output_dir": str(tmp_path),
            "data": {"manifest": str(synthetic)},
            "stages": ["language"],
            "language": {"max_steps": 2, "batch_size": 2, "lr": 1e-2, "lora_target_modules": ["up_proj"]},
            "eval_max_samples": 1,
        }
    )
    assert config.language.lora_target_modules == ("up_proj",)
    train(config)
    model = RaDialogModel.from_pretrained(tmp_path / "final", device="cpu")
    assert model.config.lora.target_modules == ("q_proj", "v_proj", "up_proj")
    up_b = [p for n, p in model.language_model.named_parameters() if "up_proj.lora_B" in n]
    assert up_b and all(p.abs().sum() > 0 for p in up_b)  # started at zero, so training moved them


def test_widening_the_lora_of_a_full_or_frozen_llm_is_refused():
    with pytest.raises(InputError, match="lora_target_modules"):
        StageConfig(llm="frozen", lora_target_modules=("up_proj",))
