"""Converting an R2GenGPT checkpoint (any of its three modes) into our `RaDialogModel.from_pretrained` layout.

R2GenGPT saves only its trainable parameters, `torch.save({"model": state, "config": hparams, "epoch",
"step"})`, under the LightningModule's attribute names:

    shallow   llama_proj.*, layer_norm.*
    delta     + visual_encoder.base_model.model.<swin path>.lora_{A,B}.default.weight (peft on query/value)
    deep      + visual_encoder.<swin path> (the whole Swin)

Frozen weights come from elsewhere: the Swin (shallow, delta) from a local Hugging Face copy of
swin-base-patch4-window7-224 and the LLM from a local Llama-2-7b-chat, both named by the config and found
under the source directory. Delta's LoRA factors are merged into the Swin weights (W + B·A·alpha/r), so
the result is a plain checkpoint. Every key goes through one regex table (`RULES`), then R2GenGPT's
pre-transformers-5 Swin names go through `SWIN_RENAMES` (the renames transformers applies itself).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import replace
from pathlib import Path

import torch
from safetensors.torch import save_file

from radialog.convert import ConversionReport, Rule, check_shapes, link_language_model
from radialog.errors import CheckpointError
from radialog.model.alignment import build_alignment
from radialog.model.configuration import RaDialogConfig
from radialog.model.image_encoder import build_image_encoder
from radialog.model.language_model import load_tokenizer, resolve_model_path
from radialog.model.presets import r2gengpt
from radialog.model.serialization import load_torch_file
from radialog.model.swin_encoder import SwinImageEncoder

logger = logging.getLogger(__name__)

SOURCE = "r2gengpt"
LORA_TARGET = "lora:"  # LoRA factors, merged into the Swin weights before the checkpoint is written
SWIN_PREFIX = "image_encoder.swin."

RULES: tuple[Rule, ...] = (
    Rule(SOURCE, r"^llama_proj\.(weight|bias)$", r"alignment.language_projection.\1"),
    Rule(SOURCE, r"^layer_norm\.(weight|bias)$", r"alignment.language_projection.norm.\1"),
    # delta: peft-wrapped Swin (`vis_use_lora`); older peft versions saved no `.default`
    Rule(
        SOURCE,
        r"^visual_encoder\.base_model\.model\.(.+)\.lora_([AB])(?:\.default)?\.weight$",
        LORA_TARGET + SWIN_PREFIX + r"\1.lora_\2",
    ),
    Rule(SOURCE, r"\.relative_position_index$", None, "Swin buffer, recomputed from the window size"),
    # deep: the whole Swin (`freeze_vm False`)
    Rule(SOURCE, r"^visual_encoder\.(?!base_model\.)", SWIN_PREFIX),
)

# Swin parameter names before transformers 5 → now (transformers' own `conversion_mapping` for "swin").
SWIN_RENAMES: tuple[tuple[str, str], ...] = (
    (r"\.attention\.self\.query\b", ".attention.q_proj"),
    (r"\.attention\.self\.key\b", ".attention.k_proj"),
    (r"\.attention\.self\.value\b", ".attention.v_proj"),
    (
        r"\.attention\.self\.relative_position_bias_table$",
        ".attention.relative_position_bias.relative_position_bias_table",
    ),
    (r"\.attention\.output\.dense\.", ".attention.o_proj."),
    (r"\.intermediate\.dense\.", ".mlp.fc1."),
    (r"\.output\.dense\.", ".mlp.fc2."),
)


def modernise_swin_key(key: str) -> str:
    for pattern, replacement in SWIN_RENAMES:
        key = re.sub(pattern, replacement, key)
    return key


def map_keys(state: dict[str, torch.Tensor], report: ConversionReport) -> dict[str, torch.Tensor]:
    """Rename every key through `RULES` (first match wins), recording each decision in `report`."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        rule = next((r for r in RULES if re.search(r.pattern, key)), None)
        if rule is None:
            report.unexpected.append(f"{SOURCE}:{key}")
        elif rule.target is None:
            report.unused[f"{SOURCE}:{key}"] = rule.why
        else:
            target = re.sub(rule.pattern, rule.target, key, count=1)
            out[modernise_swin_key(target) if SWIN_PREFIX in target else target] = value
            report.mapped[f"{SOURCE}:{key}"] = target
    return out


def detect_mode(state: dict[str, torch.Tensor]) -> str:
    """shallow, delta or deep, from which Swin weights the checkpoint holds."""
    if any(".lora_" in key for key in state if key.startswith("visual_encoder.")):
        return "delta"
    if any(key.startswith("visual_encoder.") for key in state):
        return "deep"
    return "shallow"


