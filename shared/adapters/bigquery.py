"""Warehouse on BigQuery: load jobs only (no streaming inserts), deterministic job ids, regional jobs.

Every job is created and looked up with the dataset's location: for a dataset outside the
US/EU multi-regions, ``jobs.get`` without it answers 404 as if the job did not exist.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from importlib import resources
from string import Template
from typing import Any

import orjson
from google.api_core import exceptions as gexc
from google.cloud import bigquery

from shared.adapters.errors import RETRYABLE_REASONS, call, translated
from shared.core.errors import PermanentError, StillRunning, TransientError
from shared.core.schema import load_schema
from shared.ports import LoadResult, LoadState

_PARTITION_FIELD = "loaded_at"


def schema_fields(table: str) -> list[bigquery.SchemaField]:
    """The table's schema from the shared schema file."""
    return [
        bigquery.SchemaField(f["name"], f["type"], mode=f["mode"], description=f["description"])
        for f in load_schema(table)
    ]


def view_query(project: str, dataset: str, view: str = "latest_predictions") -> str:
    """A view's query: ``latest_predictions`` (a row per run and key, its latest attempt), ``runs`` (a row per run)."""
    text = resources.files("shared.core.schemas").joinpath(f"{view}.sql").read_text()
    return Template(text).substitute(project=project, dataset=dataset)  # ${...}: Terraform's templatefile too


