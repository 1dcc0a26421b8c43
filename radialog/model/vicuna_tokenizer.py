"""Vicuna's tokenizer as RaDialog ran it: transformers 4.28.1's slow, sentencepiece-backed `LlamaTokenizer`.

The released LoRA adapter learnt the token ids that tokenizer produced, so RaDialog's prompts must tokenize
to the same ids here. transformers 5 reads the same `tokenizer.model` differently where it matters most, at
the added tokens. What the slow tokenizer did, and this module rebuilds as a fast (`tokenizers`) tokenizer:

- It cut the text at every added or special token (`<IMG>`, `</s>`, `<s>`, `<unk>`) and let sentencepiece
  encode each piece on its own, so every piece starts with sentencepiece's dummy prefix `▁`:
  `…</s>USER:` gives `</s> ▁US ER :`, and `<IMG>. Predicted` gives `<IMG> ▁. ▁Pred`. transformers 5
  (`legacy=False`) prefixes only the start of the whole text.
- The dummy prefix is added even when the piece already starts with a space (`"  x"` → `▁▁ ▁x`), and
  no whitespace is ever removed: LLaMA's normalizer is the identity, spaces just become `▁`.
- sentencepiece merges by piece score, and LLaMA scores its whitespace-run pieces lowest, so a double space
  inside text stays apart (`the  effusion` → `▁the ▁ ▁eff usion`); transformers 5's conversion of the
  same model gives `▁the ▁▁ eff usion`.
- RaDialog added `<IMG>` with `add_special_tokens({"additional_special_tokens": ["<IMG>"]})`, a plain
  string, and the slow tokenizer strips the whitespace on both sides of such tokens, so
  `information: <IMG>` gives `: <IMG>` with no `▁` in between. `</s>`, `<s>` and `<unk>` came from
  Vicuna's tokenizer_config.json as `AddedToken`s with `lstrip`/`rstrip` off: nothing is stripped there.

tests/test_tokenizer_parity.py checks this against ids produced by transformers 4.28.1 itself.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers
from transformers import PreTrainedTokenizerFast

from radialog.errors import CheckpointError

SENTENCEPIECE_FILE = "tokenizer.model"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
LLAMA_TOKENIZER_CLASSES = ("LlamaTokenizer", "LlamaTokenizerFast")
SPIECE_SPACE = "▁"


def is_sentencepiece_llama(directory: str | Path) -> bool:
    """A LLaMA-family tokenizer directory with its sentencepiece model (Vicuna v1.3's layout)."""
    directory = Path(directory)
    if not (directory / SENTENCEPIECE_FILE).is_file():
        return False
    tokenizer_class = _tokenizer_config(directory).get("tokenizer_class")
    # Llama 3 also ships a `tokenizer.model`, but a tiktoken one, under another tokenizer class.
    return tokenizer_class is None or tokenizer_class in LLAMA_TOKENIZER_CLASSES


def image_token(content: str) -> AddedToken:
    """An image placeholder that eats the whitespace around it, as a string special token did in 4.28.1."""
    return AddedToken(content, lstrip=True, rstrip=True, normalized=False, special=True)


def load_legacy_llama_tokenizer(directory: str | Path) -> PreTrainedTokenizerFast:
    """The fast equivalent of `LlamaTokenizer.from_pretrained(directory, use_fast=False)` under transformers 4.28.

    Built from `tokenizer.model` alone (a `tokenizer.json` beside it is ignored: the slow tokenizer never
    read one); `tokenizer_config.json` contributes only `add_bos_token`, `add_eos_token` and
    `model_max_length`. The result is a plain `PreTrainedTokenizerFast`, so `save_pretrained` writes a
    tokenizer.json that reloads with the same behaviour through `AutoTokenizer`.
    """
    directory = Path(directory)
    proto = _read_model_proto(directory / SENTENCEPIECE_FILE)
    spec = proto.trainer_spec
    unk, bos, eos = (proto.pieces[i].piece for i in (spec.unk_id, spec.bos_id, spec.eos_id))
    config = _tokenizer_config(directory)
    extra = {"model_max_length": config["model_max_length"]} if "model_max_length" in config else {}
    return PreTrainedTokenizerFast(
        tokenizer_object=_sentencepiece_bpe(proto),
        unk_token=unk,
        bos_token=bos,
        eos_token=eos,
        add_bos_token=config.get("add_bos_token", True),
        add_eos_token=config.get("add_eos_token", False),
        clean_up_tokenization_spaces=False,
        **extra,
    )


def _sentencepiece_bpe(proto) -> Tokenizer:
    """sentencepiece's BPE encoding of one piece of text, in `tokenizers` terms."""
    normal = _check_llama_layout(proto)
    texts = [piece.piece for piece in proto.pieces]
    scores = [piece.score for piece in proto.pieces]
    vocab = {text: i for i, text in enumerate(texts)}
    # sentencepiece merges the adjacent pair whose concatenation is the best-scoring normal piece; BPE ranks
    # merges instead, so rank every split of every normal piece by that piece's score (best first).
    ranked = []
    for merged in normal:
        text = texts[merged]
        for cut in range(1, len(text)):
            left, right = vocab.get(text[:cut]), vocab.get(text[cut:])
            if left in normal and right in normal:
                ranked.append((-scores[merged], merged, left, right))
    ranked.sort()
    merges = [(texts[left], texts[right]) for _, _, left, right in ranked]
    unk = texts[proto.trainer_spec.unk_id]
    tokenizer = Tokenizer(models.BPE(vocab, merges, unk_token=unk, fuse_unk=True, byte_fallback=True))
    # Added tokens are cut out of the raw text first and each remaining piece is normalized on its own: the
    # dummy prefix lands on every piece, as sentencepiece's did. No pre-tokenizer: BPE sees each piece whole.
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.Prepend(SPIECE_SPACE), normalizers.Replace(" ", SPIECE_SPACE)]
    )
    tokenizer.decoder = decoders.Sequence(
        [
            decoders.Replace(SPIECE_SPACE, " "),
            decoders.ByteFallback(),
            decoders.Fuse(),
            decoders.Strip(content=" ", left=1, right=0),
        ]
    )
    kinds = (proto.SentencePiece.CONTROL, proto.SentencePiece.UNKNOWN)
    control = [piece.piece for piece in proto.pieces if piece.type in kinds]
    tokenizer.add_special_tokens([AddedToken(text, normalized=False, special=True) for text in control])
    return tokenizer


