"""Alignment modules between image tokens and the LLM.

- `AlignmentModule` (RaDialog): a BLIP-2 Q-Former reads the image tokens through cross-attention and
  hands `num_query_tokens` embeddings, projected to the LLM's width, to the language model.
- `LinearAlignment` (R2GenGPT): every image token goes to the LLM, through Linear + LayerNorm.

Both split into `query_features` (frozen in stage 2, so cacheable) and `language_projection` (trained).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn
from transformers import Blip2QFormerConfig, Blip2QFormerModel
from transformers.models.blip_2.modeling_blip_2 import Blip2TextEmbeddings

from radialog.model.configuration import AlignmentConfig

logger = logging.getLogger(__name__)

# BERT (transformers layout) → Q-Former names, for initialising from a pretrained BERT as BLIP-2 does.
# The Q-Former runs queries through `intermediate_query` / `output_query`: BERT's feed-forward seeds them
# (and the text feed-forward `intermediate` / `output` when the text branch exists).
_BERT_TO_QFORMER = (
    (re.compile(r"^embeddings\.LayerNorm\."), r"qformer.layernorm."),
    (re.compile(r"^embeddings\.(word|position)_embeddings\."), r"text_embeddings.\1_embeddings."),
    (re.compile(r"^(encoder\.layer\.\d+\.attention\.)self\."), r"qformer.\1attention."),
    (re.compile(r"^(encoder\.layer\.\d+\.attention\.output\.)"), r"qformer.\1"),
    (re.compile(r"^(encoder\.layer\.\d+\.)(intermediate|output)\."), r"qformer.\1\2_query."),
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
        use_qformer_text_input=config.text_input,
        vocab_size=config.vocab_size,
        max_position_embeddings=config.max_text_length,
    )


def bert_state_dict_for_alignment(bert_state: dict[str, torch.Tensor], text_input: bool) -> dict[str, torch.Tensor]:
    """Rename a BERT encoder's weights into AlignmentModule keys; the pooler and token types are dropped."""
    renamed: dict[str, torch.Tensor] = {}
    for key, value in bert_state.items():
        key = key.removeprefix("bert.")
        for pattern, replacement in _BERT_TO_QFORMER:
            new_key, count = pattern.subn(replacement, key)
            if not count:
                continue
            if text_input and "_query." in new_key:
                renamed[new_key.replace("_query.", ".")] = value
            if text_input or not new_key.startswith("text_embeddings."):
                renamed[new_key] = value
            break
    return renamed


class AlignmentModule(nn.Module):
    """(B, N, encoder_width) image tokens → (B, num_query_tokens, llm_hidden_size) LLM input embeddings."""

    def __init__(self, config: AlignmentConfig, encoder_hidden_size: int, llm_hidden_size: int) -> None:
        super().__init__()
        self.config = config
        qformer_config = build_qformer_config(config, encoder_hidden_size)
        self.query_tokens = nn.Parameter(torch.zeros(1, config.num_query_tokens, config.hidden_size))
        self.qformer = Blip2QFormerModel(qformer_config)
        self.text_embeddings = Blip2TextEmbeddings(qformer_config) if config.text_input else None
        self.language_projection = nn.Linear(config.hidden_size, llm_hidden_size)
        nn.init.normal_(self.query_tokens, std=0.02)  # BLIP-2's initialisation of the learned queries

    def load_bert(self, directory: str | Path) -> None:
        """Initialise attention, feed-forward (and text embeddings) from a local BERT (`model.safetensors`)."""
        bert = load_file(str(Path(directory) / "model.safetensors"))
        state = bert_state_dict_for_alignment(bert, self.config.text_input)
        result = self.load_state_dict(state, strict=False)
        if result.unexpected_keys:
            raise ValueError(f"BERT weights do not fit the Q-Former: unexpected {result.unexpected_keys[:5]}")
        logger.info(
            "Q-Former initialised from BERT at %s: %d tensors loaded, %d left as initialised",
            directory,
            len(state),
            len(result.missing_keys),
        )

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

    def text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(T, L) report tokens → (T, hidden_size): the first token's output of the Q-Former's text branch,
        which reads text alone (no queries, no image), as BLIP-2's contrastive loss does."""
        if self.text_embeddings is None:
            raise ValueError("this Q-Former has no text branch (AlignmentConfig.text_input is False)")
        output = self.qformer(
            query_embeds=self.text_embeddings(input_ids=input_ids), attention_mask=attention_mask, query_length=0
        )
        return output.last_hidden_state[:, 0]


ALIGNMENT_HEADS_NAME = "alignment_heads.safetensors"  # beside model.safetensors: the heads and the text branch


class AlignmentHeads(nn.Module):
    """BLIP-2's stage-1 heads on the Q-Former: the image–text contrastive projections and the matching
    classifier. Inference never reads them; image–report retrieval (`radialog check-release`) does."""

    def __init__(self, hidden_size: int, embed_dim: int) -> None:
        super().__init__()
        self.vision_proj = nn.Linear(hidden_size, embed_dim)
        self.text_proj = nn.Linear(hidden_size, embed_dim)
        self.itm_head = nn.Linear(hidden_size, 2)
        self.temp = nn.Parameter(torch.tensor(0.07))

    def similarity(self, query_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """(B, Q, H) query outputs and (T, H) text features → (B, T) contrastive logits: the best-matching
        query's cosine similarity over the temperature."""
        image = nn.functional.normalize(self.vision_proj(query_features), dim=-1)  # (B, Q, D)
        text = nn.functional.normalize(self.text_proj(text_features), dim=-1)  # (T, D)
        return torch.einsum("bqd,td->btq", image, text).amax(-1) / self.temp.clamp(min=1e-3)


class NormedLinear(nn.Linear):
    """Linear, then LayerNorm over its output: R2GenGPT's `llama_proj` followed by `layer_norm`.

    One module, so the stage-2 projection stays a single `language_projection` with a `weight` (keys:
    `weight`, `bias`, `norm.weight`, `norm.bias`; R2GenGPT's `llama_proj.*` / `layer_norm.*` map onto them).
    """

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__(in_features, out_features)
        self.norm = nn.LayerNorm(out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(super().forward(x))


class LinearAlignment(nn.Module):
    """(B, N, encoder_width) image tokens → (B, N, llm_hidden_size): each token projected on its own."""

    def __init__(self, config: AlignmentConfig, encoder_hidden_size: int, llm_hidden_size: int) -> None:
        super().__init__()
        self.config = config
        self.language_projection = NormedLinear(encoder_hidden_size, llm_hidden_size)

    def query_features(self, image_tokens: torch.Tensor) -> torch.Tensor:
        """Nothing sits between the encoder and the projection: the tokens themselves."""
        return image_tokens

    def forward(self, image_tokens: torch.Tensor) -> torch.Tensor:
        return self.language_projection(image_tokens)


def build_alignment(
    config: AlignmentConfig, encoder_hidden_size: int, llm_hidden_size: int
) -> AlignmentModule | LinearAlignment:
    factory = LinearAlignment if config.kind == "linear" else AlignmentModule
    return factory(config, encoder_hidden_size, llm_hidden_size)
