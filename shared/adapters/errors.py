"""Translate Google client exceptions into PermanentError / TransientError (the runtime's retry policy).

Network failures of every client library the adapters use (requests under google-cloud-*,
httpx under google-genai, grpc under Pub/Sub, google-auth's transport) are transient, and so
are BigQuery's rate and quota refusals, which come as 403 or 400 with a reason.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Final, TypeVar

import requests
from google.api_core import exceptions as gexc
from google.auth import exceptions as auth_exceptions

from shared.core.errors import ConflictError, RefusedError, TransientError

T = TypeVar("T")
RETRYABLE_CODES: Final = frozenset({408, 429, 500, 502, 503, 504})
# BigQuery error reasons that are the service's, not the request's (cloud.google.com/bigquery/docs/error-messages).
RETRYABLE_REASONS: Final = frozenset(
    {"backendError", "internalError", "rateLimitExceeded", "quotaExceeded", "jobBackendError", "jobInternalError"}
)


def _httpx_errors(*names: str) -> tuple[type[BaseException], ...]:
    """Exception classes ``names`` of httpx and of httpx2, whichever are installed.

    google-genai 3.x sends with httpx2 (a fork with its own classes) when it is installed,
    else httpx; 1.56 with httpx. Whichever is installed must be caught.
    """
    found: list[type[BaseException]] = []
    for module in ("httpx", "httpx2"):
        try:
            imported = importlib.import_module(module)
        except ImportError:
            continue
        found.extend(getattr(imported, name) for name in names)
    return tuple(found)


# The request never left: a connection could not be made (anything later may have been served).
NOT_SENT_ERRORS: Final[tuple[type[BaseException], ...]] = (
    requests.exceptions.ConnectTimeout,
    *_httpx_errors("ConnectError", "ConnectTimeout", "PoolTimeout"),
)


NETWORK_ERRORS: Final[tuple[type[BaseException], ...]] = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    *_httpx_errors("TransportError"),  # ConnectError, ReadError, RemoteProtocolError, timeouts...
    auth_exceptions.TransportError,
    ConnectionError,
    TimeoutError,
)


def reasons(exc: gexc.GoogleAPICallError) -> set[str]:
    """The ``reason`` of each error a Google API returned."""
    return {str(e.get("reason")) for e in (exc.errors or []) if isinstance(e, dict)}


@contextmanager
def translated(what: str) -> Iterator[None]:
    """Run a client call; re-raise its failure as one of ours, saying ``what`` failed."""
    try:
        yield
    except gexc.PreconditionFailed as exc:
        raise ConflictError(f"{what}: precondition failed") from exc
    except (gexc.TooManyRequests, gexc.ServerError, gexc.RetryError, gexc.DeadlineExceeded) as exc:
        raise TransientError(f"{what}: {exc}") from exc
    except gexc.GoogleAPICallError as exc:
        if reasons(exc) & RETRYABLE_REASONS:
            raise TransientError(f"{what}: {exc}") from exc
        raise RefusedError(f"{what}: {exc}", exc.code if isinstance(exc.code, int) else None) from exc
    except NETWORK_ERRORS as exc:
        raise TransientError(f"{what}: {type(exc).__name__}: {exc}") from exc


def call(what: str, fn: Callable[[], T]) -> T:
    """``fn()`` with its failures translated."""
    with translated(what):
        return fn()
