"""RaDialogModel end to end on the `tiny` preset: image tokens reach the LLM, checkpoints round-trip."""

from __future__ import annotations

import pytest
import torch
from peft import PeftModel

from radialog.errors import CheckpointError, InputError
from radialog.imaging import XRay
from radialog.model import RaDialogModel, get_preset
from radialog.model.language_model import load_language_model
from radialog.model.presets import VICUNA_7B
from radialog.prompts import Conversation


def synthetic_xray(seed: int) -> XRay:
    generator = torch.Generator().manual_seed(seed)
    pixels = (torch.rand(300, 280, generator=generator) * 255).to(torch.uint8).numpy()
    return XRay(pixels=pixels, source_format="png", original_dtype="uint8")


@pytest.fixture(scope="module")
def perturbed_model(steered_tiny_model):
    """Non-zero LoRA weights, so the adapter matters in every check."""
    return steered_tiny_model


def report_logits(model: RaDialogModel, xray: XRay) -> torch.Tensor:
    encoded = model.encode_image(xray)
    input_ids = model.processor.tokenize(model.processor.report_conversation(encoded.predicted_findings))
    with torch.no_grad():
        return model(input_ids=input_ids, image_embeds=encoded.image_embeds).logits


def greedy_answer(
    model: RaDialogModel, conversation: Conversation, image_embeds: torch.Tensor | None, max_new_tokens: int
) -> str:
    """The answer decoded one token at a time from the model's own logits (argmax until EOS), without
    `generate()`: what RaDialog's greedy decoding must give."""
    prompt = model.processor.tokenize(conversation)
    new: list[int] = []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            ids = torch.cat([prompt, torch.tensor([new], dtype=prompt.dtype)], dim=1)
            token = int(model(input_ids=ids, image_embeds=image_embeds).logits[0, -1].argmax())
            if token == model.tokenizer.eos_token_id:
                break
            new.append(token)
    assert new, "the first greedy token is EOS: the comparison would be between two empty answers"
    return model.tokenizer.decode(new, skip_special_tokens=True).strip()


def test_prompt_holds_exactly_32_image_positions(tiny_model):
    encoded = tiny_model.encode_image(synthetic_xray(0))
    input_ids = tiny_model.processor.tokenize(tiny_model.processor.report_conversation(encoded.predicted_findings))
    assert int((input_ids == tiny_model.image_token_id).sum()) == 32
    assert encoded.image_embeds.shape == (1, 32, 64)


def test_changing_the_image_changes_the_logits(perturbed_model):
    first = report_logits(perturbed_model, synthetic_xray(0))
    second = report_logits(perturbed_model, synthetic_xray(1))
    assert first.shape == second.shape
    assert not torch.allclose(first, second)


def test_image_embeddings_are_spliced_at_the_placeholder_positions(tiny_model):
    encoded = tiny_model.encode_image(synthetic_xray(0))
    input_ids = tiny_model.processor.tokenize(tiny_model.processor.report_conversation(encoded.predicted_findings))
    embeds = tiny_model.embed_inputs(input_ids, encoded.image_embeds)
    positions = (input_ids[0] == tiny_model.image_token_id).nonzero().squeeze(1)
    torch.testing.assert_close(embeds[0, positions], encoded.image_embeds[0])
    text_positions = (input_ids[0] != tiny_model.image_token_id).nonzero().squeeze(1)
    plain = tiny_model.language_model.get_input_embeddings()(input_ids[0, text_positions])
    torch.testing.assert_close(embeds[0, text_positions], plain)


def test_mismatching_number_of_image_embeddings_raises(tiny_model):
    encoded = tiny_model.encode_image(synthetic_xray(0))
    input_ids = tiny_model.processor.tokenize(tiny_model.processor.report_conversation(encoded.predicted_findings))
    with pytest.raises(InputError, match="32 image positions but 16"):
        tiny_model.embed_inputs(input_ids, encoded.image_embeds[:, :16])
    with pytest.raises(InputError, match="no image embeddings"):
        tiny_model.embed_inputs(input_ids, None)


def test_save_and_load_round_trip_gives_identical_outputs(perturbed_model, tmp_path):
    xray = synthetic_xray(5)
    before = report_logits(perturbed_model, xray)
    report_before = perturbed_model.generate_report(xray, max_new_tokens=8)
    perturbed_model.save_pretrained(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} >= {
        "config.json",
        "model.safetensors",
        "adapter",
        "tokenizer",
    }
    loaded = RaDialogModel.from_pretrained(tmp_path, device="cpu")
    assert isinstance(loaded.language_model, PeftModel)
    torch.testing.assert_close(report_logits(loaded, xray), before, rtol=0, atol=0)
    assert loaded.generate_report(xray, max_new_tokens=8) == report_before


def test_export_to_float16_halves_the_stored_weights_and_keeps_the_outputs(perturbed_model, tmp_path):
    from safetensors.torch import load_file

    from radialog.cli import main

    perturbed_model.save_pretrained(tmp_path / "fp32")
    assert main(["export", str(tmp_path / "fp32"), "--to", str(tmp_path / "fp16")]) == 0
    for name in ("model.safetensors", "adapter/adapter_model.safetensors"):
        full, half = load_file(str(tmp_path / "fp32" / name)), load_file(str(tmp_path / "fp16" / name))
        assert full.keys() == half.keys()
        assert {v.dtype for v in half.values() if v.is_floating_point()} == {torch.float16}
        assert {k for k, v in half.items() if not v.is_floating_point()} == {
            k for k, v in full.items() if not v.is_floating_point()
        }
    loaded = RaDialogModel.from_pretrained(tmp_path / "fp16", device="cpu")
    assert loaded.dtype == torch.float32  # cast back on load
    xray = synthetic_xray(5)
    torch.testing.assert_close(report_logits(loaded, xray), report_logits(perturbed_model, xray), rtol=0, atol=2e-2)
    assert main(["export", str(tmp_path / "fp16"), "--to", str(tmp_path / "fp16")]) == 2


