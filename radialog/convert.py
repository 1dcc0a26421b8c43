"""Converting RaDialog v1's released files into our `RaDialogModel.from_pretrained` layout.

Inputs (found anywhere under the source directory, as `radialog download` leaves them):

    checkpoint_4.pth                 stage-1 LAVIS `Blip2Qformer` checkpoint, weights under ['model']
    biovil_t_image_model_proj_size_128.pt   Microsoft's BioViL-T image model (hi-ml `ImageModel`)
    vicuna-7b-img-{report,instruct}/ peft LoRA adapter (+ `img_proj_layer`), `adapter_model.bin`
                                     or `pytorch_model.bin` (the release's README copies one to the other)
    *.ckpt under chexpert_train/     Lightning `LitIGClassifier` checkpoint, weights under ['state_dict']
    vicuna-7b-v1.3/                  the base LLM (with its tokenizer)

Every key of every input goes through one table of regex renames (`RULES`): it is mapped to our
name, or recognised as a stage-1/training leftover that inference does not use, or reported as
unexpected. The converted weights must then cover our model exactly (`missing` is an error).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from peft import LoraConfig
from safetensors.torch import save_file

from radialog.download import file_digest
from radialog.errors import CheckpointError
from radialog.model.alignment import ALIGNMENT_HEADS_NAME, AlignmentHeads, AlignmentModule
from radialog.model.classifier import build_findings_classifier
from radialog.model.configuration import RaDialogConfig
from radialog.model.image_encoder import ImageEncoder, rebuild_projector
from radialog.model.language_model import load_tokenizer, resolve_model_path
from radialog.model.presets import radialog_v1
from radialog.model.serialization import load_torch_file
from radialog.release import (
    ADAPTER_CHECKPOINTS,
    BIOVIL_FILE,
    BIOVIL_MD5,
    CLASSIFIER_DIR,
    CLASSIFIER_FILE,
    PROJECTOR_SEEDS,
    STAGE1_FILE,
    VARIANTS,
)

logger = logging.getLogger(__name__)

# The seed whose projector the LLM stage's image embeddings were computed with (its demo.py ran another).
PROJECTOR_SEED = PROJECTOR_SEEDS[0]
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_model.bin", "pytorch_model.bin")

# Which input a key comes from. The BioViL-T file only fills image-encoder weights that the stage-1
# checkpoint lacks: LAVIS saves only trainable parameters, and stage 1 froze the vision encoder.
STAGE1, BIOVIL, ADAPTER, CLASSIFIER = "checkpoint_4.pth", "BioViL-T", "adapter", "classifier"


@dataclass(frozen=True)
class Rule:
    """`pattern` (regex on a source key) → `target` (re.sub replacement), or target None: unused by inference."""

    source: str
    pattern: str
    target: str | None
    why: str = ""


LORA_TARGET = "adapter:"  # targets with this prefix go to the peft adapter file, not model.safetensors
HEADS_TARGET = "heads:"  # and these to the stage-1 heads file (ALIGNMENT_HEADS_NAME)

RULES: tuple[Rule, ...] = (
    # ---- stage-1 Q-Former (LAVIS BertLMHeadModel named `Qformer`) → transformers Blip2QFormerModel
    Rule(STAGE1, r"^query_tokens$", "alignment.query_tokens"),
    Rule(STAGE1, r"^Qformer\.bert\.embeddings\.LayerNorm\.", "alignment.qformer.layernorm."),
    Rule(
        STAGE1,
        r"^Qformer\.bert\.encoder\.layer\.(\d+)\.(attention|crossattention)\.self\.",
        r"alignment.qformer.encoder.layer.\1.\2.attention.",
    ),
    Rule(
        STAGE1,
        r"^Qformer\.bert\.encoder\.layer\.(\d+)\.(attention|crossattention)\.output\.",
        r"alignment.qformer.encoder.layer.\1.\2.output.",
    ),
    Rule(
        STAGE1,
        r"^Qformer\.bert\.encoder\.layer\.(\d+)\.(intermediate_query|output_query)\.",
        r"alignment.qformer.encoder.layer.\1.\2.",
    ),
    Rule(STAGE1, r"^visual_encoder\.", "image_encoder."),
    Rule(STAGE1, r"^ln_vision\.", "image_encoder.ln_vision."),
    # stage-1 parts inference does not read, kept for `radialog check-release`: the contrastive/matching heads
    # and the Q-Former's text branch (embeddings, text feed-forward)
    Rule(STAGE1, r"^(vision_proj|text_proj|itm_head)\.", HEADS_TARGET + r"\1."),
    Rule(STAGE1, r"^temp$", HEADS_TARGET + "temp"),
    Rule(
        STAGE1,
        r"^Qformer\.bert\.embeddings\.(word_embeddings|position_embeddings)\.",
        HEADS_TARGET + r"alignment.text_embeddings.\1.",
    ),
    Rule(STAGE1, r"^Qformer\.bert\.embeddings\.position_ids$", None, "text position ids (rebuilt on load)"),
    Rule(
        STAGE1,
        r"^Qformer\.bert\.encoder\.layer\.(\d+)\.(intermediate|output)\.",
        HEADS_TARGET + r"alignment.qformer.encoder.layer.\1.\2.",
    ),
    Rule(STAGE1, r"^Qformer\.cls\.", None, "stage-1 language-modelling head"),
    # ---- BioViL-T image model (hi-ml ImageModel keys are ours already)
    Rule(BIOVIL, r"^projector\.", None, "BioViL-T's 128-d projector, replaced by RaDialog's 1408-d one"),
    Rule(BIOVIL, r"^", "image_encoder."),
    # ---- stage-2 peft adapter: LoRA on q/v of the LLM, plus the image projection on the LlamaModel
    Rule(ADAPTER, r"^base_model\.model\.model\.img_proj_layer\.", "alignment.language_projection."),
    Rule(
        ADAPTER,
        r"^(base_model\.model\.model\.layers\.\d+\.self_attn\.[a-z_]+_proj\.lora_[AB])(?:\.default)?\.weight$",
        LORA_TARGET + r"\1.weight",
    ),
    Rule(ADAPTER, r"^base_model\.model\.", None, "base LLM weights (taken from Vicuna)"),
    # ---- findings classifier (Lightning LitIGClassifier → ChexpertClassifier as `model`)
    Rule(CLASSIFIER, r"^model\.biovil_encoder\.", "classifier.image_encoder."),
    Rule(CLASSIFIER, r"^model\.(fc1|fc2)\.", r"classifier.\1."),
    Rule(CLASSIFIER, r"^criterion\.", None, "training loss weights"),
)


@dataclass
class ConversionReport:
    """What happened to every source key. `missing` and `unexpected` must be empty for a good conversion."""

    mapped: dict[str, str] = field(default_factory=dict)  # "source:key" → our key
    unused: dict[str, str] = field(default_factory=dict)  # "source:key" → why inference does not need it
    unexpected: list[str] = field(default_factory=list)  # "source:key" that no rule knows
    missing: list[str] = field(default_factory=list)  # our keys that no source provides
    shape_mismatches: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.unexpected or self.missing or self.shape_mismatches)

    def summary(self) -> str:
        lines = [f"mapped {len(self.mapped)} tensors"]
        by_reason: dict[str, int] = {}
        for why in self.unused.values():
            by_reason[why] = by_reason.get(why, 0) + 1
        for why, count in sorted(by_reason.items()):
            lines.append(f"unused by inference: {count} tensors ({why})")
        for label, items in (
            ("missing", self.missing),
            ("unexpected", self.unexpected),
            ("shape mismatch", self.shape_mismatches),
        ):
            if items:
                lines.append(f"{label}: {len(items)}: {', '.join(items[:8])}{' …' if len(items) > 8 else ''}")
        lines.extend(self.notes)
        return "\n".join(lines)


def rename(source: str, key: str) -> tuple[str | None, str | None]:
    """(our key or None, reason when unused); (None, None) when no rule matches."""
    for rule in RULES:
        if rule.source != source:
            continue
        new_key, count = re.subn(rule.pattern, rule.target or "", key, count=1)
        if count:
            return (new_key, None) if rule.target is not None else (None, rule.why)
    return None, None


def map_state(
    source: str, state: dict[str, torch.Tensor], report: ConversionReport, overwrite: bool = True
) -> dict[str, torch.Tensor]:
    """Rename one input's keys through `RULES`, recording each decision in `report`."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            report.unused[f"{source}:{key}"] = "not a tensor"
            continue
        target, why = rename(source, key)
        if target is not None:
            out[target] = value
            report.mapped[f"{source}:{key}"] = target
        elif why is not None:
            report.unused[f"{source}:{key}"] = why
        else:
            report.unexpected.append(f"{source}:{key}")
    return out


