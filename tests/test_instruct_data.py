"""The instruct data builder on a small manifest of hand-written reports, and its teacher path."""

from __future__ import annotations

import json

import pytest
import torch

from radialog.cli import main
from radialog.data import ManifestRecord, write_manifest
from radialog.instruct_data.builder import (
    InstructConfig,
    build_instruct_data,
    read_predictions,
    stratified_indices,
)
from radialog.instruct_data.correction import SentencePool, make_correction
from radialog.instruct_data.teacher import TeacherConfig
from radialog.labeler import RuleBasedLabeler
from radialog.labels import CHEXPERT_LABELS
from radialog.prompts import IMAGE_PLACEHOLDER, format_predicted_findings
from radialog.training.conversations import report_request

REPORTS = [
    ("The heart is enlarged. The lungs are clear. No pleural effusion.", ["Cardiomegaly"]),
    ("Small right pleural effusion. Heart size is normal. No pneumothorax.", ["Pleural Effusion"]),
    ("There is a right upper lobe consolidation. No pneumothorax.", ["Consolidation"]),
    ("The lungs are clear. Heart size is normal. No pneumothorax or effusion.", ["No Finding"]),
    ("Left apical pneumothorax. The heart is normal in size.", ["Pneumothorax"]),
    ("Endotracheal tube in standard position. Lungs are clear.", ["No Finding", "Support Devices"]),
]


def _records(n: int = 60) -> list[ManifestRecord]:
    records = []
    for i in range(n):
        text, positives = REPORTS[i % len(REPORTS)]
        labels = dict.fromkeys(CHEXPERT_LABELS)
        for name in positives:
            labels[name] = 1
        split = "test" if i % 10 == 9 else "train"
        records.append(ManifestRecord(f"r{i}", f"images/r{i}.png", text, labels=labels, split=split))
    return records


def test_tasks_and_conversation_format():
    records = {r.id: r for r in _records()}
    result = build_instruct_data(list(records.values()), RuleBasedLabeler(), InstructConfig(seed=1))
    tasks = {s["task"] for s in result.samples}
    assert tasks == {"RG", "CO", "CPbQA", "CPaQA", "EL", "SU"}  # EL/SU from the template teacher
    assert result.stats["skipped"]["RQA (no teacher model)"] > 0
    assert sum(result.stats["tasks"].values()) == result.stats["samples"] == len(result.samples)
    for sample in result.samples:
        first = sample["messages"][0]
        # The report request is stored as what it asks: each model renders it in its own prompt.
        assert first == report_request(format_predicted_findings(records[sample["id"].split(":")[0]].positive_labels()))
        assert IMAGE_PLACEHOLDER not in json.dumps(sample)
        assert all("content" in m for m in sample["messages"][1:])  # every later turn is plain text
        assert [m["role"] for m in sample["messages"]] == ["user", "assistant"] * (len(sample["messages"]) // 2)
        assert sample["image"].startswith("images/r") and not sample["image"].endswith(("9.png",))
        if sample["task"] != "RG":
            assert sample["messages"][1]["train"] is False and "train" not in sample["messages"][3]
        if sample["task"] == "CPbQA":
            assert sample["messages"][3]["content"] in ("yes", "no")


def test_stratified_sampling_doubles_findings_and_cuts_no_finding():
    records = _records(600)
    import random

    indices = stratified_indices(records, random.Random(0))
    with_finding = [i for i in indices if records[i].labels["No Finding"] != 1]
    assert len(with_finding) == 2 * 400  # 4 of 6 reports have a finding, each twice
    assert len(indices) - len(with_finding) == int(800 * 14 / 13 / 14)


def test_binary_qa_is_mostly_positive_when_possible():
    records = [r for r in _records(3000) if r.labels["No Finding"] != 1]
    result = build_instruct_data(records, RuleBasedLabeler(), InstructConfig(seed=0))
    answers = [s["messages"][3]["content"] for s in result.samples if s["task"] == "CPbQA"]
    assert 0.53 < answers.count("yes") / len(answers) < 0.67


def test_correction_answers_with_the_reference():
    labeler = RuleBasedLabeler()
    pool = SentencePool([text for text, _ in REPORTS], labeler)
    import random

    rng = random.Random(0)
    corrections = [make_correction(REPORTS[0][0], pool, labeler, rng) for _ in range(20)]
    assert all(c is not None for c in corrections)
    for c in corrections:
        assert c.wrong_report != REPORTS[0][0]
        for name in c.add + c.remove:
            assert name.lower() in c.instruction
    assert any("cardiomegaly" in c.instruction for c in corrections)  # dropped the enlarged heart
    assert any(c.remove for c in corrections)  # inserted a finding from another report


def test_same_seed_same_file_and_cli(tmp_path, capsys):
    manifest = tmp_path / "manifest.jsonl"
    write_manifest(_records(), manifest)
    outputs = []
    for name, seed in (("a", "3"), ("b", "3"), ("c", "4")):
        out = tmp_path / f"{name}.jsonl"
        assert main(["make-instruct", str(manifest), "--out", str(out), "--seed", seed]) == 0
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1] != outputs[2]
    stats = json.loads((tmp_path / "a.stats.json").read_text())
    assert stats["tasks"]["RG"] > 0 and stats["samples"] == len(outputs[0].splitlines())
    assert '"tasks"' in capsys.readouterr().out

    out = tmp_path / "small.jsonl"
    assert main(["make-instruct", str(manifest), "--out", str(out), "--size", "10"]) == 0
    assert len(out.read_text().splitlines()) == 10


def test_predictions_override_the_predicted_findings(tmp_path):
    predictions = tmp_path / "pred.jsonl"
    predictions.write_text("".join(json.dumps({"id": f"r{i}", "labels": {"Edema": 1}}) + "\n" for i in range(60)))
    result = build_instruct_data(_records(), RuleBasedLabeler(), predictions=read_predictions(predictions))
    assert {s["messages"][0]["predicted_findings"] for s in result.samples} == {"edema"}


def test_teacher_answers_rqa_el_su(tmp_path):
    """A tiny random Llama stands in for Vicuna-13b: it only has to generate something."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from radialog.model.language_model import build_byte_tokenizer

    tokenizer = build_byte_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model_dir = tmp_path / "teacher"
    LlamaForCausalLM(config).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    teacher = TeacherConfig(str(model_dir), batch_size=4, max_new_tokens=5)
    result = build_instruct_data(_records(30), RuleBasedLabeler(), InstructConfig(seed=0, teacher=teacher))
    answered = [s for s in result.samples if s["task"] in ("RQA", "EL", "SU")]
    assert {s["task"] for s in answered} == {"RQA", "EL", "SU"}
    assert all(s["messages"][3]["content"] for s in answered)
    assert "RQA (no teacher model)" not in result.stats["skipped"]


def test_no_training_records_is_an_input_error():
    from radialog.errors import InputError

    with pytest.raises(InputError, match="split 'train'"):
        build_instruct_data([r for r in _records() if r.split == "test"], RuleBasedLabeler())
