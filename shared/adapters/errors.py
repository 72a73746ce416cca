"""Translate Google client exceptions into PermanentError / TransientError."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import requests
from google.api_core import exceptions as gexc

from shared.core.errors import ConflictError, PermanentError, TransientError

T = TypeVar("T")
RETRYABLE_CODES = frozenset({408, 429, 500, 502, 503, 504})


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
        raise PermanentError(f"{what}: {exc}") from exc
    except (requests.ConnectionError, requests.Timeout, ConnectionError, TimeoutError) as exc:
        raise TransientError(f"{what}: {exc}") from exc


def call(what: str, fn: Callable[[], T]) -> T:
    """``fn()`` with its failures translated."""
    with translated(what):
        return fn()