def test_loading_rejects_weights_that_do_not_fit(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    from safetensors.torch import load_file, save_file

    state = load_file(str(tmp_path / "model.safetensors"))
    state.pop("alignment.query_tokens")
    state["alignment.extra"] = torch.zeros(1)
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"1 missing keys \['alignment.query_tokens'\]"):
        RaDialogModel.from_pretrained(tmp_path, device="cpu")
    with pytest.raises(CheckpointError, match="no RaDialog checkpoint"):
        RaDialogModel.from_pretrained(tmp_path / "nowhere", device="cpu")


def test_follow_up_turn_keeps_the_image_tokens_of_turn_one(perturbed_model):
    encoded = perturbed_model.encode_image(synthetic_xray(4))
    conversation = perturbed_model.processor.report_conversation(encoded.predicted_findings)
    report = perturbed_model.generate(conversation, encoded.image_embeds, max_new_tokens=6)
    conversation.messages[-1] = ("ASSISTANT", report)
    conversation.add_user("Is there any pleural effusion?")
    conversation.add_assistant(None)
    input_ids = perturbed_model.processor.tokenize(conversation)
    assert int((input_ids == perturbed_model.image_token_id).sum()) == 32
    answer = perturbed_model.generate(conversation, encoded.image_embeds, max_new_tokens=4)
    assert answer == greedy_answer(perturbed_model, conversation, encoded.image_embeds, max_new_tokens=4)
    other = perturbed_model.encode_image(synthetic_xray(9)).image_embeds
    with torch.no_grad():
        a = perturbed_model(input_ids=input_ids, image_embeds=encoded.image_embeds).logits[0, -1]
        b = perturbed_model(input_ids=input_ids, image_embeds=other).logits[0, -1]
    assert not torch.allclose(a, b)


def test_text_only_question_needs_no_image(tiny_model):
    conversation = Conversation()
    conversation.add_user("What is a pneumothorax?")
    conversation.add_assistant(None)
    assert int((tiny_model.processor.tokenize(conversation) == tiny_model.image_token_id).sum()) == 0
    answer = tiny_model.generate(conversation, None, max_new_tokens=4)
    assert answer == greedy_answer(tiny_model, conversation, None, max_new_tokens=4)


def test_conversation_longer_than_the_context_is_refused(tiny_model):
    conversation = Conversation()
    conversation.add_user("word " * 2000)
    conversation.add_assistant(None)
    with pytest.raises(InputError, match="context"):
        tiny_model.generate(conversation, None, max_new_tokens=4)


def test_radialog_v1_lora_matches_the_published_setup():
    config = get_preset("radialog-v1-random")
    assert (config.lora.r, config.lora.alpha, config.lora.target_modules) == (8, 16, ("q_proj", "v_proj"))
    llm = load_language_model(config.language_model, 32000, torch.float32, torch.device("meta"))
    assert llm.config.hidden_size == VICUNA_7B["hidden_size"] and llm.config.num_hidden_layers == 32
    from peft import get_peft_model

    from radialog.model.modeling import _lora_config

    peft_model = get_peft_model(llm, _lora_config(config))
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    assert trainable == 32 * 2 * (4096 * 8 + 8 * 4096)  # 4.19 M, as in RaDialog


def test_widening_the_lora_keeps_the_outputs_and_round_trips(perturbed_model, tmp_path):
    import copy

    from peft.tuners.lora import LoraLayer

    model = copy.deepcopy(perturbed_model)
    xray = synthetic_xray(6)
    before = report_logits(model, xray)
    trained_q = {n: p.clone() for n, p in model.language_model.named_parameters() if "q_proj.lora_" in n}
    assert model.widen_lora(["q_proj", "gate_proj", "down_proj"]) == ["gate_proj", "down_proj"]
    assert model.config.lora.target_modules == ("q_proj", "v_proj", "gate_proj", "down_proj")
    widened = {n.rsplit(".", 1)[-1] for n, m in model.language_model.named_modules() if isinstance(m, LoraLayer)}
    assert widened == {"q_proj", "v_proj", "gate_proj", "down_proj"}
    for name, param in model.language_model.named_parameters():
        if name in trained_q:
            torch.testing.assert_close(param, trained_q[name], rtol=0, atol=0)
    torch.testing.assert_close(report_logits(model, xray), before, rtol=0, atol=0)  # new B = 0
    assert model.widen_lora(["gate_proj"]) == []

    with torch.no_grad():
        for name, param in model.language_model.named_parameters():
            if "gate_proj.lora_B" in name:
                param.normal_(std=0.5)
    changed = report_logits(model, xray)
    assert not torch.allclose(changed, before)
    model.save_pretrained(tmp_path)
    loaded = RaDialogModel.from_pretrained(tmp_path, device="cpu")
    assert loaded.config.lora.target_modules == ("q_proj", "v_proj", "gate_proj", "down_proj")
    torch.testing.assert_close(report_logits(loaded, xray), changed, rtol=0, atol=0)


def test_widening_needs_a_lora_adapter(tmp_path):
    torch.manual_seed(0)
    model = RaDialogModel.from_config(get_preset("r2gengpt-tiny"), device="cpu")
    with pytest.raises(InputError, match="no LoRA"):
        model.widen_lora(["gate_proj"])