class BigQueryWarehouse:
    """The pipeline's dataset: predictions, batch_jobs, run_states; the views latest_predictions and runs."""

    def __init__(
        self,
        client: bigquery.Client,
        project: str,
        dataset: str,
        location: str,
        read_client: Callable[[], Any] | None = None,
    ) -> None:
        self.client, self.project, self.dataset, self.location = client, project, dataset, location
        self._read_client_factory = read_client
        self._read_client: Any = None

    @property
    def read_client(self) -> Any:
        """The BigQueryReadClient bq:// sources are read with (built when first needed: gRPC, Arrow)."""
        if self._read_client is None and self._read_client_factory is not None:
            self._read_client = self._read_client_factory()
        return self._read_client

    def table(self, name: str) -> str:
        """Fully qualified table id."""
        return f"{self.project}.{self.dataset}.{name}"

    def _get_job(self, job_id: str) -> Any:
        """The job ``job_id`` in the dataset's location, or None."""
        try:
            return call(f"reading load job {job_id}", lambda: self.client.get_job(job_id, location=self.location))
        except Exception as exc:
            if isinstance(exc.__cause__, gexc.NotFound):
                return None
            raise

    def load_once(self, job_id: str, source_uri: str | list[str], table: str, wait_seconds: float) -> LoadResult:
        """Absent -> create; 409 -> that job; PENDING/RUNNING -> wait (TransientError after ``wait_seconds``)."""
        job = self._get_job(job_id)
        if job is None:
            config = bigquery.LoadJobConfig(
                source_format=bigquery.SourceFormat.NEWLINE_DELIMITED_JSON,
                # No schema: the table's own applies. A column this code writes that the table does not
                # have yet (an upgrade before Terraform added it) is dropped, never a refused load.
                write_disposition=bigquery.WriteDisposition.WRITE_APPEND,
                create_disposition=bigquery.CreateDisposition.CREATE_NEVER,  # Terraform owns the tables
                ignore_unknown_values=True,  # rows carry the output line's own key/status members
                max_bad_records=0,
            )
            try:
                job = call(
                    f"loading {source_uri if isinstance(source_uri, str) else f'{len(source_uri)} files'}",
                    lambda: self.client.load_table_from_uri(
                        source_uri, self.table(table), job_id=job_id, job_config=config, location=self.location
                    ),
                )
            except Exception as exc:
                if not isinstance(exc.__cause__, gexc.Conflict):
                    raise
                job = self._get_job(job_id)  # created by another invocation (or our own lost answer)
                if job is None:
                    raise TransientError(f"load job {job_id} exists (409) but cannot be read yet") from exc
        deadline = time.monotonic() + wait_seconds
        delay = 0.5
        while job.state != "DONE":
            if time.monotonic() >= deadline:
                raise StillRunning(f"load job {job_id} still {job.state} after {wait_seconds:.0f} s")
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 10.0)
            call(f"reading load job {job_id}", job.reload)  # the job carries its location
        error = job.error_result
        if not error:
            return LoadResult(job_id, LoadState.DONE)
        reasons = {str(e.get("reason")) for e in [error, *(job.errors or [])] if isinstance(e, dict)}
        message = f"{error.get('reason')}: {error.get('message')}"
        return LoadResult(job_id, LoadState.FAILED, message, retryable=bool(reasons & RETRYABLE_REASONS))

    def _query(self, what: str, query: str, *parameters: Any, page_size: int | None = None) -> Any:
        """A parameterized query job in the dataset's location, waited for.

        Its rows as a list (every page read under the error translation), or, with
        ``page_size``, the RowIterator itself (a large result read page by page by the caller).
        """
        config = bigquery.QueryJobConfig(query_parameters=list(parameters))

        def run() -> Any:
            rows = self.client.query(query, job_config=config, location=self.location).result(page_size=page_size)
            return rows if page_size else list(rows)

        return call(what, run)

    def run_summary(self, run_id: str) -> dict[str, Any]:
        """Counts per outcome, attempts, tokens (from latest_predictions)."""
        query = f"""
            SELECT outcome, COUNT(*) AS n, MAX(attempt) AS max_attempt,
                   SUM(COALESCE(prompt_tokens, 0)) AS prompt_tokens,
                   SUM(COALESCE(candidates_tokens, 0)) AS candidates_tokens,
                   SUM(COALESCE(thoughts_tokens, 0)) AS thoughts_tokens,
                   SUM(COALESCE(total_tokens, 0)) AS total_tokens
            FROM `{self.table("latest_predictions")}` WHERE run_id = @run GROUP BY outcome
        """  # the table name is ours; the run id is a query parameter
        rows = self._query("summarizing a run", query, bigquery.ScalarQueryParameter("run", "STRING", run_id))
        counts = {r["outcome"]: int(r["n"]) for r in rows}
        tokens = {
            k: sum(int(r[k] or 0) for r in rows)
            for k in ("prompt_tokens", "candidates_tokens", "thoughts_tokens", "total_tokens")
        }
        return {
            "counts": counts,
            "rows": sum(counts.values()),
            "max_attempt": max((int(r["max_attempt"] or 0) for r in rows), default=0),
            "tokens": tokens,
            "table": self.table("latest_predictions"),
        }

    def output_history(self, prefix: str, days: int) -> dict[str, tuple[float, int]]:
        """Output tokens and answered rows per model version lately (the caller picks its family's versions)."""
        query = f"""
            SELECT model_version, SUM(COALESCE(candidates_tokens, 0) + COALESCE(thoughts_tokens, 0)) AS output,
                   COUNT(*) AS n
            FROM `{self.table("predictions")}`
            WHERE loaded_at >= TIMESTAMP_SUB(CURRENT_TIMESTAMP(), INTERVAL @days DAY)
              AND outcome IN ('SUCCEEDED', 'TRUNCATED') AND STARTS_WITH(model_version, @prefix)
            GROUP BY model_version
        """  # the partition filter keeps the scan to the days asked for
        rows = self._query(
            "reading the output history",
            query,
            bigquery.ScalarQueryParameter("prefix", "STRING", prefix),
            bigquery.ScalarQueryParameter("days", "INT64", days),
        )
        return {str(r["model_version"]): (float(r["output"] or 0), int(r["n"] or 0)) for r in rows}

    def results(self, run_id: str, outcomes: list[str]) -> tuple[int, Iterator[Any]]:
        """A run's latest rows (``outcomes`` only, when given): their count and Arrow record batches."""
        where = "run_id = @run" + (" AND outcome IN UNNEST(@outcomes)" if outcomes else "")
        query = f"SELECT * FROM `{self.table('latest_predictions')}` WHERE {where}"  # no ORDER BY: one sort of millions
        rows = self._query(
            "reading a run's rows",
            query,
            bigquery.ScalarQueryParameter("run", "STRING", run_id),
            bigquery.ArrayQueryParameter("outcomes", "STRING", outcomes),
            page_size=10_000,
        )
        # Through the Storage Read API (Arrow streams), not REST pages of JSON parsed row by row.
        return int(rows.total_rows or 0), iter(rows.to_arrow_iterable(bqstorage_client=self.read_client))

    def selected_keys(
        self, run_id: str, outcomes: list[str], error_statuses: list[str]
    ) -> Iterator[tuple[str, int | None]]:
        """(key, chunk) of a run's latest rows sent to Vertex with one of ``outcomes`` (and ``error_statuses``)."""
        where = "run_id = @run AND attempt > 0 AND outcome IN UNNEST(@outcomes)"
        if error_statuses:
            where += " AND error_status IN UNNEST(@statuses)"
        query = f"SELECT request_key, chunk FROM `{self.table('latest_predictions')}` WHERE {where}"
        rows = self._query(
            "selecting a run's rows to retry",
            query,
            bigquery.ScalarQueryParameter("run", "STRING", run_id),
            bigquery.ArrayQueryParameter("outcomes", "STRING", outcomes),
            bigquery.ArrayQueryParameter("statuses", "STRING", error_statuses),
            page_size=50_000,
        )
        with translated("reading the rows to retry"):
            for page in rows.pages:  # pages fetched under the error translation
                yield from ((str(row[0]), None if row[1] is None else int(row[1])) for row in page)

    def request_lines(self, table_uri: str) -> Iterator[bytes]:
        """Rows of a ``bq://project.dataset.table`` with a ``request`` column, as JSONL lines.

        Only ``key`` and ``request`` are read, in Arrow record batches through the Storage
        Read API (its streams read in parallel), not row by row through ``tabledata.list``.
        A ``request`` held as a JSON string (STRING or JSON column) is parsed; one that is
        not JSON stays a string, and the validator reports its line.
        """
        table_id = table_uri.removeprefix("bq://")
        with translated(f"reading {table_uri}"):
            table = self.client.get_table(table_id)
            fields = [f for f in table.schema if f.name in ("key", "request")]
            if not any(f.name == "request" for f in fields):
                raise PermanentError(f"{table_uri} has no 'request' column")
            rows = self.client.list_rows(table, selected_fields=fields)
            # A partition ($) or snapshot (@) decorator cannot be read with a read session: pages then.
            reader = None if "$" in table_id or "@" in table_id else self.read_client
            # Two streams, a short queue: one consumer (this thread) sets the pace, memory stays small.
            batches = rows.to_arrow_iterable(bqstorage_client=reader, max_stream_count=2, max_queue_size=2)
            for batch in batches:
                names = batch.schema.names
                keys = batch.column(names.index("key")).to_pylist() if "key" in names else None
                requests = batch.column(names.index("request")).to_pylist() if "request" in names else None
                for i in range(batch.num_rows):
                    line: dict[str, Any] = {}
                    if requests is not None:
                        request = requests[i]
                        if isinstance(request, str):
                            with contextlib.suppress(orjson.JSONDecodeError):  # the validator reports it
                                request = orjson.loads(request)
                        line["request"] = request
                    if keys is not None and keys[i] is not None:
                        line["key"] = keys[i]
                    yield orjson.dumps(line, default=str)

    def ensure(self, location: str | None = None) -> None:
        """Create the dataset, tables and view if missing (Terraform does this in GCP; the local cloud uses it)."""
        dataset = bigquery.Dataset(f"{self.project}.{self.dataset}")
        dataset.location = location or self.location
        self.client.create_dataset(dataset, exists_ok=True)
        predictions = bigquery.Table(self.table("predictions"), schema=schema_fields("predictions"))
        predictions.time_partitioning = bigquery.TimePartitioning(field=_PARTITION_FIELD)
        predictions.clustering_fields = ["run_id", "outcome"]
        self.client.create_table(predictions, exists_ok=True)
        jobs = bigquery.Table(self.table("batch_jobs"), schema=schema_fields("batch_jobs"))
        jobs.time_partitioning = bigquery.TimePartitioning(field=_PARTITION_FIELD)
        jobs.clustering_fields = ["run_id"]
        self.client.create_table(jobs, exists_ok=True)
        states = bigquery.Table(self.table("run_states"), schema=schema_fields("run_states"))
        states.time_partitioning = bigquery.TimePartitioning(field="updated_at")
        states.clustering_fields = ["run_id"]
        self.client.create_table(states, exists_ok=True)
        for name in ("latest_predictions", "runs"):
            view = bigquery.Table(self.table(name))
            view.view_query = view_query(self.project, self.dataset, name)
            self.client.create_table(view, exists_ok=True)
