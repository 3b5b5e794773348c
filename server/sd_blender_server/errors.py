"""What the engine raises to whoever drives it (the job queue): each message is one line meant
for the user."""
from __future__ import annotations


class EngineError(Exception):
    """A job the engine could not run; the message says why, in one line."""


class ModelLoadError(EngineError):
    """A model could not be loaded."""


class RequestRefused(EngineError):
    """The request names what this server does not serve (found when the job runs: e.g. a hub
    model whose family, read before its download, does not match)."""


class OutOfMemory(EngineError):
    """The device ran out of memory; what the job held has been given back."""

    def __init__(self) -> None:
        super().__init__("out of GPU memory: try a smaller width/height or fewer images")


class GenerationFailed(EngineError):
    """Anything else that went wrong while generating (the server's log has the traceback)."""


class JobCancelled(Exception):
    """Raised from the step callback when the job was cancelled or ran out of time."""
