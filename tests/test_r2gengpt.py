"""R2GenGPT as a preset: Swin → Linear + LayerNorm → 49 image positions in a frozen LLM, its prompt, multi-view
fusion, conversion of its three checkpoint kinds, and its shallow / delta / deep training modes."""

from __future__ import annotations

import json
import re
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from PIL import Image

from radialog.cli import main
from radialog.commands.params import count
from radialog.convert_r2gengpt import convert_r2gengpt
from radialog.errors import InputError
from radialog.model import RaDialogConfig, RaDialogModel, get_preset
from radialog.prompts import Conversation, build_r2gengpt_report_prompt
from radialog.training.config import R2GENGPT_MODES, StageConfig
from radialog.training.datasets import ImageReportDataset, make_conversation_collate
from radialog.training.loop import run_stage
from radialog.training.objectives import LanguageObjective, cache_query_features, set_language_stage_trainable
from radialog.training.tokenization import encode_conversation

PROMPT = (
    "Human: <Img>" + "<IMG>" * 49 + "</Img> Generate a comprehensive and detailed diagnosis report for this "
    "chest xray image. \nAssistant:"
)


# Swin names now → in R2GenGPT's checkpoints (transformers before v5).
OLD_SWIN_NAMES = (
    ("attention.q_proj", "attention.self.query"),
    ("attention.k_proj", "attention.self.key"),
    ("attention.v_proj", "attention.self.value"),
    ("attention.relative_position_bias.relative_position_bias_table", "attention.self.relative_position_bias_table"),
    ("attention.o_proj", "attention.output.dense"),
    ("mlp.fc1", "intermediate.dense"),
    ("mlp.fc2", "output.dense"),
)


def report_conversation() -> Conversation:
    conversation = Conversation()
    conversation.add_user(build_r2gengpt_report_prompt(49))
    conversation.add_assistant(None)
    return conversation


def fresh(seed: int = 0) -> RaDialogModel:
    torch.manual_seed(seed)
    return RaDialogModel.from_config(get_preset("r2gengpt-tiny"), device="cpu")


@pytest.fixture(scope="module")
def model() -> RaDialogModel:
    return fresh()


def test_report_command_runs_without_a_classifier(chest_dicom, capsys):
    assert main(["report", str(chest_dicom), "--preset", "r2gengpt-tiny", "--json", "--max-new-tokens", "4"]) == 0
    output = json.loads(capsys.readouterr().out)
    assert output["findings"] == {} and isinstance(output["report"], str)


def test_prompt_wording_and_49_image_positions(model, chest_dicom):
    from radialog.imaging import load_xray

    encoded = model.encode_image(load_xray(chest_dicom))
    assert encoded.image_embeds.shape == (1, 49, 64) and encoded.probabilities == {}
    conversation = model.processor.report_conversation(encoded.predicted_findings)
    assert model.processor.render(conversation) == PROMPT
    ids = model.processor.tokenize(conversation)
    assert ids[0, 0] == model.tokenizer.bos_token_id and int((ids == model.image_token_id).sum()) == 49
    # Follow-up turns keep the Human/Assistant frame.
    conversation.messages[-1] = ("ASSISTANT", "no acute findings.")
    conversation.add_user("Is there any edema?")
    conversation.add_assistant(None)
    follow_up = f" no acute findings.{model.tokenizer.eos_token}Human: Is there any edema? \nAssistant:"
    assert model.processor.render(conversation) == PROMPT + follow_up


def test_views_are_averaged_before_the_projection(model):
    pixels = torch.randn(2, 3, 3, 112, 112)  # (B, V, 3, S, S)
    with torch.no_grad():
        fused = model.get_image_features(pixels)
        tokens = torch.stack([model.image_encoder.visual_tokens(pixels[:, v]) for v in range(3)]).mean(0)
        torch.testing.assert_close(fused, model.alignment(tokens))
        torch.testing.assert_close(model.get_image_features(pixels[:, :1]), model.get_image_features(pixels[:, 0]))
    assert fused.shape == (2, 49, 64)


