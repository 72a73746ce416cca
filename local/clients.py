"""Real client libraries pointed at the local cloud (for the stack, the bridge, tests, the demo)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from pathlib import Path

import grpc
import orjson
from google.api_core import exceptions
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery, pubsub_v1, storage
from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport
from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcTransport

from local.stack import DEFAULT_STATE_DIR, Endpoints


def endpoints(state_dir: Path | None = None) -> Endpoints:
    """The endpoints of the running local cloud (from its state file; ``LOCAL_CLOUD_STATE_DIR`` overrides)."""
    state_dir = state_dir or Path(os.environ.get("LOCAL_CLOUD_STATE_DIR", DEFAULT_STATE_DIR))
    state = orjson.loads((state_dir / "state.json").read_bytes())
    return Endpoints(**state["endpoints"])


def storage_client(ends: Endpoints) -> storage.Client:
    """google-cloud-storage against fake-gcs-server."""
    return storage.Client(
        project=ends.project, credentials=AnonymousCredentials(), client_options={"api_endpoint": ends.gcs}
    )


def bigquery_client(ends: Endpoints, location: str | None = None) -> bigquery.Client:
    """google-cloud-bigquery against the BigQuery emulator (through the strict proxy).

    Without ``location`` the client looks jobs up in the US multi-region, as on GCP: jobs in a
    regional dataset (the wiring's) are then not found. Pass ``ends.location`` to find them.
    """
    return bigquery.Client(
        project=ends.project,
        credentials=AnonymousCredentials(),
        client_options=ClientOptions(api_endpoint=ends.bigquery),
        location=location,
    )


def publisher(ends: Endpoints) -> pubsub_v1.PublisherClient:
    """A publisher on a plain (insecure) channel to the emulator, whatever the environment says."""
    return pubsub_v1.PublisherClient(transport=PublisherGrpcTransport(channel=grpc.insecure_channel(ends.pubsub)))


def subscriber(ends: Endpoints) -> pubsub_v1.SubscriberClient:
    """A subscriber on a plain (insecure) channel to the emulator."""
    return pubsub_v1.SubscriberClient(transport=SubscriberGrpcTransport(channel=grpc.insecure_channel(ends.pubsub)))


def genai_client(ends: Endpoints, location: str | None = None):  # type: ignore[no-untyped-def]
    """A google-genai client in Vertex mode talking to our batch emulator (see NOTES §2)."""
    import google.oauth2.credentials
    from google import genai
    from google.genai import types

    return genai.Client(
        vertexai=True,
        project=ends.project,
        location=location or ends.location,
        credentials=google.oauth2.credentials.Credentials(token="local"),
        http_options=types.HttpOptions(base_url=ends.vertex, api_version="v1"),
    )


def ensure_topics(ends: Endpoints, topics: Iterable[str]) -> None:
    """Create the topics that do not exist yet."""
    client = publisher(ends)
    for topic in topics:
        with contextlib.suppress(exceptions.AlreadyExists):
            client.create_topic(name=client.topic_path(ends.project, topic))


def ensure_buckets(ends: Endpoints, buckets: Iterable[str]) -> None:
    """Create the buckets that do not exist yet."""
    client = storage_client(ends)
    for name in buckets:
        with contextlib.suppress(exceptions.Conflict):
            client.create_bucket(name)
