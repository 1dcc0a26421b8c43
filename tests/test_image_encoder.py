"""ImageEncoder mirrors Microsoft's BioViL-T image model (hi-ml-multimodal) key for key and output for output."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

# hi-ml-multimodal (Microsoft's BioViL-T code) is the reference; scripts/install.sh installs it.
from health_multimodal.image.model import model as himl
from health_multimodal.image.model.types import ImageEncoderType

from radialog.errors import CheckpointError
from radialog.model import ImageEncoder, ImageEncoderConfig, RaDialogModel, get_preset

RELEASE_NAME = "biovil_t_image_model_proj_size_128.pt"  # as hi-ml-multimodal publishes BioViL-T
# hi-ml's ResNet-18 multi-image model: BioViL-T's layout and 14 × 14 grid at a quarter of ResNet-50's size.
RESNET18_BIOVIL_T = {"backbone": "resnet18", "image_size": 448, "resize": 512, "temporal_dim": 256}


@pytest.fixture(scope="module")
def reference_and_ours():
    torch.manual_seed(0)
    reference = himl.MultiImageModel(img_encoder_type=ImageEncoderType.RESNET50_MULTI_IMAGE, joint_feature_size=128)
    ours = ImageEncoder(ImageEncoderConfig(projection_dim=128, token_layer_norm=False))
    return reference.eval(), ours.eval()


def test_state_dict_keys_and_shapes_equal_biovil_t(reference_and_ours):
    reference, ours = reference_and_ours
    theirs = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    mine = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert mine == theirs


def test_biovil_t_weights_load_strictly_and_give_identical_embeddings(reference_and_ours):
    reference, ours = reference_and_ours
    ours.load_state_dict(reference.state_dict(), strict=True)
    torch.manual_seed(1)
    current, previous = torch.rand(2, 3, 448, 448), torch.rand(2, 3, 448, 448)
    with torch.no_grad():
        expected = reference(current).projected_patch_embeddings
        actual = ours(current).projected_patch_embeddings
        assert actual.shape == (2, 128, 14, 14)
        torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5)
        # The temporal path (current + previous study) goes through the transformer pooler.
        expected_pair = reference(current, previous).projected_patch_embeddings
        actual_pair = ours(current, previous).projected_patch_embeddings
        torch.testing.assert_close(actual_pair, expected_pair, rtol=1e-4, atol=1e-5)
        assert not torch.allclose(actual_pair, actual)


def test_radialog_head_gives_196_tokens_of_width_1408():
    encoder = ImageEncoder(ImageEncoderConfig()).eval()
    extra = {"ln_vision.weight", "ln_vision.bias"}
    assert extra <= set(encoder.state_dict())
    assert encoder.state_dict()["projector.model.3.weight"].shape == (1408, 1408, 1, 1)
    with torch.no_grad():
        tokens = encoder.visual_tokens(torch.rand(1, 3, 448, 448))
    assert tokens.shape == (1, 196, 1408)


def test_tokens_are_a_plain_reshape_of_the_channels_first_grid():
    encoder = ImageEncoder(ImageEncoderConfig(backbone="resnet18", image_size=224, resize=256, projection_dim=48))
    encoder.eval()
    image = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        grid = encoder(image).projected_patch_embeddings  # (1, 48, 7, 7)
        tokens = encoder.visual_tokens(image)
    expected = encoder.ln_vision(grid.reshape(1, -1, 48))
    torch.testing.assert_close(tokens, expected)
    permuted = encoder.ln_vision(grid.flatten(2).transpose(1, 2))
    assert not torch.allclose(tokens, permuted)


@pytest.mark.parametrize("image_size", [146, 224])
def test_mobilenet_trunk_gives_the_grid_the_config_promises(image_size):
    config = ImageEncoderConfig(
        backbone="mobilenet_v3_small", image_size=image_size, temporal_dim=32, projection_dim=40
    )
    encoder = ImageEncoder(config).eval()
    assert not any(k.startswith("encoder.encoder.classifier") for k in encoder.state_dict())  # trunk only
    # torchvision's 0.01 leaves the running statistics of a freshly trained trunk far behind its weights.
    assert {m.momentum for m in encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {0.1}
    with torch.no_grad():
        tokens = encoder.visual_tokens(torch.rand(2, 3, image_size, image_size))
        with_previous = encoder.visual_tokens(
            torch.rand(2, 3, image_size, image_size), torch.rand(2, 3, image_size, image_size)
        )
    assert tokens.shape == with_previous.shape == (2, config.num_patches, 40)


@pytest.fixture(scope="module")
def released_weights(tmp_path_factory):
    """A BioViL-T release file written from hi-ml's own ImageModel, every tensor set away from any fresh
    initialisation (BatchNorm statistics included) so that a skipped key cannot match by chance."""
    torch.manual_seed(2)
    reference = himl.ImageModel(img_encoder_type=ImageEncoderType.RESNET18_MULTI_IMAGE, joint_feature_size=128)
    state = {
        k: torch.randn_like(v) if v.is_floating_point() else torch.full_like(v, 7)
        for k, v in reference.state_dict().items()
    }
    path = tmp_path_factory.mktemp("biovil_t") / RELEASE_NAME
    torch.save(state, path)
    return path, state


def test_from_config_loads_biovil_t_weights_into_the_trunk_and_keeps_radialogs_projector(released_weights):
    path, state = released_weights
    config = get_preset("tiny")
    config = replace(config, image_encoder=ImageEncoderConfig(**RESNET18_BIOVIL_T, projection_dim=48))
    torch.manual_seed(0)
    fresh = RaDialogModel.from_config(config, device="cpu").image_encoder.state_dict()
    pretrained = replace(config.image_encoder, pretrained=str(path))
    torch.manual_seed(0)
    loaded = RaDialogModel.from_config(replace(config, image_encoder=pretrained), device="cpu").image_encoder
    ours = loaded.state_dict()
    trunk = {k: v for k, v in state.items() if k.startswith("encoder.")}
    assert trunk and trunk.keys() == {k for k in ours if k.startswith("encoder.")}
    for key, value in trunk.items():
        assert torch.equal(ours[key], value), key
    # BioViL-T's 128-d projector is not RaDialog's: ours, and ln_vision, keep their initialisation.
    for key in (k for k in ours if not k.startswith("encoder.")):
        assert torch.equal(ours[key], fresh[key]), key


def test_load_pretrained_accepts_the_directory_holding_the_release_file(released_weights):
    path, state = released_weights
    encoder = ImageEncoder(ImageEncoderConfig(**RESNET18_BIOVIL_T, projection_dim=48))
    encoder.load_pretrained(path.parent)
    key = "encoder.vit_pooler.blocks.0.attn.proj_q.weight"
    assert torch.equal(encoder.state_dict()[key], state[key])


class _TouchesOnUnpickling:
    """A pickled object that creates `marker` when unpickled: stands for code hidden in a weights file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def _saved(directory: Path, name: str, state: dict) -> str:
    torch.save(state, directory / name)
    return str(directory / name)


