"""The composition root: the only place Google clients are built (once per process, lazily, under a lock).

A function serves concurrent requests on several threads. Two threads building "the cached
client" at once would make two, and the one nobody keeps is garbage-collected — google-genai's
``Client.__del__`` closes its connection, in the middle of that thread's request. So every
client is built once per process under one lock, and kept referenced for the process's life.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Hashable
from typing import Any, Final, TypeVar

from shared.config import Settings
from shared.ports import Ports

CREATE_TIMEOUT_MS: Final = 60_000  # every Vertex call gives up after this (the claim's margin covers it)
V = TypeVar("V")
_lock = threading.RLock()
_built: dict[Hashable, Any] = {}  # kept for the process's life


def _once(key: Hashable, build: Callable[[], V]) -> V:
    """What ``build`` makes for ``key``, built once per process under the lock."""
    found: V | None = _built.get(key)
    if found is None:
        with _lock:
            found = _built.get(key)
            if found is None:
                found = _built[key] = build()
    return found


def genai_client(location: str, project: str) -> Any:
    """The process's google-genai client for ``location`` (built once)."""
    return _once(("genai", location, project), lambda: _build_genai(location, project))


def _build_genai(location: str, project: str) -> Any:
    from google import genai
    from google.genai import types

    base_url = os.environ.get("VERTEX_BASE_URL")  # the local cloud's Vertex emulator
    if base_url:
        import google.oauth2.credentials

        return genai.Client(
            vertexai=True,
            project=project,
            location=location,
            credentials=google.oauth2.credentials.Credentials(token="local"),
            http_options=types.HttpOptions(base_url=base_url, api_version="v1", timeout=CREATE_TIMEOUT_MS),
        )
    return genai.Client(
        vertexai=True, project=project, location=location, http_options=types.HttpOptions(timeout=CREATE_TIMEOUT_MS)
    )


def _raw_get(name: str, location: str) -> dict[str, Any]:
    """Read a job over REST when the SDK cannot parse it (rare: structured error details)."""
    import requests

    base_url = os.environ.get("VERTEX_BASE_URL")
    if base_url:
        reply = requests.get(f"{base_url}/v1/{name}", timeout=60)
    else:
        import google.auth
        from google.auth.transport.requests import AuthorizedSession

        credentials, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
        reply = AuthorizedSession(credentials).get(
            f"https://{location}-aiplatform.googleapis.com/v1/{name}", timeout=60
        )
    reply.raise_for_status()
    return dict(reply.json())


def ports(settings: Settings) -> Ports:
    """The adapters for ``settings`` (built once per process; clients are reused across invocations)."""
    return _once(("ports", settings), lambda: _build_ports(settings))


def _build_ports(settings: Settings) -> Ports:
    from google.cloud import bigquery, pubsub_v1, storage  # type: ignore[attr-defined]

    from shared.adapters.bigquery import BigQueryWarehouse
    from shared.adapters.gcs import GcsStore
    from shared.adapters.pubsub import PubSubBus
    from shared.adapters.vertex import VertexBatchJobs

    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        storage_client = storage.Client(project=settings.project, credentials=AnonymousCredentials())
    else:
        storage_client = storage.Client(project=settings.project)
    bq_host = os.environ.get("BIGQUERY_EMULATOR_HOST")
    if bq_host:
        from google.api_core.client_options import ClientOptions
        from google.auth.credentials import AnonymousCredentials

        bq = bigquery.Client(
            project=settings.project,
            credentials=AnonymousCredentials(),
            client_options=ClientOptions(api_endpoint=bq_host),
            location=settings.bq_location,
        )
    else:
        bq = bigquery.Client(project=settings.project, location=settings.bq_location)
    return Ports(
        store=GcsStore(storage_client),
        jobs=VertexBatchJobs(lambda location: genai_client(location, settings.project), _raw_get),
        warehouse=BigQueryWarehouse(bq, settings.project, settings.dataset, settings.bq_location, _read_client),
        bus=PubSubBus(pubsub_v1.PublisherClient(), settings.project),
    )


def _read_client() -> Any:
    """The BigQuery Storage Read API client (gRPC; plaintext to the local cloud's emulator)."""
    from google.cloud import bigquery_storage_v1

    host = os.environ.get("BIGQUERY_STORAGE_EMULATOR_HOST")
    if not host:
        return bigquery_storage_v1.BigQueryReadClient()
    import grpc
    from google.auth.credentials import AnonymousCredentials
    from google.cloud.bigquery_storage_v1.services.big_query_read.transports import BigQueryReadGrpcTransport

    # As the client's own transport does: a ReadRows response (one Arrow record batch) can be
    # larger than gRPC's default 4 MiB.
    channel = grpc.insecure_channel(
        host, options=[("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
    )
    transport = BigQueryReadGrpcTransport(channel=channel, credentials=AnonymousCredentials())
    return bigquery_storage_v1.BigQueryReadClient(transport=transport)
