"""CheXbert backend: loads checkpoints laid out like the released chexbert.pth, maps head classes to labels."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from transformers import BertConfig

from radialog.errors import CheckpointError
from radialog.labeler import build_labeler
from radialog.labeler.chexbert import CheXbert, CheXbertLabeler, load_chexbert, load_tokenizer
from radialog.labels import CHEXPERT_LABELS

TINY = {"hidden_size": 32, "num_hidden_layers": 2, "intermediate_size": 37, "vocab_size": 30522}


def released_key_shapes(hidden: int, layers: int, intermediate: int, vocab: int, positions: int = 512) -> dict:
    """Key names and shapes of CheXbert's state dict as the public code builds it (bert_labeler: `self.bert`
    = BertModel with pooler, `self.linear_heads` = 13 × Linear(hidden, 4) + Linear(hidden, 2)), written out
    by hand so the test does not trust our module to name them."""
    shapes = {
        "bert.embeddings.word_embeddings.weight": (vocab, hidden),
        "bert.embeddings.position_embeddings.weight": (positions, hidden),
        "bert.embeddings.token_type_embeddings.weight": (2, hidden),
        "bert.embeddings.LayerNorm.weight": (hidden,),
        "bert.embeddings.LayerNorm.bias": (hidden,),
        "bert.pooler.dense.weight": (hidden, hidden),
        "bert.pooler.dense.bias": (hidden,),
    }
    for i in range(layers):
        p = f"bert.encoder.layer.{i}."
        for name in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"):
            shapes[p + name + ".weight"] = (hidden, hidden)
            shapes[p + name + ".bias"] = (hidden,)
        for name in ("attention.output.LayerNorm", "output.LayerNorm"):
            shapes[p + name + ".weight"] = (hidden,)
            shapes[p + name + ".bias"] = (hidden,)
        shapes[p + "intermediate.dense.weight"] = (intermediate, hidden)
        shapes[p + "intermediate.dense.bias"] = (intermediate,)
        shapes[p + "output.dense.weight"] = (hidden, intermediate)
        shapes[p + "output.dense.bias"] = (hidden,)
    for i in range(14):
        classes = 2 if i == 13 else 4
        shapes[f"linear_heads.{i}.weight"] = (classes, hidden)
        shapes[f"linear_heads.{i}.bias"] = (classes,)
    return shapes


def random_checkpoint(path, prefix: str = "module.", wrap: bool = True, **sizes) -> OrderedDict:
    """A randomly initialised checkpoint with the released file's layout: {'model_state_dict': {'module.…': …}}."""
    sizes = {
        "hidden": TINY["hidden_size"],
        "layers": TINY["num_hidden_layers"],
        "intermediate": TINY["intermediate_size"],
        "vocab": TINY["vocab_size"],
    } | sizes
    generator = torch.Generator().manual_seed(0)
    state = OrderedDict(
        (prefix + key, torch.randn(shape, generator=generator) * 0.02)
        for key, shape in released_key_shapes(**sizes).items()
    )
    torch.save({"epoch": 7, "model_state_dict": state} if wrap else state, path)
    return state


# CheXbert's `CONDITIONS` as its public code lists them: head i answers for the i-th name.
RELEASED_HEAD_ORDER = (
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
    "No Finding",
)


def force_classes(labeler: CheXbertLabeler, classes: list[int]) -> None:
    """Zero weights and one large bias make head i answer `classes[i]` whatever the text."""
    with torch.no_grad():
        for head, cls in zip(labeler.model.linear_heads, classes, strict=True):
            head.weight.zero_()
            head.bias.zero_()
            head.bias[cls] = 10.0


def test_each_head_labels_the_condition_chexbert_trained_it_on(tmp_path):
    random_checkpoint(tmp_path / "chexbert.pth")
    labeler = CheXbertLabeler.from_checkpoint(tmp_path / "chexbert.pth")
    for head, condition in enumerate(RELEASED_HEAD_ORDER):
        force_classes(labeler, [1 if i == head else 0 for i in range(14)])  # class 1: positive, 0: blank
        (labels,) = labeler.label(["Mild cardiomegaly."])
        assert labels == {name: 1 if name == condition else None for name in CHEXPERT_LABELS}, condition


def test_default_model_has_bert_base_sizes_and_the_released_keys():
    with torch.device("meta"):  # shapes only: no 110M parameters in memory
        model = CheXbert()
    expected = released_key_shapes(hidden=768, layers=12, intermediate=3072, vocab=30522)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == expected
    assert model.config.num_attention_heads == 12


