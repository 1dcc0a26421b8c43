"""`radialog params --preset r2gengpt`: trainable and total parameters of each training mode.

The full-size model is built on PyTorch's meta device (shapes only, no memory, no weights), with the same
code that makes parameters trainable in the language stage, so the counts are those training would see.
"""

from __future__ import annotations

import argparse

import torch
from peft import get_peft_model
from transformers import AutoModelForCausalLM

from radialog.errors import InputError
from radialog.model.language_model import add_image_token, build_byte_tokenizer, random_init_config
from radialog.model.modeling import RaDialogModel, _lora_config
from radialog.model.presets import PRESETS, SAME_SHAPES, get_preset
from radialog.training.config import R2GENGPT_MODES, VisionLora
from radialog.training.objectives import set_language_stage_trainable


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("params", help="count trainable / total parameters of R2GenGPT's training modes")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="r2gengpt")
    parser.add_argument("--mode", choices=sorted(R2GENGPT_MODES), action="append", help="default: all three")
    parser.set_defaults(func=run)


def meta_model(preset: str) -> RaDialogModel:
    """The preset's model with shapes only; a preset whose LLM is a file is counted with its random twin."""
    config = get_preset(SAME_SHAPES.get(preset, preset))
    if config.language_model.random_init is None:
        raise InputError(f"preset {preset!r} loads its LLM from files: no shapes to count without them")
    tokenizer = build_byte_tokenizer()  # only its `<IMG>` id is used; the vocabulary size comes from the config
    add_image_token(tokenizer)
    with torch.device("meta"):
        llm = AutoModelForCausalLM.from_config(random_init_config(config.language_model))
        if config.lora is not None:
            llm = get_peft_model(llm, _lora_config(config))
        return RaDialogModel(config, llm, tokenizer)


def count(preset: str, mode: str) -> tuple[int, int]:
    """(trainable, total) parameters of `preset` trained in R2GenGPT's `mode`."""
    model, settings = meta_model(preset), R2GENGPT_MODES[mode]
    with torch.device("meta"):
        set_language_stage_trainable(model, settings["llm"], settings["vision"], VisionLora())
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def run(args: argparse.Namespace) -> int:
    print(f"{'mode':<8} {'trainable':>15} {'total':>15} {'share':>8}")
    for mode in args.mode or list(R2GENGPT_MODES):
        trainable, total = count(args.preset, mode)
        print(f"{mode:<8} {trainable:>15,} {total:>15,} {100 * trainable / total:>7.3f}%")
    return 0
