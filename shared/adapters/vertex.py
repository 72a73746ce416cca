"""BatchJobs on Vertex AI with google-genai (1.56.0 to the latest)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import requests
from google.genai import Client, errors, types

from shared.core.errors import PermanentError, TransientError
from shared.ports import VertexJob


def _state(job: Any) -> str:
    state = job.state
    return str(getattr(state, "value", state))


def _error(job: Any) -> str | None:
    error = getattr(job, "error", None)
    if error is None:
        return None
    message = getattr(error, "message", None) if not isinstance(error, dict) else error.get("message")
    return str(message or error)


def _translate(what: str, exc: Exception) -> Exception:
    if isinstance(exc, errors.APIError):
        code = getattr(exc, "code", 0) or 0
        if code in (408, 429) or code >= 500:
            return TransientError(f"{what}: {code} {exc}")
        return PermanentError(f"{what}: {code} {exc}")
    if isinstance(exc, (requests.ConnectionError, ConnectionError, TimeoutError)):
        return TransientError(f"{what}: {exc}")
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
            raise _translate("creating a batch job", exc) from exc
        return VertexJob(str(job.name), _state(job), _error(job))

    def get(self, name: str, location: str) -> VertexJob:
        """``batches.get``; when the SDK cannot parse the job (structured error.details), read it raw."""
        try:
            job = self.client_for(location).batches.get(name=name)
        except (AttributeError, ValueError):  # 1.56: AttributeError; 3.x: pydantic ValidationError
            raw = self.raw_get(name, location)
            error = raw.get("error") or {}
            return VertexJob(name, str(raw.get("state", "")), error.get("message") if error else None)
        except Exception as exc:
            raise _translate(f"reading {name}", exc) from exc
        return VertexJob(str(job.name), _state(job), _error(job))

    def find(self, labels: dict[str, str], location: str) -> VertexJob | None:
        """The newest job carrying all ``labels``."""
        query = " AND ".join(f'labels.{k}="{v}"' for k, v in sorted(labels.items()))
        try:
            for job in self.client_for(location).batches.list(config=types.ListBatchJobsConfig(filter=query)):
                return VertexJob(str(job.name), _state(job), _error(job))
        except Exception as exc:
            raise _translate("listing batch jobs", exc) from exc
        return None

    def cancel(self, name: str, location: str) -> None:
        """``batches.cancel``."""
        try:
            self.client_for(location).batches.cancel(name=name)
        except Exception as exc:
            raise _translate(f"cancelling {name}", exc) from exc
