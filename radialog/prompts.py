"""RaDialog's (and R2GenGPT's) prompt wording and conversation formats.

The system prompt, the report instruction and the correction/QA prompts are RaDialog's training
wording, word for word: the released LoRA adapter answers best to exactly these strings. R2GenGPT's
instruction and Human/Assistant frame are likewise its training prompt, word for word.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

IMAGE_PLACEHOLDER = "<IMG>"
NUM_IMAGE_TOKENS = 32
USER, ASSISTANT = "USER", "ASSISTANT"

SYSTEM_PROMPT = (
    "A chat between a curious user and an artificial intelligence assistant acting as an experienced "
    "radiologist. The assistant gives professional, detailed, and polite answers to the user's questions."
)

REPORT_INSTRUCTION = (
    "You are to act as a radiologist and write the finding section of a chest x-ray radiology report for "
    "this X-ray image and the given predicted findings. Write in the style of a radiologist, write one fluent "
    "text without enumeration, be concise and don't provide explanations or reasons."
)

NO_FINDINGS_TEXT = "no common findings"

# Ours, not RaDialog's: said after the image when its embeddings also read a prior image (BioViL-T's
# temporal input); a prompt without a prior is RaDialog's, word for word.
PRIOR_SENTENCE = "A prior image of the same patient is available."

R2GENGPT_INSTRUCTION = "Generate a comprehensive and detailed diagnosis report for this chest xray image."
HUMAN, AI = "Human", "Assistant"


def format_predicted_findings(positive_labels: Iterable[str]) -> str:
    """RaDialog's findings text: lowercase names joined by ", ".

    "No Finding" is dropped when any finding other than it and "Support Devices" is present; an empty
    list reads "no common findings".
    """
    labels = list(positive_labels)
    if not labels:
        return NO_FINDINGS_TEXT
    if "No Finding" in labels and any(label not in ("No Finding", "Support Devices") for label in labels):
        labels.remove("No Finding")
    return ", ".join(labels).lower().strip()


def image_placeholders(num_tokens: int = NUM_IMAGE_TOKENS) -> str:
    return IMAGE_PLACEHOLDER * num_tokens


def build_report_prompt(
    predicted_findings: str, num_image_tokens: int = NUM_IMAGE_TOKENS, with_prior: bool = False
) -> str:
    """The first user message: image placeholders, predicted findings, and the report instruction."""
    return build_image_prefix(predicted_findings, num_image_tokens, with_prior) + REPORT_INSTRUCTION


def build_image_prefix(
    predicted_findings: str, num_image_tokens: int = NUM_IMAGE_TOKENS, with_prior: bool = False
) -> str:
    """RaDialog's image-and-findings sentence, to open a first message that is not the report instruction;
    `with_prior` adds `PRIOR_SENTENCE` before the findings."""
    prior = f"{PRIOR_SENTENCE} " if with_prior else ""
    image = f"Image information: {image_placeholders(num_image_tokens)}. "
    return f"{image}{prior}Predicted Findings: {predicted_findings}. "


def build_r2gengpt_image_prefix(num_image_tokens: int, with_prior: bool = False) -> str:
    """R2GenGPT wraps the image embeddings in `<Img>…</Img>`; it predicts no findings."""
    prior = f"{PRIOR_SENTENCE} " if with_prior else ""
    return f"<Img>{image_placeholders(num_image_tokens)}</Img> {prior}"


def build_r2gengpt_report_prompt(num_image_tokens: int, with_prior: bool = False) -> str:
    return build_r2gengpt_image_prefix(num_image_tokens, with_prior) + R2GENGPT_INSTRUCTION


def join_findings(findings: Sequence[str]) -> str:
    """RaDialog's list of findings in a sentence: lowercase, ", " between them and " and " before the last."""
    names = [name.lower() for name in findings]
    return " and ".join([", ".join(names[:-1]), names[-1]]) if len(names) > 1 else "".join(names)


def build_correction_prompt(remove: Sequence[str] = (), add: Sequence[str] = ()) -> str:
    """RaDialog's correction prompts for findings the report wrongly has (`remove`) or misses (`add`).

    "No Finding" is never named: RaDialog drops it from both lists before writing the prompt.
    """
    fp = join_findings([name for name in remove if name != "No Finding"])
    fn = join_findings([name for name in add if name != "No Finding"])
    if fp and fn:
        return (
            f"Please adapt the report with the following corrections: Include {fn} and remove {fp}. "
            "Don't make other changes."
        )
    if fp:
        return f"The patient does not have {fp}. Update the report. Don't make other changes."
    if fn:
        return f"The patient also has {fn}, correct the report. Don't make other changes."
    raise ValueError("a correction needs at least one finding to add or remove")


def build_finding_question(finding: str) -> str:
    """RaDialog's yes/no question, keeping the label's own capitalisation ("Is there any Pleural Effusion?").

    The leading space is RaDialog's: its evaluation appends `"</s>USER: " + " Is there any " + finding + "?"`,
    so the user turn it measured with reads `USER:  Is there any …` (two spaces), and the ids follow that.
    """
    return f" Is there any {finding}?"


# Region questions (RaDialog's RQA task) the app offers as ready-made questions. The embedded demo was
# trained on these wordings (instruct_data/synthetic_tasks.py); RaDialog's released adapter saw similar ones.
REGION_QUESTIONS = (
    "Is the patient's heart healthy?",
    "Are the patient's lungs healthy?",
    "Is there anything abnormal in the right lung?",
    "Is there anything abnormal in the left lung?",
    "Is there any problem with the pleura?",
    "Are there any medical devices visible in the image?",
)


@dataclass
class Conversation:
    """A system prompt and alternating user/assistant turns; the last assistant turn may be open."""

    system: str = SYSTEM_PROMPT
    messages: list[tuple[str, str | None]] = field(default_factory=list)

    def add_user(self, text: str) -> None:
        self.messages.append((USER, text))

    def add_assistant(self, text: str | None) -> None:
        self.messages.append((ASSISTANT, text))

    def render_vicuna(self, eos: str = "</s>") -> str:
        """Vicuna v1.1: `{system} USER: {msg} ASSISTANT: {reply}</s>USER: ...`, open with `ASSISTANT:`."""
        text = self.system + " "
        for role, message in self.messages:
            if message is None:
                text += f"{role}:"
            elif role == USER:
                text += f"{role}: {message} "
            else:
                text += f"{role}: {message}{eos}"
        return text

    def render_r2gengpt(self, eos: str = "</s>") -> str:
        """R2GenGPT: `Human: {msg} \\nAssistant: {reply}</s>`, open with `\\nAssistant:`; no system prompt.

        R2GenGPT itself is single-turn (one report per image); follow-up turns repeat the same frame so
        the chat tasks still work, though it was never trained on them. Its answer is a separate text
        after `Assistant:`, hence the space before each reply.
        """
        text = ""
        for role, message in self.messages:
            if role == USER:
                text += f"{HUMAN}: {message} \n{AI}:"
            elif message is not None:
                text += f" {message}{eos}"
        return text

    def as_chat_messages(self) -> list[dict[str, str]]:
        """OpenAI-style messages for a tokenizer's chat template (open assistant turn left out)."""
        roles = {USER: "user", ASSISTANT: "assistant"}
        chat = [{"role": "system", "content": self.system}]
        chat += [{"role": roles[role], "content": text} for role, text in self.messages if text is not None]
        return chat
