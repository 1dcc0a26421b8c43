"""Exceptions the library raises for problems a user can fix (bad input, missing files)."""


class RaDialogError(Exception):
    """Base class: the CLI prints these as one line and exits with code 2."""


class ImageLoadError(RaDialogError):
    """An image file is unreadable, unsupported, empty or too large."""


class CheckpointError(RaDialogError):
    """Weights are missing or do not fit the model."""


class InputError(RaDialogError):
    """A data file or argument is malformed (missing column, empty file, bad id)."""


class ContextOverflow(InputError):
    """A prompt that leaves too little of the LLM's context for the answer's token budget."""

    def __init__(self, length: int, budget: int) -> None:
        super().__init__(f"the conversation is {length} tokens, more than the {budget} the context allows")
        self.length, self.budget = length, budget