def test_parameter_counts_match_the_paper():
    trainable, total = count("r2gengpt", "delta")
    assert trainable == 4_976_640 and round(100 * trainable / total, 2) == 0.07  # paper: ~5M, 0.07%


# ------------------------------------------------------------------------------------------------ conversion
def r2gengpt_key(key: str) -> str:
    """Our parameter name → the one R2GenGPT's LightningModule saves (the inverse of the converter)."""
    if key.startswith("alignment.language_projection.norm."):
        return "layer_norm." + key.rsplit(".", 1)[1]
    if key.startswith("alignment.language_projection."):
        return "llama_proj." + key.rsplit(".", 1)[1]
    key = key.removeprefix("image_encoder.swin.")
    for new, old in OLD_SWIN_NAMES:
        key = key.replace(new, old)
    return ("visual_encoder.base_model.model." if ".lora_" in key else "visual_encoder.") + key


@pytest.mark.parametrize("mode", list(R2GENGPT_MODES))
def test_r2gengpt_checkpoints_convert_exactly(mode, tmp_path):
    reference = fresh(seed=1)
    source = tmp_path / "source"
    reference.save_pretrained(source)  # the random LLM lands in source/language_model
    # A released LLM folder (llama-2-7b-chat/) carries its tokenizer; so does this stand-in.
    shutil.copytree(source / "tokenizer", source / "language_model", dirs_exist_ok=True)
    reference.image_encoder.swin.save_pretrained(source / "swin")  # stands in for swin-base-patch4-window7-224
    set_language_stage_trainable(reference, "frozen", R2GENGPT_MODES[mode]["vision"])
    with torch.no_grad():  # trained weights differ from the pretrained ones
        for p in reference.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    state = {r2gengpt_key(n): p.detach().clone() for n, p in reference.named_parameters() if p.requires_grad}
    assert any(re.search(r"attention\.self\.query\.lora_A\.default", k) for k in state) == (mode == "delta")
    checkpoint = tmp_path / "r2gengpt.pth"
    torch.save({"model": state, "config": {"vis_r": 16, "vis_alpha": 16}, "epoch": 1, "step": 9}, checkpoint)

    config = RaDialogConfig.load(source)
    config.image_encoder.pretrained = "swin"
    report = convert_r2gengpt(checkpoint, source, tmp_path / "converted", config)
    assert report.ok and not report.unexpected, report.summary()
    converted = RaDialogModel.from_pretrained(tmp_path / "converted", device="cpu")
    assert converted.config.name == f"r2gengpt-{mode}"

    reference.eval()
    pixels, ids = torch.randn(1, 3, 112, 112), reference.processor.tokenize(report_conversation())
    with torch.no_grad():
        expected = reference(ids, pixel_values=pixels).logits
        if mode == "delta":  # LoRA merged into W: the same sums in another order
            torch.testing.assert_close(converted(ids, pixel_values=pixels).logits, expected)
            reference.save_pretrained(tmp_path / "merged")  # our own save merges the same way, exactly
            expected = RaDialogModel.from_pretrained(tmp_path / "merged", device="cpu")(ids, pixel_values=pixels).logits
        assert torch.equal(converted(ids, pixel_values=pixels).logits, expected)


# ------------------------------------------------------------------------------------------------ training
@pytest.fixture(scope="module")
def images(tmp_path_factory) -> ImageReportDataset:
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    records = []
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (96, 96), dtype=np.uint8)).save(folder / f"{i}.png")
        records.append(SimpleNamespace(image=f"{i}.png", labels=None, findings=f"report number {i} ."))
    processor = get_preset("r2gengpt-tiny").image_encoder.processor
    return ImageReportDataset(records, folder, processor, processor)


