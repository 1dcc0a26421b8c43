"""`radialog train CONFIG.yaml`: the run configuration.

```yaml
preset: tiny                  # or `checkpoint: DIR` to start from saved weights
output_dir: outputs/run1
data:
  manifest: data/manifest.jsonl      # image-report pairs (classifier, alignment, report generation)
  instruct: data/instruct.jsonl      # optional: stage 2 trains on these conversations instead
stages: [classifier, alignment, language]
classifier: {max_steps: 200, batch_size: 32, lr: 1.0e-3}
alignment:  {max_steps: 200, batch_size: 32, lr: 1.0e-4, embed_dim: 256, max_text_tokens: 128}
language:   {max_steps: 400, batch_size: 16, lr: 3.0e-4, llm: lora, vision: frozen}
mixed_precision: "no"         # bf16 on GPUs that support it
dtype: float32                # bfloat16 (with mixed_precision: bf16) halves the frozen weights' memory
gradient_accumulation_steps: 1
```

Every stage also takes `warmup_steps`, `weight_decay`, `max_length` and `max_grad_norm` (null: no clipping).

The model is loaded and stored in `dtype`; what a stage trains is float32 while it trains (master weights,
`loop.to_float32`). A half `dtype` needs the matching `mixed_precision` (docs/training.md, "Precision").

The language stage's `llm` and `vision` settings give R2GenGPT's three modes (`R2GENGPT_MODES`): shallow
`{vision: frozen, llm: frozen}`, delta `{vision: lora, llm: frozen}` (LoRA r 16 / alpha 16 on the Swin's
query and value projections: `vision_lora`), deep `{vision: full, llm: frozen}`. RaDialog's recipe is
`{vision: frozen, llm: lora}`; with a frozen LLM, `{llm: frozen}`. Its `answer_weighting` is `token`
(the loss averages over answer tokens, RaDialog's) or `turn` (each answer turn weighs the same).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import yaml

from radialog.errors import InputError
from radialog.model.loading import DTYPES

STAGES = ("classifier", "alignment", "language")
LLM_MODES = ("lora", "full", "frozen")
VISION_MODES = ("frozen", "lora", "full")
ANSWER_WEIGHTINGS = ("token", "turn")
R2GENGPT_MODES = {
    "shallow": {"vision": "frozen", "llm": "frozen"},
    "delta": {"vision": "lora", "llm": "frozen"},
    "deep": {"vision": "full", "llm": "frozen"},
}
# The accelerate mixed precision each half storage dtype needs.
HALF_DTYPE_PRECISION = {"bfloat16": "bf16", "float16": "fp16"}


@dataclass
class VisionLora:
    """LoRA on the image encoder's attention (the targets are the encoder's); R2GenGPT's values."""

    r: int = 16
    alpha: int = 16
    dropout: float = 0.1


@dataclass
class StageConfig:
    max_steps: int = 100
    batch_size: int = 8
    lr: float = 1e-4
    warmup_steps: int = 10
    weight_decay: float = 0.05
    max_length: int = 600  # token cutoff for conversations (RaDialog: 600 report, 800 instruct)
    max_grad_norm: float | None = 1.0  # gradient clipping (None: none)
    # Alignment stage: width of the ITC embedding space (BLIP-2: 256) and the report-token cutoff of the
    # Q-Former's text branch.
    embed_dim: int = 256
    max_text_tokens: int = 128
    llm: str = "lora"  # language stage: train LoRA (RaDialog), the full LLM (random test models), or neither
    # Language stage, image side: frozen (its outputs cached), LoRA on the encoder's attention, or the
    # whole encoder and alignment module trained.
    vision: str = "frozen"
    vision_lora: VisionLora = field(default_factory=VisionLora)
    # Language stage: "token" averages the loss over every answer token (RaDialog); "turn" gives each
    # answer turn the same weight, so a one-word answer after a 60-token report is not drowned by it.
    answer_weighting: str = "token"
    # Language stage with llm "lora": further LLM modules to put LoRA on before training, e.g. the MLP
    # projections when a checkpoint's attention-only adapter cannot learn a task; trained layers are kept.
    lora_target_modules: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.llm not in LLM_MODES:
            raise InputError(f"llm must be one of {LLM_MODES}, got {self.llm!r}")
        if self.vision not in VISION_MODES:
            raise InputError(f"vision must be one of {VISION_MODES}, got {self.vision!r}")
        if self.answer_weighting not in ANSWER_WEIGHTINGS:
            raise InputError(f"answer_weighting must be one of {ANSWER_WEIGHTINGS}, got {self.answer_weighting!r}")
        if isinstance(self.vision_lora, dict):  # from YAML
            self.vision_lora = VisionLora(**self.vision_lora)
        if self.lora_target_modules is not None:
            if self.llm != "lora":
                raise InputError(f"lora_target_modules needs llm 'lora', got llm {self.llm!r}")
            self.lora_target_modules = tuple(self.lora_target_modules)  # YAML gives a list
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            raise InputError(f"max_grad_norm must be positive (or null for no clipping), got {self.max_grad_norm}")

    @property
    def train_vision(self) -> bool:
        """The image side changes in this stage, so its outputs cannot be cached."""
        return self.vision != "frozen"


