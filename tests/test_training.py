"""The training pipeline: answer-only loss, the three stages, exact resumption, the train command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator

from radialog.cli import main
from radialog.data import read_manifest
from radialog.errors import InputError
from radialog.model import RaDialogModel, get_preset
from radialog.synthetic import SyntheticConfig, make_synthetic_dataset
from radialog.training.config import StageConfig, TrainConfig
from radialog.training.datasets import (
    ConversationDataset,
    ImageReportDataset,
    collate_images,
    make_conversation_collate,
    report_messages,
)
from radialog.training.loop import run_stage
from radialog.training.objectives import ClassifierObjective, LanguageObjective, cache_query_features
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
    input_ids, labels = encode_conversation(tiny_model, messages, max_length=512)
    trained = tiny_model.tokenizer.decode(input_ids[labels != IGNORE_INDEX])
    assert trained == "the heart is normal. [SEP]"  # the answer and its end-of-turn token, nothing else


def test_answer_only_loss_equals_the_causal_lm_loss(tiny_model, synthetic):
    records, images = image_dataset(tiny_model, synthetic)
    cache = cache_query_features(tiny_model, images)
    conversations = ConversationDataset(
        tiny_model, [report_messages(tiny_model, r) for r in records[:4]], range(4), 600
    )
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


def test_train_command_runs_all_stages_then_skips_them_when_run_again(synthetic, tmp_path, capsys):
    config = tmp_path / "train.yaml"
    config.write_text(
        f"""
preset: tiny
output_dir: {tmp_path / "run"}
data: {{manifest: {synthetic}}}
classifier: {{max_steps: 2, batch_size: 4}}
alignment: {{max_steps: 2, batch_size: 4}}
language: {{max_steps: 2, batch_size: 4, llm: lora}}
eval_max_samples: 2
"""
    )
    assert main(["train", str(config)]) == 0
    run = tmp_path / "run"
    state = json.loads((run / "trainer_state.json").read_text())
    assert state["completed"] == ["classifier", "alignment", "language"]
    assert all(len(state["losses"][stage]) == 2 for stage in state["completed"])
    assert (run / "loss.png").stat().st_size > 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["num_samples"] == 2 and "macro_14" in metrics["ce"]
    trained = RaDialogModel.from_pretrained(run / "final", device="cpu")
    assert trained.config.alignment.text_input  # stage 1 added the Q-Former's text branch
    capsys.readouterr()

    assert main(["train", str(config)]) == 0  # everything done: nothing is trained again
    assert json.loads((run / "trainer_state.json").read_text()) == {**state, "completed": state["completed"]}


def test_bad_training_configs_are_refused(tmp_path):
    with pytest.raises(InputError, match="unknown training config keys"):
        TrainConfig.from_dict({"data": {"manifest": "m.jsonl"}, "epochz": 3})
    with pytest.raises(InputError, match="unknown stages"):
        TrainConfig.from_dict({"data": {"manifest": "m.jsonl"}, "stages": ["vision"]})
    with pytest.raises(InputError, match="needs a `data:` section"):
        TrainConfig.from_dict({"preset": "tiny"})
    with pytest.raises(InputError, match="no such training config"):
        TrainConfig.from_yaml(tmp_path / "absent.yaml")


def test_stages_a_model_lacks_are_refused(synthetic, tmp_path):
    from radialog.training.pipeline import train

    config = TrainConfig.from_dict(
        {"preset": "r2gengpt-tiny", "output_dir": str(tmp_path), "data": {"manifest": str(synthetic)}}
    )
    with pytest.raises(InputError, match="no findings classifier"):
        train(config)


def test_r2gengpt_delta_mode_trains_through_the_train_pipeline(synthetic, tmp_path):
    from radialog.training.pipeline import train

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
