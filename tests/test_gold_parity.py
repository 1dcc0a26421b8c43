"""The released weights, converted, compute what RaDialog's own code computes with them.

tests/data/gold_release/ was written by tests/reference/make_gold_release.py, which ran RaDialog's public
code (transformers 4.28.1, peft 0.3.0, Lightning 1.6.5, its LAVIS and BioViL-T copies) at tiny sizes: it
built, "trained" (random moves) and saved the stage-1 Q-Former, the LoRA adapter with `img_proj_layer`
and the CheXpert classifier in the release's layouts, and recorded its own inference on two X-rays. The
BioViL-T file and the classifier's ResNet-50 are rebuilt here from seeds (tests/reference/
radialog_gold_env.py), checked against the statistics in stand_in_statistics.json (dtypes, shapes, sums;
equal to rounding, since torch's random draws move by an ulp from one processor to another; the tests
below bound what that rounding does to the outputs). The 1408-d projector is in
no file: the converter rebuilds it from seed 42, as RaDialog's stage 1 drew it.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from radialog.convert import convert
from radialog.imaging import load_xray, preprocess
from radialog.model import RaDialogModel, get_preset
from radialog.model.classifier import CHEXPERT_LABELS, positive_findings
from radialog.model.configuration import LanguageModelConfig
from radialog.prompts import Conversation, build_report_prompt, format_predicted_findings
from radialog.release import BIOVIL_FILE

HERE = Path(__file__).resolve().parent
FIXTURE = HERE / "data" / "gold_release"
sys.path.insert(0, str(HERE / "reference"))
import radialog_gold_env as gold  # noqa: E402  (tests/reference/, shared with the generator)

MANIFEST = json.loads((FIXTURE / "manifest.json").read_text())
REFERENCE = load_file(str(FIXTURE / "reference.safetensors"))
STAND_IN_STATISTICS = json.loads((FIXTURE / "stand_in_statistics.json").read_text())


def assert_rebuilt(state: dict[str, torch.Tensor], which: str) -> None:
    mismatches = gold.statistics_mismatches(gold.state_statistics(state), STAND_IN_STATISTICS[which])
    assert not mismatches, f"{which} stand-in not rebuilt as the generator drew it: {mismatches[:5]}"


def tiny_v1_config():
    """radialog-v1 with the generator's tiny Q-Former; the image side and classifier at full size."""
    config = get_preset("radialog-v1")
    bert = MANIFEST["tiny_bert"]
    config.alignment = replace(
        config.alignment,
        hidden_size=bert["hidden_size"],
        num_hidden_layers=bert["num_hidden_layers"],
        num_attention_heads=bert["num_attention_heads"],
        intermediate_size=bert["intermediate_size"],
        cross_attention_frequency=2,
        num_query_tokens=32,
    )
    config.language_model = LanguageModelConfig(pretrained="vicuna-7b-v1.3")
    return config


def test_the_stand_in_check_allows_rounding_and_catches_other_draws():
    drawn = {"conv.weight": torch.randn(64, 3, 7, 7, generator=torch.Generator().manual_seed(0))}
    expected = gold.state_statistics(drawn)
    nudged = {"conv.weight": torch.nextafter(drawn["conv.weight"], torch.tensor(float("inf")))}
    other_seed = {"conv.weight": torch.randn(64, 3, 7, 7, generator=torch.Generator().manual_seed(1))}
    assert gold.statistics_mismatches(gold.state_statistics(nudged), expected) == []
    assert gold.statistics_mismatches(gold.state_statistics(other_seed), expected) == ["conv.weight"]
    assert gold.statistics_mismatches({}, expected) == ["conv.weight"]


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    """The release directory: the fixture's files plus what is rebuilt from seeds."""
    root = tmp_path_factory.mktemp("gold") / "release"
    shutil.copytree(FIXTURE / "release", root)
    biovil = gold.random_biovil_t_state()
    assert_rebuilt(biovil, "biovil_t")
    (root / "biovil_t").mkdir()
    torch.save(biovil, root / "biovil_t" / BIOVIL_FILE)
    (root / "chexpert_train").mkdir()
    for which, name in MANIFEST["classifier_files"].items():
        checkpoint = torch.load(FIXTURE / f"classifier_{which}.skeleton.pt", map_location="cpu", weights_only=True)
        checkpoint["state_dict"] = {**gold.classifier_state(biovil, which), **checkpoint["state_dict"]}
        assert_rebuilt(checkpoint["state_dict"], f"classifier_{which}")
        torch.save(checkpoint, root / "chexpert_train" / name)
    return root


@pytest.fixture(scope="module")
def model(release, tmp_path_factory) -> RaDialogModel:
    destination = tmp_path_factory.mktemp("converted") / "ckpt"
    report = convert(release, destination, "report", tiny_v1_config(), projector_seed=MANIFEST["stage1_seed"])
    assert report.ok and not report.missing and not report.unexpected, report.summary()
    return RaDialogModel.from_pretrained(destination, device="cpu")


