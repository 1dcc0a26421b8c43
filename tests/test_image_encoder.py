"""ImageEncoder mirrors Microsoft's BioViL-T image model (hi-ml-multimodal) key for key and output for output."""

from __future__ import annotations

import pytest
import torch

# hi-ml-multimodal (Microsoft's BioViL-T code) is the reference; scripts/install.sh installs it.
from health_multimodal.image.model import model as himl
from health_multimodal.image.model.types import ImageEncoderType

from radialog.model import ImageEncoder, ImageEncoderConfig


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