@pytest.mark.parametrize("mode", list(R2GENGPT_MODES))
def test_each_mode_trains_exactly_its_parameters(mode, images, tmp_path):
    model, settings = fresh(), R2GENGPT_MODES[mode]
    samples = []
    for i, record in enumerate(images.records):
        messages = [
            {"role": "user", "content": build_r2gengpt_report_prompt(49)},
            {"role": "assistant", "content": record.findings},
        ]
        input_ids, labels = encode_conversation(model, messages, max_length=600)
        samples.append((input_ids, labels, i, True))
    cache = cache_query_features(model, images) if settings["vision"] == "frozen" else None
    objective = LanguageObjective(model, settings["llm"], images, cache, settings["vision"])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    stage = StageConfig(max_steps=2, batch_size=2, lr=1e-2, warmup_steps=0)
    collate = make_conversation_collate(model.tokenizer.pad_token_id)
    run_stage("language", objective, samples, collate, stage, Accelerator(cpu=True), tmp_path / "state", 0, 100)

    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    projection = {n for n in before if n.startswith("alignment.language_projection.")}
    encoder = {n for n in before if n.startswith("image_encoder.")}
    lora = {n for n in encoder if ".lora_" in n}
    expected = {"shallow": projection, "delta": projection | lora, "deep": projection | encoder}[mode]
    assert changed == expected and len(projection) == 4
    assert bool(lora) == (mode == "delta")

    if mode == "delta":  # saved with LoRA merged into the Swin: reloads as a plain model with the same outputs
        model.save_pretrained(tmp_path / "trained")
        reloaded = RaDialogModel.from_pretrained(tmp_path / "trained", device="cpu")
        assert not any(".lora_" in n for n, _ in reloaded.named_parameters())
        pixels = torch.randn(1, 3, 112, 112)
        with torch.no_grad():
            torch.testing.assert_close(reloaded.get_image_features(pixels), model.get_image_features(pixels))


def test_vision_lora_needs_an_encoder_with_targets():
    torch.manual_seed(0)
    radialog = RaDialogModel.from_config(get_preset("tiny"), device="cpu")
    with pytest.raises(InputError, match="no LoRA targets"):
        set_language_stage_trainable(radialog, "lora", "lora")


def test_conversation_renders_in_r2gengpt_frame_without_system_prompt():
    conversation = Conversation()
    conversation.add_user("hello")
    conversation.add_assistant(None)
    assert conversation.render_r2gengpt() == "Human: hello \nAssistant:"


def test_chat_session_without_findings(model, chest_dicom):
    from radialog.chat import Session, Task
    from radialog.imaging import load_xray

    session = Session.start(model, load_xray(chest_dicom))
    pending = session.prepare(Task.QUESTION, "Is there any edema?")
    assert pending.prompt == f"<Img>{'<IMG>' * 49}</Img> Is there any edema?"
    assert session.prepare(Task.REPORT).min_new_tokens == model.config.generation.report_min_new_tokens
    record = session.record()
    assert record["model"] == "r2gengpt-tiny" and record["findings"] == {} and record["positive_findings"] == []


def test_api_names_the_model_that_answers(model, chest_dicom):
    from fastapi.testclient import TestClient

    from radialog.app.api import create_api
    from radialog.app.studies import StudyStore
    from radialog.app.worker import ModelWorker
    from radialog.model.loading import ModelSource

    worker = ModelWorker.from_model(model, ModelSource(preset="r2gengpt-tiny"))
    with TestClient(create_api(worker, StudyStore())) as client:
        assert client.get("/readyz").json()["model_name"] == "r2gengpt-tiny"
        files = {"file": ("xray.dcm", chest_dicom.read_bytes(), "application/octet-stream")}
        study = client.post("/v1/studies", files=files).json()
        fetched = client.get(f"/v1/studies/{study['id']}").json()
    assert fetched["model_name"] == "r2gengpt-tiny" and fetched["findings"] == {} and fetched["positive_findings"] == []