# ---------------------------------------------------------------------------------------- reading inputs
def find_one(root: Path, patterns: Iterable[str], what: str) -> Path:
    for pattern in patterns:
        hits = sorted(p for p in root.rglob(pattern) if p.is_file())
        if len(hits) > 1:
            raise CheckpointError(f"{what}: several candidates under {root}: {', '.join(map(str, hits))}")
        if hits:
            return hits[0]
    raise CheckpointError(f"{what} not found under {root} (see checkpoints/README.md)")


def checkpoint_step(folder: Path) -> int | None:
    """The training step of a Hugging Face Trainer folder `checkpoint-N`, else None."""
    match = re.fullmatch(r"checkpoint-(\d+)", folder.name)
    return int(match.group(1)) if match else None


def find_adapter(root: Path, variant: str) -> Path:
    """The adapter weights of `variant`: in the Trainer checkpoint RaDialog's README names (report:
    checkpoint-11200, instruct: checkpoint-4800), else in the latest `checkpoint-N` by step, else in the
    adapter folder itself; `adapter_model.*` before the Trainer's `pytorch_model.bin` (the README copies
    one to the other)."""
    name = f"vicuna-7b-img-{variant}"
    folders = sorted(p for p in root.rglob(name) if p.is_dir())
    if not folders:
        raise CheckpointError(f"the {variant} adapter folder {name}/ is not under {root}")
    if len(folders) > 1:
        raise CheckpointError(f"several {name}/ folders under {root}: {', '.join(map(str, folders))}")
    folder = folders[0]
    steps = [p for p in folder.rglob("checkpoint-*") if p.is_dir() and checkpoint_step(p) is not None]
    steps.sort(key=checkpoint_step)
    named = [p for p in steps if p.name == ADAPTER_CHECKPOINTS[variant]]
    chosen = named[0] if named else (steps[-1] if steps else folder)
    for weights in ADAPTER_FILES:
        if (chosen / weights).is_file():
            return chosen / weights
    found = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    raise CheckpointError(
        f"no {' / '.join(ADAPTER_FILES)} in {chosen} (expected {ADAPTER_CHECKPOINTS[variant]}/); "
        f"{name}/ holds: {', '.join(found[:12]) or 'nothing'}"
    )


