"""RaDialog: a conversational radiology assistant for chest X-rays."""

__version__ = "0.1.0"
