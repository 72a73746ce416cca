"""ObjectStore on Google Cloud Storage (and fake-gcs-server through STORAGE_EMULATOR_HOST)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO

from google.cloud import storage  # type: ignore[attr-defined]

from shared.adapters.errors import call, translated


def split(uri: str) -> tuple[str, str]:
    """``gs://bucket/name`` -> ``(bucket, name)``."""
    if not uri.startswith("gs://"):
        raise ValueError(f"not a gs:// URI: {uri}")
    bucket, _, name = uri[5:].partition("/")
    return bucket, name


class GcsStore:
    """Objects in GCS; small writes carry generation preconditions."""

    def __init__(self, client: storage.Client) -> None:
        self.client = client

    def _blob(self, uri: str, generation: str | None = None) -> storage.Blob:
        bucket, name = split(uri)
        return self.client.bucket(bucket).blob(name, generation=int(generation) if generation else None)

    @contextmanager
    def open(self, uri: str, generation: str | None = None) -> Iterator[BinaryIO]:
        """Stream one object (of that generation) in 8 MiB chunks."""
        with translated(f"reading {uri}"), self._blob(uri, generation).open("rb", chunk_size=8 << 20) as reader:
            yield reader

    def read(self, uri: str) -> tuple[bytes, int] | None:
        """``(data, generation)`` of a small object, or None."""
        bucket, name = split(uri)
        blob = call(f"reading {uri}", lambda: self.client.bucket(bucket).get_blob(name))
        if blob is None:
            return None
        generation = int(blob.generation)
        data = call(f"reading {uri}", lambda: blob.download_as_bytes(if_generation_match=generation))
        return data, generation

    def write(self, uri: str, data: bytes, *, if_generation_match: int | None = None) -> int:
        """Write a small object (one request, so the precondition holds)."""
        blob = self._blob(uri)
        with translated(f"writing {uri}"):
            blob.upload_from_string(data, content_type="application/json", if_generation_match=if_generation_match)
        return int(blob.generation)

    @contextmanager
    def writer(self, uri: str) -> Iterator[BinaryIO]:
        """Stream a large object; it appears whole when the writer closes."""
        with translated(f"writing {uri}"), self._blob(uri).open("wb", chunk_size=8 << 20) as out:
            yield out

    def list(self, prefix_uri: str) -> list[str]:
        """Every object under a prefix (the emulator ignores match_glob: filter here)."""
        bucket, prefix = split(prefix_uri)
        blobs = call(f"listing {prefix_uri}", lambda: list(self.client.list_blobs(bucket, prefix=prefix)))
        return [f"gs://{bucket}/{b.name}" for b in blobs]

    def delete(self, uri: str) -> None:
        """Delete if present."""
        from google.api_core.exceptions import NotFound

        try:
            call(f"deleting {uri}", self._blob(uri).delete)
        except Exception as exc:
            if not isinstance(exc.__cause__, NotFound):
                raise