def merge_lora(
    weights: dict[str, torch.Tensor], lora: dict[str, torch.Tensor], alpha: float, report: ConversionReport
) -> None:
    """W ← W + B·A·alpha/r for every LoRA-wrapped module (in place); r is read off A's shape."""
    modules = sorted({key.rsplit(".lora_", 1)[0] for key in lora})
    for module in modules:
        a, b = lora.get(f"{module}.lora_A"), lora.get(f"{module}.lora_B")
        if a is None or b is None or f"{module}.weight" not in weights:
            report.missing.append(f"{module}: needs lora_A, lora_B and a base weight")
            continue
        delta = (b.float() @ a.float()) * (alpha / a.shape[0])
        weights[f"{module}.weight"] = weights[f"{module}.weight"] + delta.to(weights[f"{module}.weight"].dtype)
    report.notes.append(f"merged LoRA (alpha {alpha:g}) into {len(modules)} Swin projections")


def _hparam(hparams: object, name: str) -> object | None:
    """A value from R2GenGPT's saved hparams (a dict, or a Namespace-like object when unpickled)."""
    if isinstance(hparams, dict):
        return hparams.get(name)
    return getattr(hparams, name, None)


def expected_shapes(config: RaDialogConfig, llm_hidden_size: int) -> dict[str, torch.Size]:
    with torch.device("meta"):
        encoder = build_image_encoder(config.image_encoder)
        alignment = build_alignment(config.alignment, config.image_encoder.token_dim, llm_hidden_size)
    parts = {"image_encoder": encoder, "alignment": alignment}
    return {f"{name}.{k}": v.shape for name, part in parts.items() for k, v in part.state_dict().items()}


def convert_r2gengpt(
    checkpoint: str | Path,
    source: str | Path,
    destination: str | Path,
    config: RaDialogConfig | None = None,
    lora_alpha: float | None = None,
    allow_pickle: bool = False,
) -> ConversionReport:
    """Write a checkpoint directory at `destination` from R2GenGPT's `checkpoint` file.

    `source` holds the frozen parts the config names (`llama-2-7b-chat/`, `swin-base-patch4-window7-224/`
    for the `r2gengpt` preset). `lora_alpha` overrides the checkpoint's `vis_alpha` (delta mode).
    Raises CheckpointError, after writing nothing, when a key is missing, unexpected or mis-shaped.
    """
    checkpoint, source, destination = Path(checkpoint), Path(source), Path(destination)
    config = config or r2gengpt()
    if config.image_encoder.kind != "swin" or config.alignment.kind != "linear":
        raise CheckpointError("an R2GenGPT checkpoint needs a config with a Swin encoder and linear alignment")
    loaded = load_torch_file(checkpoint, allow_pickle)
    if "model" not in loaded:
        raise CheckpointError(f"{checkpoint} has no 'model' entry (top-level keys: {sorted(loaded)[:8]})")
    state = loaded["model"]
    mode = detect_mode(state)
    report = ConversionReport(notes=[f"R2GenGPT {mode} checkpoint"])
    renamed = map_keys(state, report)
    lora = {k[len(LORA_TARGET) :]: v for k, v in renamed.items() if k.startswith(LORA_TARGET)}
    components = {k: v for k, v in renamed.items() if not k.startswith(LORA_TARGET)}

    if mode != "deep":
        if config.image_encoder.pretrained is None:
            raise CheckpointError(f"a {mode} checkpoint holds no Swin weights: the config must name `pretrained`")
        swin = SwinImageEncoder(config.image_encoder)
        swin.load_pretrained(resolve_model_path(config.image_encoder.pretrained, source))
        components.update({f"image_encoder.{k}": v for k, v in swin.state_dict().items()})
    if lora:
        alpha = lora_alpha if lora_alpha is not None else _hparam(loaded.get("config"), "vis_alpha")
        if alpha is None:
            raise CheckpointError("the checkpoint does not record `vis_alpha`: give the LoRA alpha explicitly")
        merge_lora(components, lora, float(alpha), report)

    if config.language_model.pretrained is None:
        raise CheckpointError("conversion needs a config whose language model is pretrained (Llama-2-7b-chat)")
    llm_dir = resolve_model_path(config.language_model.pretrained, source)
    llm_hidden_size = json.loads((llm_dir / "config.json").read_text())["hidden_size"]
    check_shapes(components, expected_shapes(config, llm_hidden_size), report)
    if not report.ok:
        raise CheckpointError("the R2GenGPT checkpoint does not convert cleanly:\n" + report.summary())

    destination.mkdir(parents=True, exist_ok=True)
    config = replace(config, name=f"r2gengpt-{mode}", classifier=None, lora=None)
    config.save(destination)
    save_file({k: v.contiguous() for k, v in components.items()}, str(destination / "model.safetensors"))
    load_tokenizer(config.language_model, source).save_pretrained(destination / "tokenizer")
    if source.resolve() != destination.resolve():
        link_language_model(source, destination, config.language_model.pretrained)
    report.notes.append(f"wrote {destination} from {checkpoint}")
    return report
