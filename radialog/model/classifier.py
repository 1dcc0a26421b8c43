"""CheXpert findings classifiers: RaDialog's BioViL-T + MLP head, or torchxrayvision's DenseNet.

Both map a preprocessed image batch to 14 logits (`forward`, what training's BCE reads) and
probabilities (`probabilities`) in `CHEXPERT_LABELS` order; a label the backend cannot predict is NaN
in both.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
from torch import nn

from radialog.errors import CheckpointError
from radialog.labels import CHEXPERT_LABELS
from radialog.model.configuration import FindingsClassifierConfig
from radialog.model.image_encoder import ImageEncoder

logger = logging.getLogger(__name__)

# torchxrayvision pathology names → ours. "No Finding", "Pleural Other" and "Support Devices" have no
# output in its CheXpert model and stay NaN.
_XRV_TO_CHEXPERT = {"Effusion": "Pleural Effusion"}


class FindingsClassifier(nn.Module):
    """RaDialog's classifier: BioViL-T projected patches (B, 128, 16, 16) → avg-pool 4 → MLP → 14 logits."""

    def __init__(self, config: FindingsClassifierConfig) -> None:
        super().__init__()
        self.config = config
        self.image_encoder = ImageEncoder(config.image_encoder)
        self.fc1 = nn.Linear(config.pooled_dim, config.hidden_dim)
        self.fc2 = nn.Linear(config.hidden_dim, len(CHEXPERT_LABELS))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) → (B, 14) logits."""
        patches = self.image_encoder(image).projected_patch_embeddings
        pooled = nn.functional.avg_pool2d(patches, self.config.pool_size).flatten(1)
        return self.fc2(torch.relu(self.fc1(pooled)))

    def probabilities(self, image: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.forward(image))


class XRVFindingsClassifier(nn.Module):
    """torchxrayvision's DenseNet-121 CheXpert model, loaded from a local state dict (no downloads)."""

    def __init__(self, config: FindingsClassifierConfig) -> None:
        super().__init__()
        import torchxrayvision as xrv

        self.config = config
        self.model = xrv.models.DenseNet(weights=None, num_classes=18, apply_sigmoid=False)
        self.model.op_threshs = None
        # The chex weights fill 11 of the 18 slots of xrv's default pathology list.
        names = [_XRV_TO_CHEXPERT.get(n, n) for n in xrv.datasets.default_pathologies]
        self._slots = [names.index(label) if label in names else -1 for label in CHEXPERT_LABELS]
        if config.xrv_weights is not None:
            self.load_weights(config.xrv_weights)

    def load_weights(self, path: str | Path) -> None:
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"torchxrayvision weights not found: {path}")
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, nn.Module):
            state = state.state_dict()
        self.model.load_state_dict(state, strict=True)

    @staticmethod
    def to_xrv_input(image: torch.Tensor) -> torch.Tensor:
        """Our [0, 1] 3-channel batch → xrv's [-1024, 1024] single channel at 224 px."""
        gray = image[:, :1]
        gray = nn.functional.interpolate(gray, size=(224, 224), mode="bilinear", align_corners=False, antialias=True)
        return gray * 2048.0 - 1024.0

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) → (B, 14) logits; NaN for the labels the DenseNet has no output for."""
        logits = self.model(self.to_xrv_input(image))
        nan = torch.full_like(logits[:, :1], math.nan)
        return torch.cat([logits[:, i : i + 1] if i >= 0 else nan for i in self._slots], dim=1)

    def probabilities(self, image: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.forward(image))  # NaN stays NaN


def build_findings_classifier(config: FindingsClassifierConfig) -> FindingsClassifier | XRVFindingsClassifier:
    if config.backend == "torchxrayvision":
        return XRVFindingsClassifier(config)
    return FindingsClassifier(config)


def positive_findings(probabilities: dict[str, float], threshold: float) -> list[str]:
    """Labels whose probability exceeds `threshold`, in CheXpert order (NaN never counts)."""
    return [label for label in CHEXPERT_LABELS if probabilities.get(label, math.nan) > threshold]
