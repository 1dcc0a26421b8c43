"""`radialog check-release`: image → report retrieval with the stage-1 heads, once per projector seed."""

from __future__ import annotations

import pytest
import torch
from release_fixtures import *  # noqa: F403 (pytest fixtures)
from release_fixtures import tiny_official_config

from radialog.check_release import (
    ALIGNED_RANK_SCORE,
    ReleaseCheck,
    _score,
    check_release,
    iu_retrieval_set,
)
from radialog.cli import main
from radialog.convert import convert
from radialog.errors import CheckpointError


@pytest.fixture(scope="module")
def converted(release, tmp_path_factory):
    root, _ = release
    destination = tmp_path_factory.mktemp("converted")
    convert(root, destination, "report", tiny_official_config())
    return destination


def test_iu_images_are_paired_with_their_own_reports_among_distractors(shared_cxr):
    retrieval = iu_retrieval_set(shared_cxr, distractors=20)
    assert len(retrieval.cases) == 8  # the eight IU films; the two NIH ones have no report
    assert len(retrieval.reports) == 5 + 20 and len(set(retrieval.reports)) == 25
    by_name = {case.image.name: retrieval.reports[case.report_index] for case in retrieval.cases}
    # Frontal and lateral views of one study share its report.
    assert by_name["iu_CXR1900_IM-0584-1001.png"] == by_name["iu_CXR1900_IM-0584-2001.png"]
    assert by_name["iu_CXR1900_IM-0584-1001.png"].startswith("There are XXXX sternotomy XXXX identified.")


def test_a_random_weight_release_scores_at_chance_for_every_seed(converted, shared_cxr, capsys):
    check = check_release(converted, iu_retrieval_set(shared_cxr, distractors=20), seeds=(42, 16))
    assert [s.seed for s in check.scores] == [42, 16]
    assert check.aligned_seed is None
    assert all(s.rank_score < ALIGNED_RANK_SCORE for s in check.scores)
    assert "chance level, as expected" in check.summary()
    code = main(["check-release", str(converted), "--iu-images", str(shared_cxr), "--distractors", "20"])
    out = capsys.readouterr().out
    assert code == 0 and "projector seed 42" in out and "projector seed 16" in out and "chance level" in out


def test_scores_count_where_each_images_own_report_ranks():
    own = torch.tensor([0, 1, 2, 3])
    aligned = torch.eye(4) + 0.01 * torch.arange(4.0)  # own report first for every image
    score = _score(42, aligned, own)
    assert (score.top1, score.top5, score.rank_score) == (1.0, 1.0, 1.0) and score.aligned
    reversed_ = -torch.eye(4)  # own report last
    assert _score(16, reversed_, own).rank_score == 0.0
    check = ReleaseCheck(4, 4, [_score(16, reversed_, own), score])
    assert check.aligned_seed.seed == 42
    assert "seed 42 aligns: convert with --projector-seed 42" in check.summary()


def test_a_checkpoint_without_stage1_heads_is_refused_with_the_reason(converted, tmp_path, shared_cxr):
    import shutil

    stripped = tmp_path / "stripped"
    shutil.copytree(converted, stripped, symlinks=True)
    (stripped / "alignment_heads.safetensors").unlink()
    with pytest.raises(CheckpointError, match="stage-1 heads"):
        check_release(stripped, iu_retrieval_set(shared_cxr, distractors=5))