def test_loads_a_data_parallel_checkpoint(tmp_path):
    saved = random_checkpoint(tmp_path / "chexbert.pth")
    model = load_chexbert(tmp_path / "chexbert.pth", config=BertConfig(num_attention_heads=2, **TINY))
    loaded = model.state_dict()
    for key, value in saved.items():
        assert torch.equal(loaded[key.removeprefix("module.")], value)
    assert not model.training


@pytest.mark.parametrize(("prefix", "wrap"), [("", True), ("module.", False)])
def test_loads_plain_state_dicts_too(tmp_path, prefix, wrap):
    random_checkpoint(tmp_path / "chexbert.pth", prefix=prefix, wrap=wrap)
    model = load_chexbert(tmp_path / "chexbert.pth")  # sizes read from the checkpoint
    assert model.config.hidden_size == 32 and model.config.num_hidden_layers == 2


def test_tolerates_the_position_ids_buffer_older_transformers_saved(tmp_path):
    state = random_checkpoint(tmp_path / "a.pth")
    state["module.bert.embeddings.position_ids"] = torch.arange(512).unsqueeze(0)
    torch.save({"model_state_dict": state}, tmp_path / "b.pth")
    loaded = load_chexbert(tmp_path / "b.pth").state_dict()
    assert "bert.embeddings.position_ids" not in loaded  # transformers now keeps it out of the state dict
    for key, value in state.items():
        if key != "module.bert.embeddings.position_ids":
            assert torch.equal(loaded[key.removeprefix("module.")], value), key


def test_rejects_checkpoints_that_do_not_fit(tmp_path):
    state = random_checkpoint(tmp_path / "tiny.pth")
    with pytest.raises(CheckpointError, match="wrong shape"):
        load_chexbert(tmp_path / "tiny.pth", config=BertConfig())  # bert-base sizes
    del state["module.linear_heads.13.bias"]
    torch.save({"model_state_dict": state}, tmp_path / "incomplete.pth")
    with pytest.raises(CheckpointError, match=r"1 missing \(e\.g\. linear_heads\.13\.bias\)"):
        load_chexbert(tmp_path / "incomplete.pth")
    with pytest.raises(CheckpointError, match="not found"):
        load_chexbert(tmp_path / "absent.pth")
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_chexbert(tmp_path / "garbage.pth")


def test_tokenizer_is_bert_base_uncased_and_cuts_at_512(tmp_path):
    random_checkpoint(tmp_path / "chexbert.pth")
    labeler = CheXbertLabeler.from_checkpoint(tmp_path / "chexbert.pth")
    ids = labeler.encode(["No   pleural\neffusion."])["input_ids"][0].tolist()
    # [CLS] no pl ##eur ##al effusion . [SEP] in bert-base-uncased's vocabulary.
    assert ids == [101, 2053, 20228, 11236, 2389, 1041, 4246, 14499, 1012, 102]
    long_ids = labeler.encode(["effusion " * 700])["input_ids"][0]
    assert long_ids.shape == (512,) and long_ids[-1] == 102
    assert labeler.encode([""])["input_ids"][0].tolist() == [101, 102]
    assert len(load_tokenizer()) == 30522


def test_head_classes_map_to_chexpert_values(tmp_path):
    random_checkpoint(tmp_path / "chexbert.pth")
    labeler = CheXbertLabeler.from_checkpoint(tmp_path / "chexbert.pth")
    # Zero weights and one large bias per head force each head's class, whatever the text.
    forced = {name: i % 4 for i, name in enumerate(RELEASED_HEAD_ORDER[:-1])} | {"No Finding": 1}
    force_classes(labeler, [forced[name] for name in RELEASED_HEAD_ORDER])
    values = {0: None, 1: 1, 2: 0, 3: -1}
    results = labeler.label(["Mild cardiomegaly.", "", "No acute disease. " * 100])
    for labels in results:
        assert list(labels) == list(CHEXPERT_LABELS)
        assert labels == {name: values[forced[name]] for name in CHEXPERT_LABELS}


def test_selectable_through_build_labeler(tmp_path):
    saved = random_checkpoint(tmp_path / "chexbert.pth")
    labeler = build_labeler("chexbert", tmp_path / "chexbert.pth")
    assert isinstance(labeler, CheXbertLabeler) and labeler.name == "chexbert"
    loaded = labeler.model.state_dict()
    assert all(torch.equal(loaded[key.removeprefix("module.")], value) for key, value in saved.items())
    reports = ["Small left pleural effusion.", "No acute cardiopulmonary process."]
    direct = CheXbertLabeler.from_checkpoint(tmp_path / "chexbert.pth")
    assert labeler.label(reports) == direct.label(reports)
