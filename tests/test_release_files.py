"""Finding RaDialog's release files by the names its README and demo use, whatever else lies beside them."""

from __future__ import annotations

from pathlib import Path

import pytest

from radialog.convert import find_adapter, find_classifier
from radialog.errors import CheckpointError


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_the_adapter_is_the_checkpoint_the_readme_names_not_the_alphabetically_last(tmp_path):
    folder = tmp_path / "release" / "vicuna-7b-img-instruct"
    for step in (4800, 9600):  # "checkpoint-9600" sorts after "checkpoint-4800" and "checkpoint-11200"
        touch(folder / f"checkpoint-{step}" / "pytorch_model.bin")
    assert find_adapter(tmp_path, "instruct") == folder / "checkpoint-4800" / "pytorch_model.bin"


def test_without_the_named_checkpoint_the_latest_step_is_taken_in_numeric_order(tmp_path):
    folder = tmp_path / "vicuna-7b-img-report"
    for step in (9000, 10000, 800):
        touch(folder / f"checkpoint-{step}" / "adapter_model.bin")
    assert find_adapter(tmp_path, "report") == folder / "checkpoint-10000" / "adapter_model.bin"


def test_the_adapter_file_is_preferred_over_the_trainers_copy(tmp_path):
    step = tmp_path / "vicuna-7b-img-report" / "checkpoint-11200"
    touch(step / "pytorch_model.bin")
    touch(step / "adapter_model.bin")
    assert find_adapter(tmp_path, "report") == step / "adapter_model.bin"


def test_an_adapter_folder_without_weights_lists_what_it_holds(tmp_path):
    touch(tmp_path / "vicuna-7b-img-report" / "checkpoint-11200" / "optimizer.pt")
    with pytest.raises(CheckpointError, match=r"checkpoint-11200/optimizer\.pt"):
        find_adapter(tmp_path, "report")


def test_the_classifier_is_the_demos_checkpoint_not_lightnings_last(tmp_path):
    folder = tmp_path / "chexpert_train"
    touch(folder / "last.ckpt")
    named = touch(folder / "ChexpertClassifier-epoch=06-val_f1=0.36.ckpt")
    touch(folder / "ChexpertClassifier-epoch=03-val_f1=0.31.ckpt")
    assert find_classifier(tmp_path) == named


def test_a_single_best_classifier_checkpoint_beside_last_is_taken(tmp_path):
    touch(tmp_path / "chexpert_train" / "last.ckpt")
    best = touch(tmp_path / "chexpert_train" / "ChexpertClassifier-epoch=09-val_f1=0.40.ckpt")
    assert find_classifier(tmp_path) == best


def test_an_ambiguous_classifier_folder_lists_its_checkpoints(tmp_path):
    touch(tmp_path / "chexpert_train" / "last.ckpt")
    with pytest.raises(CheckpointError, match=r"found: last\.ckpt"):
        find_classifier(tmp_path)