@pytest.fixture(scope="module")
def pictures(shared_cxr):
    """The generator's two X-rays (NIH ChestX-ray14, in ../shared/data/cxr)."""
    return [load_xray(shared_cxr / name).to_pil() for name in MANIFEST["images"]]


def test_image_embeddings_match_radialogs(model, pictures):
    pixels = torch.stack([preprocess(p, model.config.image_encoder.processor) for p in pictures])
    with torch.no_grad():
        embeds = model.get_image_features(pixels)
    expected = REFERENCE["image_embeds"]
    assert embeds.shape == expected.shape
    diff = (embeds - expected).abs().max().item()
    assert diff < 1e-4, f"image embeddings differ from RaDialog's by {diff:.3g}"


def test_classifier_probabilities_match_radialogs_best_checkpoint(model, pictures):
    pixels = torch.stack([preprocess(p, model.config.classifier.image_encoder.processor) for p in pictures])
    with torch.no_grad():
        probs = model.classifier.probabilities(pixels)
    diff = (probs - REFERENCE["classifier_probabilities"]).abs().max().item()
    assert diff < 1e-5, f"classifier probabilities differ from RaDialog's by {diff:.3g}"
    # last.ckpt holds another state: had the converter taken it, this would be what we saw.
    assert (REFERENCE["classifier_probabilities_last"] - REFERENCE["classifier_probabilities"]).abs().max() > 0.1
    positive = positive_findings(dict(zip(CHEXPERT_LABELS, probs[0].tolist(), strict=True)), 0.5)
    assert positive == MANIFEST["positive_labels"]


def report_conversation() -> Conversation:
    conversation = Conversation()
    conversation.add_user(build_report_prompt(format_predicted_findings(MANIFEST["positive_labels"])))
    conversation.add_assistant(None)
    return conversation


def test_report_prompt_and_its_ids_match_radialogs(model):
    assert format_predicted_findings(MANIFEST["positive_labels"]) == MANIFEST["findings"]
    assert model.processor.render(report_conversation()) == MANIFEST["prompt"]
    assert model.processor.tokenize(report_conversation())[0].tolist() == MANIFEST["input_ids"]


def test_logits_and_greedy_ids_match_radialogs(model, pictures):
    pixels = preprocess(pictures[0], model.config.image_encoder.processor)[None]
    ids = model.prompt_ids(report_conversation(), max_new_tokens=len(MANIFEST["greedy_ids"]))
    with torch.no_grad():
        embeds = model.get_image_features(pixels)
        logits = model(ids, image_embeds=embeds).logits[0]
        inputs = model.embed_inputs(ids, embeds)
        new = model.language_model.generate(
            inputs_embeds=inputs,
            attention_mask=torch.ones_like(ids),
            **model.decoding_kwargs(max_new_tokens=len(MANIFEST["greedy_ids"])),
        )
    expected = REFERENCE["logits"]
    assert logits.shape == expected.shape
    diff = (logits - expected).abs().max().item()
    assert diff < 1e-4, f"logits differ from RaDialog's by {diff:.3g}"
    assert new[0].tolist() == MANIFEST["greedy_ids"]


def test_a_projector_from_another_seed_is_caught(release, tmp_path, pictures):
    """The check above would catch a wrong projector seed: RaDialog's demo.py seeds with 16."""
    convert(release, tmp_path / "ckpt", "report", tiny_v1_config(), projector_seed=16)
    wrong = RaDialogModel.from_pretrained(tmp_path / "ckpt", device="cpu")
    pixels = preprocess(pictures[0], wrong.config.image_encoder.processor)[None]
    with torch.no_grad():
        diff = (wrong.get_image_features(pixels)[0] - REFERENCE["image_embeds"][0]).abs().max().item()
    assert diff > 1e-3


def test_check_release_runs_on_the_gold_release_and_finds_its_random_weights_at_chance(release, tmp_path, shared_cxr):
    from radialog.check_release import check_release, iu_retrieval_set
    from radialog.model.configuration import RaDialogConfig

    destination = tmp_path / "ckpt"
    convert(release, destination, "report", tiny_v1_config(), projector_seed=MANIFEST["stage1_seed"])
    # The stage-1 text branch was trained with the generator's tiny BERT vocabulary: check with it.
    vocab = tmp_path / "bert"
    vocab.mkdir()
    (vocab / "vocab.txt").write_text("\n".join(gold.tiny_bert_vocab(MANIFEST["tiny_bert"]["vocab_size"])) + "\n")
    (vocab / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BertTokenizer"}))
    config = RaDialogConfig.load(destination)
    config.alignment.text_tokenizer = str(vocab)
    config.save(destination)
    check = check_release(destination, iu_retrieval_set(shared_cxr, distractors=20))
    assert [s.seed for s in check.scores] == [42, 16] and check.aligned_seed is None
    assert "chance level, as expected" in check.summary()