def find_classifier(root: Path) -> Path:
    """The CheXpert classifier checkpoint: the file RaDialog's demo loads, else the only `.ckpt` that is not
    Lightning's `last.ckpt` (written beside the best one by `save_last=True`)."""
    folder = next((p for p in sorted(root.rglob(CLASSIFIER_DIR)) if p.is_dir()), root)
    candidates = sorted(p for p in folder.rglob("*.ckpt") if p.is_file())
    named = [p for p in candidates if p.name == CLASSIFIER_FILE]
    if named:
        return named[0]
    best = [p for p in candidates if p.name != "last.ckpt"]
    if len(best) == 1:
        return best[0]
    listing = ", ".join(p.name for p in candidates) or "no .ckpt files"
    raise CheckpointError(f"classifier checkpoint {CLASSIFIER_FILE} not found under {folder} (found: {listing})")


def read_adapter(path: Path, allow_pickle: bool) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return load_torch_file(path, allow_pickle)


def unwrap(checkpoint: dict, key: str, path: Path) -> dict[str, torch.Tensor]:
    if key not in checkpoint:
        raise CheckpointError(f"{path} has no '{key}' entry (top-level keys: {sorted(checkpoint)[:8]})")
    return checkpoint[key]


# ---------------------------------------------------------------------------------------- expected layout
def expected_component_shapes(config: RaDialogConfig, llm_hidden_size: int) -> dict[str, torch.Size]:
    """Keys and shapes of `RaDialogModel.component_state_dict()` for `config`, built on the meta device."""
    with torch.device("meta"):
        parts = {
            "image_encoder": ImageEncoder(config.image_encoder),
            "alignment": AlignmentModule(config.alignment, config.image_encoder.projection_dim, llm_hidden_size),
            "classifier": build_findings_classifier(config.classifier),
        }
    return {f"{name}.{k}": v.shape for name, part in parts.items() for k, v in part.state_dict().items()}


def expected_heads_shapes(config: RaDialogConfig, embed_dim: int) -> dict[str, torch.Size]:
    """Keys and shapes of the stage-1 heads file: BLIP-2's heads, and what the Q-Former's text branch adds."""
    hidden, width = config.alignment.hidden_size, config.image_encoder.projection_dim
    with torch.device("meta"):
        plain = AlignmentModule(config.alignment, width, hidden).state_dict()
        with_text = AlignmentModule(replace(config.alignment, text_input=True), width, hidden).state_dict()
        heads = AlignmentHeads(hidden, embed_dim).state_dict()
    branch = {f"alignment.{k}": v.shape for k, v in with_text.items() if k not in plain}
    return branch | {k: v.shape for k, v in heads.items()}


