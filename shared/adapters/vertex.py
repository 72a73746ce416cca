"""BatchJobs on Vertex AI with google-genai (1.56.0 to the latest)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from google.genai import Client, errors, types

from shared.adapters.errors import NETWORK_ERRORS, NOT_SENT_ERRORS
from shared.core.errors import RefusedError, Throttled, TransientError, UncertainError
from shared.ports import JobError, VertexJob


def _state(job: Any) -> str:
    state = job.state
    return str(getattr(state, "value", state))


def _error(error: Any) -> JobError | None:
    """A job's ``error`` (SDK object or REST dict) as a value."""
    if not error:
        return None
    get = error.get if isinstance(error, dict) else lambda name: getattr(error, name, None)
    code = get("code")
    message = get("message") or str(error)
    return JobError(code if isinstance(code, int) else None, None, str(message))


def _job(job: Any) -> VertexJob:
    return VertexJob(str(job.name), _state(job), _error(getattr(job, "error", None)))


def translate(what: str, exc: Exception, *, creating: bool = False) -> Exception:
    """An SDK or network failure as one of our errors (anything else is returned as it is).

    For ``batches.create`` (``creating``), a failure after the request may have been served —
    a 5xx, a timeout, a connection lost before the answer — is an UncertainError: the job may
    exist, and only finding it (the claim's lease protects that) may tell. 429 and 408 are
    definite refusals (429 is Throttled: the caller backs off); 401/403 may be IAM still
    propagating after a deploy: retried. Other 4xx
    (an unknown model, an invalid request) are RefusedError.
    """
    if isinstance(exc, errors.APIError):
        code = getattr(exc, "code", 0) or 0
        if code >= 500:
            kind = UncertainError if creating else TransientError
            return kind(f"{what}: {code} {exc}")
        if code == 429:
            return Throttled(f"{what}: {code} {exc}")
        if code in (401, 403, 408):
            return TransientError(f"{what}: {code} {exc}")
        return RefusedError(f"{what}: {code} {exc}", code, getattr(exc, "status", None) or None)
    if isinstance(exc, NETWORK_ERRORS):
        kind = UncertainError if creating and not isinstance(exc, NOT_SENT_ERRORS) else TransientError
        return kind(f"{what}: {type(exc).__name__}: {exc}")
    return exc


class VertexBatchJobs:
    """One google-genai client per location (``batches.get`` uses the client's location)."""

    def __init__(self, client_for: Callable[[str], Client], raw_get: Callable[[str, str], dict[str, Any]]) -> None:
        self.client_for = client_for
        self.raw_get = raw_get

    def create(
        self, *, model: str, input_uri: str, dest_prefix: str, display_name: str, labels: dict[str, str], location: str
    ) -> VertexJob:
        """``batches.create`` with labels (sent in the body: the config has no labels field)."""
        config = types.CreateBatchJobConfig(
            dest=dest_prefix,
            display_name=display_name,
            http_options=types.HttpOptions(extra_body={"labels": labels}),
        )
        try:
            job = self.client_for(location).batches.create(
                model=model, src=types.BatchJobSource(gcs_uri=[input_uri]), config=config
            )
        except Exception as exc:
            raise translate("creating a batch job", exc, creating=True) from exc
        return _job(job)

    def get(self, name: str, location: str) -> VertexJob:
        """``batches.get``; when the SDK cannot parse the job (structured error.details), read it raw."""
        try:
            job = self.client_for(location).batches.get(name=name)
        except (AttributeError, ValueError):  # 1.56: AttributeError; 3.x: pydantic ValidationError
            try:
                raw = self.raw_get(name, location)
            except Exception as exc:
                raise translate(f"reading {name}", exc) from exc
            return VertexJob(name, str(raw.get("state", "")), _error(raw.get("error")))
        except Exception as exc:
            raise translate(f"reading {name}", exc) from exc
        return _job(job)

    def find(self, labels: dict[str, str], location: str) -> VertexJob | None:
        """The newest job carrying all ``labels``."""
        query = " AND ".join(f'labels.{k}="{v}"' for k, v in sorted(labels.items()))
        try:
            for job in self.client_for(location).batches.list(config=types.ListBatchJobsConfig(filter=query)):
                return _job(job)
        except Exception as exc:
            raise translate("listing batch jobs", exc) from exc
        return None

    def cancel(self, name: str, location: str) -> None:
        """``batches.cancel``."""
        try:
            self.client_for(location).batches.cancel(name=name)
        except Exception as exc:
            raise translate(f"cancelling {name}", exc) from exc
