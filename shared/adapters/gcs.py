"""ObjectStore on Google Cloud Storage (and fake-gcs-server through STORAGE_EMULATOR_HOST)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import BinaryIO, cast

from google.api_core import exceptions as gexc
from google.cloud import storage  # type: ignore[attr-defined]

from shared.adapters.errors import call, translated

READ_CHUNK = 8 << 20  # one ranged request per 8 MiB; callers read in blocks (core.lines.iter_lines)
WRITE_BATCH = 1 << 20  # callers write line by line: BlobWriter is given ~1 MiB a call


class _Batched:
    """Joins small writes (one per line) into ~1 MiB ones: BlobWriter's per-call cost is Python's."""

    def __init__(self, out: BinaryIO) -> None:
        self.out, self.parts, self.pending = out, list[bytes](), 0

    def write(self, data: bytes) -> int:
        self.parts.append(data)
        self.pending += len(data)
        if self.pending >= WRITE_BATCH:
            self.flush()
        return len(data)

    def flush(self) -> None:
        if self.parts:
            self.out.write(b"".join(self.parts))
            self.parts.clear()
            self.pending = 0


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
    def open(self, uri: str, generation: str | None = None, start: int = 0) -> Iterator[BinaryIO]:
        """Stream one object (of that generation) from byte ``start``. ``BlobReader`` has no fast readline.

        A missing object (or generation) fails here, at open, not at the first read.
        """
        blob = self._blob(uri, generation)
        call(f"reading {uri}", blob.reload)
        with translated(f"reading {uri}"), blob.open("rb", chunk_size=READ_CHUNK) as reader:
            if start:
                reader.seek(start)  # the next read asks for the range from there
            yield reader

    def read(self, uri: str) -> tuple[bytes, int] | None:
        """``(data, generation)`` of a small object, or None."""
        bucket, name = split(uri)
        blob = call(f"reading {uri}", lambda: self.client.bucket(bucket).get_blob(name))
        if blob is None:
            return None
        generation = int(blob.generation)
        try:
            data = call(f"reading {uri}", lambda: blob.download_as_bytes(if_generation_match=generation))
        except Exception as exc:
            if isinstance(exc.__cause__, (gexc.NotFound, gexc.PreconditionFailed)):
                return self.read(uri)  # replaced or deleted between the two requests: read again
            raise
        return data, generation

    def generation(self, uri: str) -> str | None:
        """The object's current generation, or None."""
        bucket, name = split(uri)
        blob = call(f"reading {uri}", lambda: self.client.bucket(bucket).get_blob(name))
        return None if blob is None else str(blob.generation)

    def write(self, uri: str, data: bytes, *, if_generation_match: int | None = None) -> int:
        """Write a small object (one request, so the precondition holds)."""
        blob = self._blob(uri)
        with translated(f"writing {uri}"):
            blob.upload_from_string(data, content_type="application/json", if_generation_match=if_generation_match)
        return int(blob.generation)

    @contextmanager
    def writer(self, uri: str) -> Iterator[BinaryIO]:
        """Stream a large object; it appears whole when the block ends, and not at all when it fails."""
        # BlobWriter cancels its resumable upload when the block raises (and small objects are
        # only sent at close), so a failed writer never leaves a half-written object behind.
        with translated(f"writing {uri}"), self._blob(uri).open("wb", chunk_size=READ_CHUNK) as out:
            batched = _Batched(out)
            yield cast(BinaryIO, batched)
            batched.flush()  # not when the block failed: the upload is cancelled, nothing appears

    def copy(self, source_uri: str, target_uri: str, *, if_generation_match: int | None = None) -> int:
        """A server-side rewrite, call after call until done (a large object across buckets takes several)."""
        source, target = self._blob(source_uri), self._blob(target_uri)
        token: str | None = None
        what = f"copying {source_uri} to {target_uri}"
        while True:
            rewrite = partial(target.rewrite, source, token=token, if_generation_match=if_generation_match)
            token, _, _ = call(what, rewrite)
            if token is None:
                return int(target.generation)

    def upload(self, path: Path, uri: str) -> int:
        """Upload a local file, create-only (the precondition also lets the client retry its chunks)."""
        blob = self._blob(uri)
        with translated(f"writing {uri}"):
            blob.upload_from_filename(str(path), content_type="application/jsonl", if_generation_match=0)
        return int(blob.generation)

    def list(self, prefix_uri: str, updated_since: datetime | None = None) -> list[str]:
        """Every object under a prefix (``updated_since``: written since then; from the listing's own metadata)."""
        bucket, prefix = split(prefix_uri)
        blobs = call(f"listing {prefix_uri}", lambda: list(self.client.list_blobs(bucket, prefix=prefix)))
        return [
            f"gs://{bucket}/{b.name}"
            for b in blobs
            if updated_since is None or b.updated is None or b.updated >= updated_since
        ]

    def delete(self, uri: str) -> None:
        """Delete if present."""
        try:
            call(f"deleting {uri}", self._blob(uri).delete)
        except Exception as exc:
            if not isinstance(exc.__cause__, gexc.NotFound):
                raise

    def set_custom_time(self, uri: str, when: datetime) -> None:
        """Set ``customTime`` (GCS only lets it move forward: an earlier time is left as it is)."""
        blob = self._blob(uri)
        blob.custom_time = when
        try:
            call(f"updating {uri}", blob.patch)
        except Exception as exc:
            if not isinstance(exc.__cause__, (gexc.NotFound, gexc.BadRequest)):
                raise  # gone already, or a later custom time is set: nothing to do