def expected_lora_shapes(llm_config: dict, config: RaDialogConfig) -> dict[str, torch.Size]:
    """peft adapter keys (as saved, adapter name stripped) for q/k/v/o targets of a Llama."""
    hidden = llm_config["hidden_size"]
    heads = llm_config["num_attention_heads"]
    head_dim = llm_config.get("head_dim") or hidden // heads
    kv = llm_config.get("num_key_value_heads") or heads
    out_dims = {"q_proj": heads * head_dim, "k_proj": kv * head_dim, "v_proj": kv * head_dim, "o_proj": hidden}
    in_dims = {"o_proj": heads * head_dim}
    r = config.lora.r
    shapes = {}
    for layer in range(llm_config["num_hidden_layers"]):
        for module in config.lora.target_modules:
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{module}"
            shapes[f"{prefix}.lora_A.weight"] = torch.Size([r, in_dims.get(module, hidden)])
            shapes[f"{prefix}.lora_B.weight"] = torch.Size([out_dims[module], r])
    return shapes


def check_shapes(tensors: dict[str, torch.Tensor], expected: dict[str, torch.Size], report: ConversionReport) -> None:
    report.missing.extend(sorted(set(expected) - set(tensors)))
    for key in sorted(set(tensors) - set(expected)):
        report.unexpected.append(f"(renamed) {key}")
    for key in sorted(set(tensors) & set(expected)):
        if tensors[key].shape != expected[key]:
            report.shape_mismatches.append(f"{key}: {tuple(tensors[key].shape)} ≠ {tuple(expected[key])}")


# ---------------------------------------------------------------------------------------- conversion
def lora_settings_from_release(adapter_path: Path, config: RaDialogConfig, report: ConversionReport) -> RaDialogConfig:
    """Take r / alpha / dropout / targets from the release's adapter_config.json when it is there."""
    candidates = [adapter_path.parent / "adapter_config.json", *adapter_path.parent.parent.rglob("adapter_config.json")]
    found = next((p for p in candidates if p.is_file()), None)
    if found is None:
        report.notes.append(f"no adapter_config.json beside {adapter_path.name}: LoRA settings from the preset")
        return config
    data = json.loads(found.read_text())
    lora = replace(
        config.lora,
        r=int(data.get("r", config.lora.r)),
        alpha=int(data.get("lora_alpha", config.lora.alpha)),
        dropout=float(data.get("lora_dropout", config.lora.dropout)),
        target_modules=tuple(data.get("target_modules", config.lora.target_modules)),
    )
    return replace(config, lora=lora)


def link_language_model(source: Path, destination: Path, reference: str) -> None:
    """Make `reference` (relative, e.g. vicuna-7b-v1.3) resolve inside `destination` without copying 13 GB."""
    if Path(reference).is_absolute() or (destination / reference).exists():
        return
    found = resolve_model_path(reference, source).resolve()
    # Relative, so the pair still resolves when both directories are mounted elsewhere (Docker).
    link = destination / reference
    link.symlink_to(os.path.relpath(found, link.parent.resolve()), target_is_directory=True)