def _check_llama_layout(proto) -> set[int]:
    """The ids of the normal pieces, once the model is known to be LLaMA's kind of sentencepiece BPE."""
    normalizer, trainer = proto.normalizer_spec, proto.trainer_spec
    expected = {
        "BPE model (trainer_spec.model_type)": trainer.model_type == trainer.BPE,
        "byte fallback": trainer.byte_fallback,
        "no precompiled normalization": not normalizer.precompiled_charsmap,
        "a dummy prefix": normalizer.add_dummy_prefix,
        "no whitespace removal": not normalizer.remove_extra_whitespaces,
        "escaped whitespace": normalizer.escape_whitespaces,
        "whitespace as prefix": not trainer.treat_whitespace_as_suffix,
    }
    kinds = {piece.type for piece in proto.pieces}
    expected["only normal, control, unknown and byte pieces"] = kinds <= {
        proto.SentencePiece.NORMAL,
        proto.SentencePiece.CONTROL,
        proto.SentencePiece.UNKNOWN,
        proto.SentencePiece.BYTE,
    }
    missing = [name for name, ok in expected.items() if not ok]
    if missing:
        raise CheckpointError(f"not a LLaMA-style sentencepiece tokenizer: it lacks {', '.join(missing)}")
    return {i for i, piece in enumerate(proto.pieces) if piece.type == piece.NORMAL}


def _read_model_proto(path: Path):
    proto = _model_proto_class()()
    try:
        proto.ParseFromString(path.read_bytes())
    except Exception as error:  # protobuf's DecodeError, whichever implementation is installed
        raise CheckpointError(f"{path} is not a sentencepiece model: {error}") from error
    return proto


def _model_proto_class():
    """sentencepiece's `ModelProto` message class, or transformers' copy of it where sentencepiece's generated
    code does not fit the installed protobuf (sentencepiece declares no protobuf version)."""
    try:
        from sentencepiece import sentencepiece_model_pb2
    except Exception:  # ImportError, or protobuf's VersionError for generated code newer than the runtime
        try:
            from transformers.utils import sentencepiece_model_pb2_new as sentencepiece_model_pb2
        except ImportError as error:
            raise CheckpointError(
                f"reading Vicuna's tokenizer.model needs the `sentencepiece` and `protobuf` packages ({error})"
            ) from error
    return sentencepiece_model_pb2.ModelProto


def _tokenizer_config(directory: Path) -> dict:
    path = directory / TOKENIZER_CONFIG_FILE
    if not path.is_file():
        return {}
    with path.open(encoding="utf-8") as handle:
        return json.load(handle)