def test_load_pretrained_names_what_does_not_fit(released_weights, tmp_path):
    _, state = released_weights
    encoder = ImageEncoder(ImageEncoderConfig(**RESNET18_BIOVIL_T, projection_dim=48))
    before = {k: v.clone() for k, v in encoder.state_dict().items()}

    keys_off = {k: v for k, v in state.items() if k != "encoder.missing_previous_emb"}
    keys_off["classifier.fc_0.weight"] = torch.zeros(1)
    with pytest.raises(
        CheckpointError, match=r"1 missing \['encoder\.missing_previous_emb'\]; 1 unexpected \['classifier\.fc_0"
    ):
        encoder.load_pretrained(_saved(tmp_path, "keys.pt", keys_off))

    mis_shaped = {**state, "encoder.backbone_to_vit.weight": torch.zeros(128, 512, 1, 1)}
    with pytest.raises(CheckpointError, match=r"1 mis-shaped \['encoder\.backbone_to_vit\.weight \(128, 512"):
        encoder.load_pretrained(_saved(tmp_path, "shape.pt", mis_shaped))

    # BioViL-T's weights (a ResNet trunk) do not fit a MobileNet encoder.
    mobilenet = ImageEncoder(ImageEncoderConfig(backbone="mobilenet_v3_small", image_size=224, temporal_dim=256))
    with pytest.raises(CheckpointError, match=r"missing \['encoder\.encoder\.0\.0\.weight'"):
        mobilenet.load_pretrained(_saved(tmp_path, RELEASE_NAME, state))

    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"garbage\.pt"):
        encoder.load_pretrained(tmp_path / "garbage.pt")
    marker = tmp_path / "code-ran"
    with pytest.raises(CheckpointError, match=r"Python objects besides tensors"):
        encoder.load_pretrained(_saved(tmp_path, "code.pt", {**state, "x": _TouchesOnUnpickling(marker)}))
    assert not marker.exists()  # weights_only: the file's code never ran
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"BioViL-T image weights not found: .*empty/biovil_t_image_model"):
        encoder.load_pretrained(tmp_path / "empty")
    # Nothing was half-loaded on the way.
    assert all(torch.equal(v, before[k]) for k, v in encoder.state_dict().items())
