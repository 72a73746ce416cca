"""The composition root: the only place Google clients are built (once per process, lazily)."""

from __future__ import annotations

import os
from functools import cache
from typing import Any

from shared.config import Settings
from shared.ports import Ports


@cache
def _genai_client(location: str, project: str) -> Any:
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
            http_options=types.HttpOptions(base_url=base_url, api_version="v1"),
        )
    return genai.Client(vertexai=True, project=project, location=location)


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


@cache
def ports(settings: Settings) -> Ports:
    """Build the adapters for ``settings`` (cached: clients are reused across invocations)."""
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
        )
    else:
        bq = bigquery.Client(project=settings.project)
    return Ports(
        store=GcsStore(storage_client),
        jobs=VertexBatchJobs(lambda location: _genai_client(location, settings.project), _raw_get),
        warehouse=BigQueryWarehouse(bq, settings.project, settings.dataset),
        bus=PubSubBus(pubsub_v1.PublisherClient(), settings.project),
    )
