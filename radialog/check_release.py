"""`radialog check-release`: does a converted release see chest X-rays the way it was trained to?

RaDialog's image side ends in a projector that no release file holds: `radialog convert` rebuilds it from
a seed (`rebuild_projector`). A wrong seed gives a model that loads, runs and writes fluent text about an
image it cannot see. This check tells the two apart with the stage-1 heads the release keeps: it scores
image → report retrieval (BLIP-2's contrastive similarity) on real radiographs with their own reports
among distractor reports, once per candidate seed. An aligned image side ranks a study's own report far
above chance; random weights (tests, `radialog-v1-random`) stay at chance level, as they should.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from safetensors.torch import load_file
from tqdm.auto import tqdm
from transformers import AutoTokenizer

from radialog.data import read_manifest
from radialog.errors import CheckpointError, InputError
from radialog.imaging import XRay, load_xray, preprocess
from radialog.labeler.iu_reports import iter_iu_reports
from radialog.model.alignment import ALIGNMENT_HEADS_NAME, AlignmentHeads, AlignmentModule
from radialog.model.configuration import CONFIG_NAME, RaDialogConfig
from radialog.model.image_encoder import ImageEncoder, rebuild_projector
from radialog.model.language_model import resolve_model_path
from radialog.release import PROJECTOR_SEEDS

logger = logging.getLogger(__name__)

MAX_TEXT_TOKENS = 256  # RaDialog's stage-1 max_txt_len
# A seed aligns when its rank score (1 = own report first, 0.5 = chance) is clearly above chance.
ALIGNED_RANK_SCORE = 0.75


@dataclass
class RetrievalCase:
    """One image and the index of its own report among the candidates."""

    image: Path
    report_index: int


@dataclass
class RetrievalSet:
    cases: list[RetrievalCase]
    reports: list[str]  # each case's own report first, then distractors


@dataclass
class SeedScore:
    seed: int | None  # None: the projector as stored in the checkpoint
    top1: float
    top5: float
    rank_score: float  # mean share of candidates ranked below the image's own report

    @property
    def aligned(self) -> bool:
        return self.rank_score >= ALIGNED_RANK_SCORE


@dataclass
class ReleaseCheck:
    images: int
    candidates: int
    scores: list[SeedScore]

    @property
    def aligned_seed(self) -> SeedScore | None:
        aligned = [s for s in self.scores if s.aligned]
        return max(aligned, key=lambda s: s.rank_score) if aligned else None

    def summary(self) -> str:
        chance1, chance5 = 1 / self.candidates, min(5, self.candidates) / self.candidates
        lines = [f"image → report retrieval: {self.images} images, {self.candidates} candidate reports each"]
        for s in self.scores:
            name = "stored projector" if s.seed is None else f"projector seed {s.seed}"
            lines.append(
                f"  {name}: top-1 {s.top1:.2f} (chance {chance1:.2f}), top-5 {s.top5:.2f} (chance {chance5:.2f}), "
                f"rank score {s.rank_score:.2f} (chance 0.50)"
            )
        best = self.aligned_seed
        if best is None:
            lines.append(
                "no projector aligns: chance level, as expected for random weights; for RaDialog's release, "
                "check the files and convert again"
            )
        elif best.seed is None:
            lines.append("the stored projector aligns")
        else:
            lines.append(f"seed {best.seed} aligns: convert with --projector-seed {best.seed}")
        return "\n".join(lines)


def iu_retrieval_set(image_dir: str | Path, distractors: int = 95, seed: int = 0) -> RetrievalSet:
    """IU X-ray images (PNG files named after their Open-i image id, optionally `iu_`-prefixed) with the
    findings of their own reports, read from torchxrayvision's archive, and `distractors` other reports."""
    images = sorted(Path(image_dir).glob("*.png"))
    stems = {path.stem.removeprefix("iu_"): path for path in images}
    own: dict[str, str] = {}  # report id → findings
    cases: list[tuple[Path, str]] = []
    pool: list[str] = []
    for report in iter_iu_reports():
        matched = [stems[i] for i in report.image_ids if i in stems]
        if matched and report.findings:
            own[report.id] = report.findings
            cases += [(path, report.id) for path in matched]
        elif report.findings:
            pool.append(report.findings)
    if not cases:
        raise InputError(f"no IU X-ray image in {image_dir} matches a report with findings (names like CXR7_IM-...)")
    ids = sorted(own)
    texts = [own[i] for i in ids]
    pool = sorted(set(pool) - set(texts))
    texts += random.Random(seed).sample(pool, min(distractors, len(pool)))
    return RetrievalSet([RetrievalCase(path, ids.index(i)) for path, i in cases], texts)


def manifest_retrieval_set(manifest: str | Path) -> RetrievalSet:
    """A manifest's images, each with its own findings among all the manifest's distinct findings."""
    records = [r for r in read_manifest(manifest) if r.findings.strip()]
    texts = sorted({r.findings for r in records})
    if len(texts) < 2:
        raise InputError(f"{manifest}: retrieval needs at least two different reports")
    root = Path(manifest).parent
    return RetrievalSet([RetrievalCase(root / r.image, texts.index(r.findings)) for r in records], texts)


