"""A small accelerate training loop shared by all stages: resumable, with progress bar and loss log.

Resumption is exact: the batch order is a pure function of (seed, step), and a checkpoint holds the
trainable parameters, optimizer, scheduler and step. Frozen weights are not stored: they are rebuilt
from the stage's starting point.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup

from radialog.training.config import StageConfig

logger = logging.getLogger(__name__)

STATE_FILE = "loop_state.json"


class StepBatchSampler(Sampler[list[int]]):
    """Batches for optimizer steps `start_step … total_steps`: epoch e is `randperm(n, seed + e)`."""

    def __init__(self, size: int, batch_size: int, seed: int, start_step: int, total_steps: int) -> None:
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.start_step, self.total_steps = start_step, total_steps
        self.batches_per_epoch = max(1, size // batch_size)

    def batch(self, step: int) -> list[int]:
        epoch, index = divmod(step, self.batches_per_epoch)
        order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + epoch))
        return order[index * self.batch_size : (index + 1) * self.batch_size].tolist()

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start_step, self.total_steps):
            yield self.batch(step)

    def __len__(self) -> int:
        return self.total_steps - self.start_step


@dataclass
class StageResult:
    losses: list[float]
    resumed_from: int


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Parameters being trained, plus every persistent buffer (BatchNorm statistics change in training too)."""
    state = model.state_dict()
    parameters = dict(model.named_parameters())
    return {
        name: value.detach().cpu().clone()
        for name, value in state.items()
        if name not in parameters or parameters[name].requires_grad
    }


def to_float32(model: nn.Module) -> list[tuple[torch.Tensor, torch.dtype]]:
    """Cast the trained parameters, and the floating-point buffers beside them (BatchNorm statistics), to
    float32; returns each with the dtype to cast it back to.

    float32 master weights: a bf16 weight ignores an update smaller than about 1/256 of itself. Whole
    trained modules go to float32, as in plain mixed precision, so a BatchNorm never mixes dtypes; autocast
    still computes in half.
    """
    cast: dict[int, tuple[torch.Tensor, torch.dtype]] = {}
    for module in model.modules():
        trained = [p for p in module.parameters(recurse=False) if p.requires_grad]
        if not trained:
            continue
        buffers = [b for b in module.buffers(recurse=False) if b.is_floating_point()]
        for tensor in trained + buffers:
            if id(tensor) not in cast:  # a tied weight is seen once per module that holds it
                cast[id(tensor)] = (tensor, tensor.dtype)
                tensor.data = tensor.data.float()
    return list(cast.values())


def save_loop_state(directory: Path, model: nn.Module, optimizer, scheduler, step: int, losses: list[float]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    torch.save(
        {"params": trainable_state(model), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()},
        directory / "state.pt",
    )
    # Written last: a checkpoint counts only once its state file is complete.
    (directory / STATE_FILE).write_text(json.dumps({"step": step, "losses": losses}))


def load_loop_state(directory: Path, model: nn.Module, optimizer, scheduler) -> tuple[int, list[float]]:
    meta = json.loads((directory / STATE_FILE).read_text())
    state = torch.load(directory / "state.pt", map_location="cpu", weights_only=True)
    model.load_state_dict(state["params"], strict=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return meta["step"], meta["losses"]


def run_stage(
    name: str,
    model: nn.Module,
    dataset: Dataset,
    collate: Callable,
    config: StageConfig,
    accelerator: Accelerator,
    state_dir: Path,
    seed: int,
    checkpoint_every: int,
    num_workers: int = 0,
) -> StageResult:
    """Train the parameters of `model` that require grad for `config.max_steps` optimizer steps;
    `model(batch)` returns the loss. They are float32 while they train and return to their dtype at the end."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"stage {name}: nothing to train")
    cast_back = to_float32(model)
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = get_cosine_schedule_with_warmup(optimizer, config.warmup_steps, config.max_steps)
    start, losses = 0, []
    if (state_dir / STATE_FILE).is_file():
        start, losses = load_loop_state(state_dir, model, optimizer, scheduler)
        logger.info("stage %s: resuming at step %d of %d", name, start, config.max_steps)
    accumulation = accelerator.gradient_accumulation_steps
    sampler = StepBatchSampler(
        len(dataset), config.batch_size, seed, start * accumulation, config.max_steps * accumulation
    )
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=num_workers)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    model.train()
    progress = tqdm(total=config.max_steps, initial=start, desc=f"{name}", disable=not accelerator.is_main_process)
    step, running = start, []
    for batch in loader:
        with accelerator.accumulate(model):
            loss = model(batch)
            accelerator.backward(loss)
            if accelerator.sync_gradients and config.max_grad_norm is not None:
                accelerator.clip_grad_norm_(params, config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
        running.append(loss.item())
        if not accelerator.sync_gradients:
            continue
        step += 1
        losses.append(sum(running) / len(running))
        running = []
        progress.update(1)
        progress.set_postfix(loss=f"{losses[-1]:.4f}")
        if math.isnan(losses[-1]):
            raise FloatingPointError(f"stage {name}: loss became NaN at step {step}")
        if step % checkpoint_every == 0 and step < config.max_steps and accelerator.is_main_process:
            save_loop_state(state_dir, accelerator.unwrap_model(model), optimizer, scheduler, step, losses)
    progress.close()
    for tensor, dtype in cast_back:  # checkpoints are stored in the model's dtype
        tensor.data = tensor.data.to(dtype)
    accelerator.unwrap_model(model).eval()
    return StageResult(losses=losses, resumed_from=start)


def plot_losses(losses: dict[str, list[float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = [s for s, values in losses.items() if values]
    fig, axes = plt.subplots(1, max(1, len(stages)), figsize=(4.5 * max(1, len(stages)), 3.5), squeeze=False)
    for ax, stage in zip(axes[0], stages, strict=False):
        ax.plot(range(1, len(losses[stage]) + 1), losses[stage])
        ax.set_title(f"stage: {stage}")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("loss")
        ax.set_yscale("log")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
