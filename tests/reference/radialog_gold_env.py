"""The large, random parts of the gold release, rebuilt from seeds instead of stored.

Imported by both sides: by make_gold_release.py inside its throwaway environment (transformers 4.28.1, peft
0.3.0, RaDialog's code) and by tests/test_gold_parity.py in the project's environment. Both run the same
torch (2.14.1) and hi-ml-multimodal (0.2.2), so the same tensors come out on either side, to rounding: torch's
CPU `normal_` takes another vectorised path on another processor (AVX-512, AVX2 or none), which moves a draw
by an ulp or so. `state_statistics` records what a state is (keys, dtypes, shapes, per-tensor sums) and
`statistics_mismatches` names the tensors that differ by more than that rounding.

- `random_biovil_t_state`: a stand-in for Microsoft's `biovil_t_image_model_proj_size_128.pt` (~110 MB):
  hi-ml-multimodal's `ImageModel(RESNET50_MULTI_IMAGE, joint_feature_size=128)` with torchvision's random
  initialisation, its BatchNorm statistics and affine weights moved off their defaults so that loading
  the wrong ones shows.
- `classifier_state`: the weights of RaDialog's `LitIGClassifier` (Lightning `state_dict`, without the
  loss weights): the BioViL-T trunk fine-tuned a little (BatchNorm affine weights moved), a 128-d
  projector and the two-layer head drawn afresh. One seed per checkpoint file (best and `last.ckpt`).
"""

from __future__ import annotations

import math

import torch

BIOVIL_SEED = 1234
CLASSIFIER_SEEDS = {"best": 606, "last": 909}
CLASSIFIER_PREFIX = "model.biovil_encoder."
NUM_LABELS = 14


def tiny_bert_vocab(size: int) -> list[str]:
    """The word pieces of the tiny Q-Former's BERT tokenizer, standing in for bert-base-uncased's."""
    specials = ["[PAD]", "[unused0]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words = ["the", "heart", "lungs", "is", "are", "no", "normal", "size", "pleural", "effusion"]
    letters = list("abcdefghijklmnopqrstuvwxyz.,")
    return (specials + words + letters + [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"])[:size]


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _move_batch_norm(state: dict[str, torch.Tensor], generator: torch.Generator, statistics: bool) -> None:
    """Shift BatchNorm affine weights (and, with `statistics`, running statistics), in sorted key order."""
    for key in sorted(state):
        value = state[key]
        if not value.is_floating_point() or value.ndim != 1:
            continue
        owner = key.rsplit(".", 1)[0]
        if f"{owner}.running_var" not in state:
            continue  # not a BatchNorm
        name = key.rsplit(".", 1)[1]
        if name == "weight":
            state[key] = value * (1 + 0.05 * torch.randn(value.shape, generator=generator))
        elif name == "bias":
            state[key] = value + 0.05 * torch.randn(value.shape, generator=generator)
        elif statistics and name == "running_mean":
            state[key] = 0.1 * torch.randn(value.shape, generator=generator)
        elif statistics and name == "running_var":
            state[key] = 0.5 + torch.rand(value.shape, generator=generator)


def random_biovil_t_state() -> dict[str, torch.Tensor]:
    """hi-ml's BioViL-T image model at random, as the file Microsoft publishes would hold it."""
    from health_multimodal.image.model.model import ImageModel
    from health_multimodal.image.model.types import ImageEncoderType

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(BIOVIL_SEED)
        model = ImageModel(img_encoder_type=ImageEncoderType.RESNET50_MULTI_IMAGE, joint_feature_size=128)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    _move_batch_norm(state, _generator(BIOVIL_SEED), statistics=True)
    return state


def classifier_state(biovil: dict[str, torch.Tensor], which: str) -> dict[str, torch.Tensor]:
    """RaDialog's CheXpert classifier weights (`LitIGClassifier.state_dict()` less `criterion.*`)."""
    generator = _generator(CLASSIFIER_SEEDS[which])
    trunk = {k: v.clone() for k, v in biovil.items() if not k.startswith("projector.")}
    _move_batch_norm(trunk, generator, statistics=False)
    state = {CLASSIFIER_PREFIX + k: v for k, v in trunk.items()}
    projector = {k: v for k, v in biovil.items() if k.startswith("projector.")}
    for key in sorted(projector):
        value = projector[key]
        if key.endswith("num_batches_tracked"):
            new = torch.tensor(1000 + CLASSIFIER_SEEDS[which])
        elif key.endswith("running_var"):
            new = 0.5 + torch.rand(value.shape, generator=generator)
        elif value.ndim == 4:  # 1x1 conv (out, in, 1, 1)
            new = torch.randn(value.shape, generator=generator) / value.shape[1] ** 0.5
        else:
            new = 0.1 * torch.randn(value.shape, generator=generator) + (key.endswith(".weight") and value.ndim == 1)
        state[CLASSIFIER_PREFIX + key] = new.to(value.dtype)
    pooled = 128 * 4 * 4
    state["model.fc1.weight"] = 0.03 * torch.randn(512, pooled, generator=generator) / pooled**0.5
    state["model.fc1.bias"] = 0.1 * torch.randn(512, generator=generator)
    state["model.fc2.weight"] = torch.randn(NUM_LABELS, 512, generator=generator) / 512**0.5
    state["model.fc2.bias"] = 0.3 * torch.randn(NUM_LABELS, generator=generator)
    return state


def state_statistics(state: dict[str, torch.Tensor]) -> dict[str, list]:
    """Per tensor, in key order: dtype, shape, sum and sum of squares (in float64)."""
    statistics = {}
    for key in sorted(state):
        value = state[key].detach().cpu()
        wide = value.double()
        statistics[key] = [str(value.dtype), list(value.shape), wide.sum().item(), wide.square().sum().item()]
    return statistics


def statistics_mismatches(actual: dict[str, list], expected: dict[str, list], rtol: float = 1e-5) -> list[str]:
    """Keys missing on one side, or whose dtype, shape or sums differ by more than `rtol` (relative)."""
    mismatches = sorted(set(actual) ^ set(expected))
    for key in sorted(set(actual) & set(expected)):
        dtype, shape, total, squares = actual[key]
        expected_dtype, expected_shape, expected_total, expected_squares = expected[key]
        # A sum of signed values can be near zero: measure its error against the largest it could be.
        bound = math.sqrt(math.prod(shape) * expected_squares)
        if (
            (dtype, shape) != (expected_dtype, expected_shape)
            or abs(squares - expected_squares) > rtol * expected_squares
            or abs(total - expected_total) > rtol * bound
        ):
            mismatches.append(key)
    return mismatches
