"""The error hierarchy every layer shares.

Adapters translate SDK exceptions into these; the runtime decides from the class
whether an event is retried (TransientError) or dropped (PermanentError).
"""


class PipelineError(Exception):
    """Root of every error the pipeline raises on purpose."""


class PermanentError(PipelineError):
    """Retrying cannot help: bad input, a missing object, a rejected request."""


class TransientError(PipelineError):
    """Retrying may help: 429, 5xx, deadlines, lost connections."""


class UncertainError(TransientError):
    """Retrying may help, but the request may have taken effect (an answer lost, a timeout, a 5xx)."""

    kept_by: str | None = None  # the claim whose lease now guards against doing it twice


class Throttled(TransientError):
    """A rate or quota limit answered (429 RESOURCE_EXHAUSTED): nothing happened; wait before asking again."""


class StillRunning(TransientError):
    """A job (a BigQuery load) is not done within the time given to wait for it."""


class KeyCollisionError(PermanentError):
    """Two requests of one file would carry the same key."""


class ConflictError(PipelineError):
    """A conditional write lost: someone else changed the object first."""


class RefusedError(PermanentError):
    """A service refused a request for good (HTTP 4xx other than 408/429): its code and canonical status."""

    def __init__(self, message: str, code: int | None = None, status: str | None = None) -> None:
        super().__init__(message)
        self.code, self.status = code, status