@dataclass
class DataConfig:
    manifest: str
    instruct: str | None = None
    image_root: str | None = None  # images are relative to this (default: the manifest's folder)
    blind: bool = False  # replace every image by a blank one: the image-blind baseline of the learning check


@dataclass
class TrainConfig:
    data: DataConfig
    output_dir: str = "outputs/run"
    preset: str | None = "tiny"
    checkpoint: str | None = None
    stages: tuple[str, ...] = STAGES
    classifier: StageConfig = field(default_factory=lambda: StageConfig(lr=1e-3, batch_size=32))
    alignment: StageConfig = field(default_factory=lambda: StageConfig(lr=1e-4, batch_size=32))
    language: StageConfig = field(default_factory=lambda: StageConfig(lr=3e-4, batch_size=16))
    mixed_precision: str = "no"
    dtype: str = "float32"  # the model's storage dtype; trained parameters are float32 while trained
    gradient_accumulation_steps: int = 1
    seed: int = 0
    checkpoint_every: int = 100
    eval_max_samples: int = 200
    num_workers: int = 0

    def __post_init__(self) -> None:
        unknown = [s for s in self.stages if s not in STAGES]
        if unknown:
            raise InputError(f"unknown stages {unknown}; choose from {STAGES}")
        if self.checkpoint is not None:
            self.preset = None
        if self.dtype not in DTYPES:
            raise InputError(f"dtype must be one of {tuple(DTYPES)}, got {self.dtype!r}")
        needed = HALF_DTYPE_PRECISION.get(self.dtype)
        if needed is not None and self.mixed_precision != needed:
            raise InputError(
                f"dtype {self.dtype} needs mixed_precision {needed!r} (got {self.mixed_precision!r}): "
                "the half frozen weights and the float32 trained ones meet only under autocast"
            )

    def stage(self, name: str) -> StageConfig:
        return getattr(self, name)

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        extra = sorted(set(raw) - known)
        if extra:
            raise InputError(f"unknown training config keys: {extra}")
        if "data" not in raw:
            raise InputError("the training config needs a `data:` section with a `manifest`")
        values = dict(raw)
        values["data"] = DataConfig(**raw["data"])
        stage_keys = {f.name for f in fields(StageConfig)}
        for stage in STAGES:
            if stage in raw:
                extra = sorted(set(raw[stage]) - stage_keys)
                if extra:
                    raise InputError(f"unknown keys in the {stage} section: {extra}")
                values[stage] = StageConfig(**{**_stage_defaults(cls, stage), **raw[stage]})
        if "stages" in raw:
            values["stages"] = tuple(raw["stages"])
        return cls(**values)

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        path = Path(path)
        if not path.is_file():
            raise InputError(f"no such training config: {path}")
        raw = yaml.safe_load(path.read_text()) or {}
        if not isinstance(raw, dict):
            raise InputError(f"{path} must hold a YAML mapping")
        return cls.from_dict(raw)


def _stage_defaults(cls: type[TrainConfig], stage: str) -> dict[str, Any]:
    default = next(f for f in fields(cls) if f.name == stage).default_factory()
    return {f.name: getattr(default, f.name) for f in fields(default)}
