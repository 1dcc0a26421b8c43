"""RaDialog's frozen 1408-d projector, which no release file holds, rebuilt from its construction seed:
bit for bit what hi-ml-multimodal's `ImageModel` draws when RaDialog's `init_vision_encoder` builds it."""

from __future__ import annotations

import pytest
import torch
from health_multimodal.image.model.model import ImageModel
from health_multimodal.image.model.types import ImageEncoderType

from radialog.model import get_preset
from radialog.model.image_encoder import rebuild_projector


@pytest.mark.parametrize("seed", [42, 16])  # stage-1 training and embedding runs; RaDialog's demo.py
def test_rebuilt_projector_equals_the_one_hi_ml_builds_under_the_same_seed(seed):
    torch.manual_seed(seed)
    reference = ImageModel(img_encoder_type=ImageEncoderType.RESNET50_MULTI_IMAGE, joint_feature_size=1408)
    rebuilt = rebuild_projector(get_preset("radialog-v1").image_encoder, seed)
    expected = reference.projector.state_dict()
    assert rebuilt.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(rebuilt[key], value), key


def test_another_seed_gives_another_projector_and_the_global_random_state_is_kept():
    config = get_preset("tiny").image_encoder
    torch.manual_seed(5)
    before = torch.random.get_rng_state()
    a, b = rebuild_projector(config, 42), rebuild_projector(config, 16)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert not torch.equal(a["model.0.weight"], b["model.0.weight"])
    assert torch.equal(a["model.0.weight"], rebuild_projector(config, 42)["model.0.weight"])
