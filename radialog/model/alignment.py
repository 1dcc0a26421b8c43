"""Alignment module: a BLIP-2 Q-Former that reads image tokens through cross-attention and hands
`num_query_tokens` embeddings, projected to the LLM's width, to the language model."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn
from transformers import Blip2QFormerConfig, Blip2QFormerModel

from radialog.model.configuration import AlignmentConfig

logger = logging.getLogger(__name__)

# BERT (transformers layout) → Q-Former names, for initialising from a pretrained BERT as BLIP-2 does.
# The Q-Former runs queries through `intermediate_query` / `output_query`: BERT's feed-forward seeds them.
_BERT_TO_QFORMER = (
    (re.compile(r"^embeddings\.LayerNorm\."), "layernorm."),
    (re.compile(r"^(encoder\.layer\.\d+\.attention\.)self\."), r"\1attention."),
    (re.compile(r"^(encoder\.layer\.\d+\.attention\.output\.)"), r"\1"),
    (re.compile(r"^(encoder\.layer\.\d+\.)intermediate\."), r"\1intermediate_query."),
    (re.compile(r"^(encoder\.layer\.\d+\.)output\."), r"\1output_query."),
)


def build_qformer_config(config: AlignmentConfig, encoder_hidden_size: int) -> Blip2QFormerConfig:
    return Blip2QFormerConfig(
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        intermediate_size=config.intermediate_size,
        cross_attention_frequency=config.cross_attention_frequency,
        encoder_hidden_size=encoder_hidden_size,
        layer_norm_eps=config.layer_norm_eps,
    )


def bert_state_dict_for_qformer(bert_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a BERT encoder's weights into Q-Former keys; word/position embeddings and pooler are dropped."""
    renamed: dict[str, torch.Tensor] = {}
    for key, value in bert_state.items():
        key = key.removeprefix("bert.")
        for pattern, replacement in _BERT_TO_QFORMER:
            new_key, count = pattern.subn(replacement, key)
            if count:
                renamed[new_key] = value
                break
    return renamed


class AlignmentModule(nn.Module):
    """(B, N, encoder_width) image tokens → (B, num_query_tokens, llm_hidden_size) LLM input embeddings."""

    def __init__(self, config: AlignmentConfig, encoder_hidden_size: int, llm_hidden_size: int) -> None:
        super().__init__()
        self.config = config
        self.query_tokens = nn.Parameter(torch.zeros(1, config.num_query_tokens, config.hidden_size))
        self.qformer = Blip2QFormerModel(build_qformer_config(config, encoder_hidden_size))
        self.language_projection = nn.Linear(config.hidden_size, llm_hidden_size)
        nn.init.normal_(self.query_tokens, std=0.02)  # BLIP-2's initialisation of the learned queries

    def load_bert(self, directory: str | Path) -> None:
        """Initialise self-attention and feed-forward weights from a local BERT (`model.safetensors`)."""
        state = bert_state_dict_for_qformer(load_file(str(Path(directory) / "model.safetensors")))
        result = self.qformer.load_state_dict(state, strict=False)
        logger.info(
            "Q-Former initialised from BERT at %s: %d tensors loaded, %d left random (cross-attention)",
            directory,
            len(state) - len(result.unexpected_keys),
            len(result.missing_keys),
        )
        if result.unexpected_keys:
            raise ValueError(f"BERT weights do not fit the Q-Former: unexpected {result.unexpected_keys[:5]}")

    def query_features(self, image_tokens: torch.Tensor) -> torch.Tensor:
        """(B, N, encoder_width) → (B, num_query_tokens, hidden_size): the Q-Former's query outputs."""
        queries = self.query_tokens.expand(image_tokens.shape[0], -1, -1)
        attention = torch.ones(image_tokens.shape[:-1], dtype=torch.long, device=image_tokens.device)
        output = self.qformer(
            query_embeds=queries,
            encoder_hidden_states=image_tokens,
            encoder_attention_mask=attention,
        )
        return output.last_hidden_state[:, : self.config.num_query_tokens]

    def forward(self, image_tokens: torch.Tensor) -> torch.Tensor:
        return self.language_projection(self.query_features(image_tokens))