def load_alignment_parts(directory: str | Path) -> tuple[RaDialogConfig, ImageEncoder, AlignmentModule, AlignmentHeads]:
    """The image encoder, the Q-Former with its text branch and the stage-1 heads of a checkpoint; the LLM
    is not loaded (retrieval never reaches it)."""
    directory = Path(directory)
    heads_path = directory / ALIGNMENT_HEADS_NAME
    if not (directory / CONFIG_NAME).is_file():
        raise CheckpointError(f"no RaDialog checkpoint at {directory} (missing {CONFIG_NAME})")
    if not heads_path.is_file():
        raise CheckpointError(
            f"{heads_path} is missing: the check needs the stage-1 heads (`radialog convert` keeps them)"
        )
    config = RaDialogConfig.load(directory)
    if config.image_encoder.kind != "biovil_t" or config.alignment.kind != "qformer":
        raise CheckpointError(f"{config.name} has no BioViL-T and Q-Former to check")
    heads_state = load_file(str(heads_path))
    state = {**load_file(str(directory / "model.safetensors")), **heads_state}
    encoder = ImageEncoder(config.image_encoder)
    alignment = AlignmentModule(
        replace(config.alignment, text_input=True),
        config.image_encoder.token_dim,
        state["alignment.language_projection.weight"].shape[0],
    )
    heads = AlignmentHeads(config.alignment.hidden_size, heads_state["vision_proj.weight"].shape[0])
    parts = (
        (encoder, _with_prefix(state, "image_encoder")),
        (alignment, _with_prefix(state, "alignment")),
        (heads, {k: v for k, v in heads_state.items() if not k.startswith("alignment.")}),
    )
    for module, part in parts:
        try:
            module.load_state_dict(part, strict=True)
        except RuntimeError as err:
            raise CheckpointError(f"{directory}: the stage-1 parts do not fit the model: {err}") from None
    return config, encoder.eval(), alignment.eval(), heads.eval()


@torch.no_grad()
def check_release(
    directory: str | Path,
    retrieval: RetrievalSet,
    seeds: Sequence[int] = PROJECTOR_SEEDS,
    keep_stored: bool = False,
    batch_size: int = 8,
) -> ReleaseCheck:
    """Retrieval scores per candidate projector seed (and, with `keep_stored`, for the stored projector)."""
    config, encoder, alignment, heads = load_alignment_parts(directory)
    tokenizer = AutoTokenizer.from_pretrained(
        resolve_model_path(config.alignment.text_tokenizer, directory, "Q-Former text tokenizer"),
        local_files_only=True,
    )
    tokens = tokenizer(
        retrieval.reports, padding=True, truncation=True, max_length=MAX_TEXT_TOKENS, return_tensors="pt"
    )
    ids, mask = tokens["input_ids"].split(batch_size), tokens["attention_mask"].split(batch_size)
    texts = torch.cat([alignment.text_features(i, m) for i, m in zip(ids, mask, strict=True)])  # (T, H)
    pixels = torch.stack([_pixels(load_xray(case.image), config) for case in retrieval.cases])
    own = torch.tensor([case.report_index for case in retrieval.cases])
    stored = {k: v.clone() for k, v in encoder.projector.state_dict().items()}
    scores = []
    for seed in ([None] if keep_stored else []) + list(seeds):
        projector = stored if seed is None else {**rebuild_projector(config.image_encoder, seed), **_stats(stored)}
        encoder.projector.load_state_dict(projector)
        batches = tqdm(pixels.split(batch_size), desc=f"projector seed {seed}", leave=False)
        queries = torch.cat([alignment.query_features(encoder.visual_tokens(batch)) for batch in batches])
        similarity = heads.similarity(queries, texts)  # (N, T)
        scores.append(_score(seed, similarity, own))
    return ReleaseCheck(len(retrieval.cases), len(retrieval.reports), scores)


def _with_prefix(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) + 1 :]: v for k, v in state.items() if k.startswith(prefix + ".")}


def _pixels(xray: XRay, config: RaDialogConfig) -> torch.Tensor:
    return preprocess(xray.to_pil(), config.image_encoder.processor)


def _stats(projector: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """BatchNorm statistics: buffers the stage-1 checkpoint stores, whatever the seed of the weights."""
    return {k: v for k, v in projector.items() if "running_" in k or "num_batches" in k}


def _score(seed: int | None, similarity: torch.Tensor, own: torch.Tensor) -> SeedScore:
    own_score = similarity.gather(1, own[:, None])  # (N, 1)
    above = (similarity > own_score).sum(1)  # candidates ranked above the image's own report
    below = (similarity < own_score).sum(1)
    return SeedScore(
        seed=seed,
        top1=float((above == 0).float().mean()),
        top5=float((above < 5).float().mean()),
        rank_score=float((below.float() / (similarity.shape[1] - 1)).mean()),
    )
