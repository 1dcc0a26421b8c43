"""RaDialogProcessor: everything between a study and the model's input tensors, and nothing the model computes.

As transformers' processors pair an image processor with a tokenizer, this one holds the image
preprocessing (the image encoder's and the classifier's), the prompt format and the tokenizer with
`<IMG>` added. A `PromptFormat` is an object per format rather than string checks spread over the code:
it renders a conversation and words the report request and the image prefix the way its model was
trained.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from radialog.imaging import ImageProcessorConfig, XRay, preprocess
from radialog.model.configuration import RaDialogConfig
from radialog.prompts import (
    IMAGE_PLACEHOLDER,
    Conversation,
    build_image_prefix,
    build_r2gengpt_image_prefix,
    build_r2gengpt_report_prompt,
    build_report_prompt,
)


class PromptFormat:
    """How one model family's prompts read. RaDialog's own (Vicuna v1.1 with the findings in the prompt) is
    the base; the other formats change what they must."""

    #: Whether the tokenizer adds its BOS; a chat template writes its own.
    add_special_tokens: bool = True

    def render(
        self, conversation: Conversation, tokenizer: PreTrainedTokenizerBase, add_generation_prompt: bool
    ) -> str:
        return conversation.render_vicuna(eos=tokenizer.eos_token)

    def report_prompt(self, predicted_findings: str, num_image_tokens: int, with_prior: bool = False) -> str:
        """The first user message asking for the report; `with_prior`: it says a prior image was read too."""
        return build_report_prompt(predicted_findings, num_image_tokens, with_prior)

    def image_prefix(self, predicted_findings: str, num_image_tokens: int, with_prior: bool = False) -> str:
        """What opens a first user message that is not the report request, so the image is read the same way."""
        return build_image_prefix(predicted_findings, num_image_tokens, with_prior)


class VicunaFormat(PromptFormat):
    """RaDialog: `USER: … ASSISTANT: …</s>` turns under Vicuna v1.1's system line."""


class ChatTemplateFormat(PromptFormat):
    """The tokenizer's own chat template (instruction-tuned LLMs such as the `mini` preset's SmolLM2)."""

    add_special_tokens = False

    def render(
        self, conversation: Conversation, tokenizer: PreTrainedTokenizerBase, add_generation_prompt: bool
    ) -> str:
        return tokenizer.apply_chat_template(
            conversation.as_chat_messages(), tokenize=False, add_generation_prompt=add_generation_prompt
        )


class R2GenGPTFormat(PromptFormat):
    """R2GenGPT: its own `Human: … Assistant:` turns, the image tokens only (it has no classifier)."""

    def render(
        self, conversation: Conversation, tokenizer: PreTrainedTokenizerBase, add_generation_prompt: bool
    ) -> str:
        return conversation.render_r2gengpt(eos=tokenizer.eos_token)

    def report_prompt(self, predicted_findings: str, num_image_tokens: int, with_prior: bool = False) -> str:
        return build_r2gengpt_report_prompt(num_image_tokens, with_prior)

    def image_prefix(self, predicted_findings: str, num_image_tokens: int, with_prior: bool = False) -> str:
        return build_r2gengpt_image_prefix(num_image_tokens, with_prior)


PROMPT_FORMATS: dict[str, PromptFormat] = {
    "vicuna_v1.1": VicunaFormat(),
    "chat_template": ChatTemplateFormat(),
    "r2gengpt": R2GenGPTFormat(),
}


@dataclass
class RaDialogProcessor:
    tokenizer: PreTrainedTokenizerBase
    prompt_format: PromptFormat
    num_image_tokens: int
    image_processor: ImageProcessorConfig
    classifier_image_processor: ImageProcessorConfig | None = None  # None: the model has no classifier

    @classmethod
    def from_config(cls, config: RaDialogConfig, tokenizer: PreTrainedTokenizerBase) -> RaDialogProcessor:
        classifier = config.classifier.image_encoder.processor if config.classifier is not None else None
        return cls(
            tokenizer=tokenizer,
            prompt_format=PROMPT_FORMATS[config.language_model.prompt_format],
            num_image_tokens=config.num_image_tokens,
            image_processor=config.image_encoder.processor,
            classifier_image_processor=classifier,
        )

    @property
    def image_token_id(self) -> int:
        return self.tokenizer.convert_tokens_to_ids(IMAGE_PLACEHOLDER)

    # ------------------------------------------------------------------ images
    def pixel_values(self, xray: XRay) -> torch.Tensor:
        """(1, 3, S, S): the image encoder's input."""
        return preprocess(xray.to_pil(), self.image_processor)[None]

    def classifier_pixel_values(self, xray: XRay) -> torch.Tensor | None:
        """(1, 3, S', S'): the findings classifier's input (its own resolution and normalisation)."""
        if self.classifier_image_processor is None:
            return None
        return preprocess(xray.to_pil(), self.classifier_image_processor)[None]

    # ------------------------------------------------------------------ text
    def render(self, conversation: Conversation, add_generation_prompt: bool = True) -> str:
        """The prompt text; `add_generation_prompt=False` for a closed conversation (training samples)."""
        return self.prompt_format.render(conversation, self.tokenizer, add_generation_prompt)

    def tokenize(self, conversation: Conversation) -> torch.Tensor:
        """(1, T) input ids of the rendered conversation, ready for generation."""
        text = self.render(conversation)
        encoded = self.tokenizer(text, return_tensors="pt", add_special_tokens=self.prompt_format.add_special_tokens)
        return encoded["input_ids"]

    def report_prompt(self, predicted_findings: str, with_prior: bool = False) -> str:
        """The first user message asking for the report, in the wording the model was trained on
        (`with_prior`: the image embeddings also read a prior image, and the prompt says so)."""
        return self.prompt_format.report_prompt(predicted_findings, self.num_image_tokens, with_prior)

    def image_prefix(self, predicted_findings: str, with_prior: bool = False) -> str:
        return self.prompt_format.image_prefix(predicted_findings, self.num_image_tokens, with_prior)

    def report_conversation(self, predicted_findings: str, with_prior: bool = False) -> Conversation:
        """The report request with its answer still open."""
        conversation = Conversation()
        conversation.add_user(self.report_prompt(predicted_findings, with_prior))
        conversation.add_assistant(None)
        return conversation