def convert(
    source: str | Path,
    destination: str | Path,
    variant: str = "report",
    config: RaDialogConfig | None = None,
    allow_pickle: bool = False,
    projector_seed: int = PROJECTOR_SEED,
) -> ConversionReport:
    """Convert the released files under `source` into a checkpoint directory at `destination`.

    The frozen 1408-d projector is in no release file; it is rebuilt from `projector_seed`
    (`rebuild_projector`), its BatchNorm statistics taken from the stage-1 checkpoint where stored.
    Raises CheckpointError (after writing nothing) when a key is missing, unexpected or mis-shaped.
    """
    if variant not in VARIANTS:
        raise CheckpointError(f"variant must be one of {VARIANTS}, got {variant!r}")
    source, destination = Path(source), Path(destination)
    if not source.is_dir():
        raise CheckpointError(f"source directory {source} does not exist")
    config = config or radialog_v1()
    if config.language_model.pretrained is None:
        raise CheckpointError("conversion needs a config whose language model is pretrained (the Vicuna base)")
    report = ConversionReport()

    stage1_path = find_one(source, [STAGE1_FILE], "stage-1 checkpoint")
    stage1 = map_state(STAGE1, unwrap(load_torch_file(stage1_path, allow_pickle), "model", stage1_path), report)
    biovil_path = find_one(source, [BIOVIL_FILE], "BioViL-T image model")
    md5 = file_digest(biovil_path, "md5")
    report.notes.append(
        f"{BIOVIL_FILE}: md5 matches BioViL-T v1.0"
        if md5 == BIOVIL_MD5
        else f"{BIOVIL_FILE}: md5 {md5} is not BioViL-T v1.0's ({BIOVIL_MD5}): a different or damaged file"
    )
    biovil_state = load_torch_file(biovil_path, allow_pickle)
    # Only fill what stage 1 did not store (it keeps BatchNorm buffers but drops frozen parameters).
    biovil = map_state(BIOVIL, biovil_state, report)
    filled = sorted(set(biovil) - set(stage1))
    differing = [k for k in sorted(set(biovil) & set(stage1)) if not torch.equal(biovil[k], stage1[k])]
    if differing:
        report.notes.append(f"{len(differing)} image-encoder tensors differ between the two files: {STAGE1} wins")
    report.notes.append(f"{len(filled)} image-encoder tensors taken from {BIOVIL_FILE}")
    projector = {
        f"image_encoder.projector.{k}": v
        for k, v in rebuild_projector(config.image_encoder, projector_seed).items()
        if f"image_encoder.projector.{k}" not in stage1
    }
    if projector:
        report.notes.append(
            f"{len(projector)} projector tensors rebuilt from seed {projector_seed} (RaDialog froze the projector, "
            f"so {STAGE1_FILE} does not hold them)"
        )
    adapter_path = find_adapter(source, variant)
    adapter = map_state(ADAPTER, read_adapter(adapter_path, allow_pickle), report)
    classifier_path = find_classifier(source)
    classifier = map_state(
        CLASSIFIER, unwrap(load_torch_file(classifier_path, allow_pickle), "state_dict", classifier_path), report
    )

    lora = {k[len(LORA_TARGET) :]: v for k, v in adapter.items() if k.startswith(LORA_TARGET)}
    heads = {k[len(HEADS_TARGET) :]: v for k, v in stage1.items() if k.startswith(HEADS_TARGET)}
    stage1 = {k: v for k, v in stage1.items() if not k.startswith(HEADS_TARGET)}
    components = {**{k: biovil[k] for k in filled}, **projector, **stage1, **classifier}
    components.update({k: v for k, v in adapter.items() if not k.startswith(LORA_TARGET)})

    config = lora_settings_from_release(adapter_path, config, report)
    llm_dir = resolve_model_path(config.language_model.pretrained, source)
    llm_config = json.loads((llm_dir / "config.json").read_text())
    check_shapes(components, expected_component_shapes(config, llm_config["hidden_size"]), report)
    check_shapes(lora, expected_lora_shapes(llm_config, config), report)
    if heads:
        # LAVIS sizes the text embeddings to its tokenizer (BERT's 30522 word pieces and `[DEC]`).
        words = heads.get("alignment.text_embeddings.word_embeddings.weight", torch.empty(0))
        positions = heads.get("alignment.text_embeddings.position_embeddings.weight", torch.empty(0))
        alignment = replace(config.alignment, vocab_size=len(words), max_text_length=len(positions))
        config = replace(config, alignment=alignment)
        embed_dim = len(heads.get("vision_proj.weight", torch.empty(0)))
        check_shapes(heads, expected_heads_shapes(config, embed_dim), report)
    else:
        report.notes.append(f"{STAGE1_FILE} holds no stage-1 heads: `radialog check-release` cannot run")
    if not report.ok:
        raise CheckpointError("the released files do not convert cleanly:\n" + report.summary())

    destination.mkdir(parents=True, exist_ok=True)
    config = replace(config, name=f"radialog-v1-{variant}")
    config.save(destination)
    save_file({k: v.contiguous() for k, v in components.items()}, str(destination / "model.safetensors"))
    if heads:
        save_file({k: v.contiguous() for k, v in heads.items()}, str(destination / ALIGNMENT_HEADS_NAME))
        report.notes.append(
            f"{len(heads)} stage-1 tensors (ITC/ITM heads, Q-Former text branch) kept in {ALIGNMENT_HEADS_NAME} "
            "for `radialog check-release`"
        )
    adapter_dir = destination / "adapter"
    adapter_dir.mkdir(exist_ok=True)
    save_file({k: v.contiguous() for k, v in lora.items()}, str(adapter_dir / "adapter_model.safetensors"))
    LoraConfig(
        r=config.lora.r,
        lora_alpha=config.lora.alpha,
        lora_dropout=config.lora.dropout,
        target_modules=list(config.lora.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    ).save_pretrained(str(adapter_dir))
    load_tokenizer(config.language_model, source).save_pretrained(destination / "tokenizer")
    if source.resolve() != destination.resolve():
        link_language_model(source, destination, config.language_model.pretrained)
    report.notes.append(
        f"wrote {destination} from {', '.join(map(os.fspath, (stage1_path, adapter_path, classifier_path)))}"
    )
    return report
