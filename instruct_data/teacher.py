"""A local causal LM that writes answers from a reference report, as Vicuna-13b did for RaDialog."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from radialog.errors import InputError
from radialog.prompts import SYSTEM_PROMPT, Conversation

logger = logging.getLogger(__name__)


@dataclass
class TeacherConfig:
    model_dir: str
    batch_size: int = 8
    max_new_tokens: int = 256
    device: str = "cpu"


class Teacher:
    """Greedy answers to "Report: ...\\n<question>" (RaDialog's teacher prompt), batched, left-padded."""

    def __init__(self, config: TeacherConfig):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if not Path(config.model_dir).is_dir():
            raise InputError(f"{config.model_dir}: teacher model folder not found")
        self.config = config
        self.tokenizer = AutoTokenizer.from_pretrained(config.model_dir, padding_side="left", local_files_only=True)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        dtype = torch.float16 if config.device.startswith("cuda") else torch.float32
        self.model = (
            AutoModelForCausalLM.from_pretrained(config.model_dir, dtype=dtype, local_files_only=True)
            .to(config.device)
            .eval()
        )

    def _prompt(self, report: str, question: str) -> str:
        message = f"Report: {report}\n{question}"
        if self.tokenizer.chat_template:
            chat = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": message}]
            return self.tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        conversation = Conversation()
        conversation.add_user(message)
        conversation.add_assistant(None)
        return conversation.render_vicuna()

    def answer(self, reports: Sequence[str], questions: Sequence[str]) -> list[str]:
        import torch

        prompts = [self._prompt(r, q) for r, q in zip(reports, questions, strict=True)]
        answers: list[str] = []
        size = self.config.batch_size
        for start in tqdm(range(0, len(prompts), size), desc="teacher", unit="batch", disable=None):
            batch = self.tokenizer(prompts[start : start + size], return_tensors="pt", padding=True)
            batch = batch.to(self.config.device)
            with torch.inference_mode():
                output = self.model.generate(
                    **batch,
                    max_new_tokens=self.config.max_new_tokens,
                    do_sample=False,
                    pad_token_id=self.tokenizer.pad_token_id,
                )
            new_tokens = output[:, batch["input_ids"].shape[1] :]
            answers += [text.strip() for text in self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]
        return answers
