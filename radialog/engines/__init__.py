"""LLM engines: what turns a prompt's input embeddings into streamed text.

The model (`RaDialogModel`) computes: image → embeddings, the findings classifier, the prompt's input
embeddings (`prompt_embeds`). An engine generates from those embeddings:

- `TransformersEngine` runs the model's own LLM in this process and batches concurrent requests;
- `VLLMEngine` sends the embeddings to a vLLM OpenAI-compatible server (`--enable-prompt-embeds`)
  that serves the same LLM with its LoRA merged (`radialog export --merge-lora --format hf`).
"""

from radialog.engines.base import DecodingSettings, EngineError, EngineUnavailable, LLMEngine

__all__ = ["DecodingSettings", "EngineError", "EngineUnavailable", "LLMEngine"]
