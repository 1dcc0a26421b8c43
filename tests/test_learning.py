"""The learning check: `tiny`, trained end to end on synthetic radiographs, learns to see.

Both runs use the same recipe (all three stages, same steps and seed); the image-blind one sees
blank images in training and evaluation. Clinical efficacy is the macro F1, over the findings
present in the held-out references, of the labels the rule-based labeler reads in the generated
reports against the findings drawn into the images.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from radialog.synthetic import SyntheticConfig, make_synthetic_dataset
from radialog.training.config import TrainConfig
from radialog.training.pipeline import train

pytestmark = pytest.mark.slow

RECIPE = {
    "preset": "tiny",
    "classifier": {"max_steps": 150, "batch_size": 16, "lr": 2.0e-3, "warmup_steps": 10},
    "alignment": {"max_steps": 20, "batch_size": 32, "lr": 1.0e-4},
    "language": {"max_steps": 300, "batch_size": 16, "lr": 3.0e-3, "llm": "full", "warmup_steps": 20},
    "eval_max_samples": 100,
    "checkpoint_every": 1000,
    "seed": 0,
}
MARGIN = 0.25  # how much better than the image-blind model the seeing model must be


@pytest.fixture(scope="module")
def synthetic_manifest(tmp_path_factory) -> Path:
    # 128 px matches the tiny preset's input; three phrasings per finding keep the report language small.
    config = SyntheticConfig(image_size=128, sentences_per_finding=3)
    return make_synthetic_dataset(tmp_path_factory.mktemp("synthetic"), count=2000, seed=0, config=config)


def run(manifest: Path, output_dir: Path, blind: bool) -> float:
    config = TrainConfig.from_dict(
        {**RECIPE, "output_dir": str(output_dir), "data": {"manifest": str(manifest), "blind": blind}}
    )
    result = train(config)
    saved = json.loads((output_dir / "metrics.json").read_text())
    assert saved == result.metrics
    return result.metrics["ce_macro_f1_present"]


def test_tiny_learns_to_see_synthetic_findings(synthetic_manifest, tmp_path, learning_results):
    seeing = run(synthetic_manifest, tmp_path / "seeing", blind=False)
    blind = run(synthetic_manifest, tmp_path / "blind", blind=True)
    learning_results["CE macro F1, tiny on synthetic radiographs (seeing)"] = seeing
    learning_results["CE macro F1, same recipe, image-blind"] = blind
    assert seeing > blind + MARGIN, f"seeing {seeing:.3f} vs blind {blind:.3f}"
