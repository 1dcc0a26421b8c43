"""Converting RaDialog v1's released files: synthetic checkpoints with the official key names
(`release_fixtures`). Conversion must give a checkpoint that loads strictly and computes exactly what the
reference computes.
"""

from __future__ import annotations

import shutil

import pytest
import torch
from release_fixtures import *  # noqa: F403 (pytest fixtures)
from release_fixtures import RELEASE_SEED, tiny_official_config

from radialog.cli import main
from radialog.convert import convert
from radialog.errors import CheckpointError
from radialog.model import RaDialogModel


def test_converted_checkpoint_loads_strictly_and_matches_the_reference(release, tmp_path):
    root, reference = release
    report = convert(root, tmp_path / "ckpt", "report", tiny_official_config(), projector_seed=RELEASE_SEED)
    assert report.ok and not report.missing and not report.unexpected
    unused = set(report.unused.values())
    assert "stage-1 language-modelling head" in unused
    assert "BioViL-T's 128-d projector, replaced by RaDialog's 1408-d one" in unused
    assert "training loss weights" in unused and "base LLM weights (taken from Vicuna)" in unused

    converted = RaDialogModel.from_pretrained(tmp_path / "ckpt", device="cpu")
    torch.manual_seed(3)
    size = reference.config.image_encoder.image_size
    pixels = torch.rand(2, 3, size, size)
    with torch.no_grad():
        assert torch.equal(converted.get_image_features(pixels), reference.get_image_features(pixels))
        assert torch.equal(converted.classifier(pixels), reference.classifier(pixels))
        embeds = reference.get_image_features(pixels[:1])
        ids = torch.tensor([[1, 40, 41] + [converted.image_token_id] * 32 + [42, 43]])
        assert torch.equal(converted(ids, image_embeds=embeds).logits, reference(ids, image_embeds=embeds).logits)
    assert converted.component_state_dict().keys() == reference.component_state_dict().keys()


def test_the_projector_comes_from_its_seed_and_another_seed_gives_other_image_features(release, tmp_path):
    root, reference = release
    report = convert(root, tmp_path / "right", "report", tiny_official_config(), projector_seed=RELEASE_SEED)
    assert f"5 projector tensors rebuilt from seed {RELEASE_SEED}" in report.summary()
    convert(root, tmp_path / "wrong", "report", tiny_official_config(), projector_seed=16)
    pixels = torch.rand(1, 3, 128, 128)
    right = RaDialogModel.from_pretrained(tmp_path / "right", device="cpu")
    wrong = RaDialogModel.from_pretrained(tmp_path / "wrong", device="cpu")
    with torch.no_grad():
        assert torch.equal(right.get_image_features(pixels), reference.get_image_features(pixels))
        assert not torch.allclose(wrong.get_image_features(pixels), reference.get_image_features(pixels))
    # The BatchNorm statistics are the stage-1 checkpoint's, whatever the seed.
    stats = "image_encoder.projector.model.1.running_var"
    assert torch.equal(wrong.component_state_dict()[stats], reference.component_state_dict()[stats])


def test_unknown_key_is_reported_and_nothing_is_written(release, tmp_path):
    root, _ = release
    broken = tmp_path / "release"
    shutil.copytree(root, broken)
    checkpoint = torch.load(root / "checkpoint_4.pth", weights_only=True)
    checkpoint["model"]["Qformer.bert.encoder.layer.0.surprise.weight"] = torch.zeros(1)
    torch.save(checkpoint, broken / "checkpoint_4.pth")
    with pytest.raises(
        CheckpointError, match=r"unexpected: 1: checkpoint_4\.pth:Qformer\.bert\.encoder\.layer\.0\.surprise"
    ):
        convert(broken, tmp_path / "out", "report", tiny_official_config())
    assert not (tmp_path / "out").exists()


def test_cli_reports_the_missing_stage1_checkpoint_in_one_line_without_a_traceback(tmp_path, capsys):
    code = main(["convert", "--source", str(tmp_path), "--to", str(tmp_path / "out")])
    assert code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == f"radialog convert: error: stage-1 checkpoint not found under {tmp_path} (see checkpoints/README.md)"
