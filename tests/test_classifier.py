"""CheXpert findings classifiers and RaDialog's findings text."""

from __future__ import annotations

import math

import pytest
import torch

from radialog.labels import CHEXPERT_LABELS
from radialog.model import FindingsClassifier, FindingsClassifierConfig, XRVFindingsClassifier
from radialog.model.classifier import positive_findings
from radialog.prompts import format_predicted_findings


def test_radialog_classifier_head_shapes_match_the_released_one():
    model = FindingsClassifier(FindingsClassifierConfig())
    assert model.fc1.weight.shape == (512, 2048)  # 128 channels × (16 / 4)² pooled cells
    assert model.fc2.weight.shape == (14, 512)
    assert model.config.image_encoder.temporal_grid_size == 16  # 488 crop


def test_classifier_outputs_14_probabilities():
    config = FindingsClassifierConfig(
        image_encoder=FindingsClassifierConfig().image_encoder.__class__(
            backbone="resnet18",
            image_size=224,
            resize=256,
            temporal_dim=32,
            projection_dim=16,
            token_layer_norm=False,
        ),
        pool_size=7,
        hidden_dim=32,
    )
    probs = FindingsClassifier(config).eval().probabilities(torch.rand(2, 3, 224, 224))
    assert probs.shape == (2, 14) and ((probs > 0) & (probs < 1)).all()


def test_torchxrayvision_backend_loads_local_weights_and_marks_missing_labels(tmp_path):
    import torchxrayvision as xrv

    torch.manual_seed(0)
    source = xrv.models.DenseNet(weights=None, num_classes=18, apply_sigmoid=False)
    path = tmp_path / "chex.pt"
    torch.save(source.state_dict(), path)
    model = XRVFindingsClassifier(FindingsClassifierConfig(backend="torchxrayvision", xrv_weights=str(path))).eval()
    with torch.no_grad():
        probs = model.probabilities(torch.rand(1, 3, 488, 488))[0]
    by_label = dict(zip(CHEXPERT_LABELS, probs.tolist(), strict=True))
    assert all(math.isnan(by_label[label]) for label in ("No Finding", "Pleural Other", "Support Devices"))
    assert not math.isnan(by_label["Pleural Effusion"]) and not math.isnan(by_label["Cardiomegaly"])


def test_torchxrayvision_outputs_land_on_the_matching_labels_as_logits():
    """xrv's DenseNet orders its 18 outputs its own way ("Effusion" among them): each must reach our label."""
    import torchxrayvision as xrv

    model = XRVFindingsClassifier(FindingsClassifierConfig(backend="torchxrayvision")).eval()
    slot = {name: i for i, name in enumerate(xrv.datasets.default_pathologies)}
    with torch.no_grad():  # every output but Effusion's and Cardiomegaly's strongly negative, whatever the image
        model.model.classifier.weight.zero_()
        model.model.classifier.bias.fill_(-10.0)
        model.model.classifier.bias[slot["Effusion"]] = 3.0
        model.model.classifier.bias[slot["Cardiomegaly"]] = 1.0
        logits = model(torch.rand(2, 3, 224, 224))
        probs = model.probabilities(torch.rand(2, 3, 224, 224))
    assert logits.shape == (2, 14)
    by_label = dict(zip(CHEXPERT_LABELS, logits[0].tolist(), strict=True))
    assert by_label["Pleural Effusion"] == pytest.approx(3.0) and by_label["Cardiomegaly"] == pytest.approx(1.0)
    assert by_label["Edema"] == pytest.approx(-10.0) and math.isnan(by_label["No Finding"])
    torch.testing.assert_close(probs, torch.sigmoid(logits), equal_nan=True)  # the same mapping


def test_torchxrayvision_backend_reports_missing_weights(tmp_path):
    from radialog.errors import CheckpointError

    with pytest.raises(CheckpointError, match="not found"):
        XRVFindingsClassifier(FindingsClassifierConfig(backend="torchxrayvision", xrv_weights=str(tmp_path / "x.pt")))


def test_positive_findings_use_the_threshold_and_ignore_nan():
    probs = dict.fromkeys(CHEXPERT_LABELS, 0.1) | {"Cardiomegaly": 0.7, "Edema": 0.5, "Fracture": math.nan}
    assert positive_findings(probs, 0.5) == ["Cardiomegaly"]


@pytest.mark.parametrize(
    ("labels", "text"),
    [
        ([], "no common findings"),
        (["No Finding"], "no finding"),
        (["No Finding", "Support Devices"], "no finding, support devices"),
        (["No Finding", "Cardiomegaly", "Pleural Effusion"], "cardiomegaly, pleural effusion"),
        (["Lung Opacity", "Support Devices"], "lung opacity, support devices"),
    ],
)
def test_predicted_findings_text_follows_radialog(labels, text):
    assert format_predicted_findings(labels) == text
