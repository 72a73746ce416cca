"""A strict front for the BigQuery emulator: what real BigQuery refuses is refused here too.

bqemulator ignores locations, silently accepts a reused job id and finishes every load at once.
This proxy stands between it and every client (the functions, the Vertex emulator, tests, the
demo), forwards every request and adds, switched on by default:

- **single-use job ids**: an insert whose id was used before (whatever that job's state) answers
  409 ``duplicate``. Ids are recorded from jobs.insert and from both upload kinds (resumable,
  multipart); jobs.query ids are server-made and recorded too.
- **regional jobs**: a job's location is its destination (or default) dataset's location, else
  the location the insert named, else the configured one. jobs.get, getQueryResults and
  jobs.cancel answer 404 unless the request's ``location`` names it (a request without one means
  ``US``); an insert naming a location other than its dataset's answers 404. Job resources carry
  ``jobReference.location``, so a client that got a job back can follow it.
- **faults** on loads (jobs.insert only): held PENDING/RUNNING for real seconds and forwarded to
  bqemulator only when due (so no row shows before DONE), or ended DONE with an ``errorResult``
  (nothing loaded, the id stays used); and on any insert, an error answer (403 ``quotaExceeded``,
  ``rateLimitExceeded``, 5xx) that creates nothing.

Rewritten on the way back: URLs naming bqemulator (the resumable ``Location`` header, links in
bodies) name the proxy; job references name the client's job id (bqemulator makes its own for
uploads) and the job's location.

Admin (not part of BigQuery)::

    GET  /_proxy/health
    POST /_proxy/faults  {"loads": [{"match": "<substring of job id or project.dataset.table>",
                                     "pending_seconds": 0, "running_seconds": 2.0,
                                     "fail": {"reason": "invalid", "message": "..."}, "count": 1}],
                          "inserts": [{"match": "...", "code": 403, "reason": "quotaExceeded",
                                       "message": "...", "count": 1}]}      (adds rules; GET lists)
    POST /_proxy/strict  {"job_ids": true, "locations": true}
    POST /_proxy/reset   clears the faults, strictness back on; used job ids stay used
    GET  /_proxy/jobs    every job seen: project, job_id, type, destination, state, location, created

``python -m local.bigquery_proxy --port N --backend URL --project P --location L``
"""

from __future__ import annotations

import argparse
import email.parser
import email.policy
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
import requests
from flask import Flask, Response, request
from werkzeug.serving import make_server

log = logging.getLogger("local.bigquery_proxy")

JOBS = "/bigquery/v2/projects/<project>/jobs"
UPLOADS = "/upload/bigquery/v2/projects/<project>/jobs"
KINDS = ("load", "query", "copy", "extract")
MESSAGES = {  # BigQuery's own texts for the insert faults tests inject most
    "quotaExceeded": "Quota exceeded: Your table exceeded quota for imports or query appends per table",
    "rateLimitExceeded": "Exceeded rate limits: too many table update operations for this table",
}
CANCELLED = {"reason": "stopped", "message": "Job execution was cancelled: User requested cancellation"}
_STATUS = {
    400: "INVALID_ARGUMENT",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}
# Not copied between the two connections: each side has its own framing and encoding.
_HOP = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "keep-alive", "accept-encoding", "content-encoding"}
)


class ApiError(Exception):
    """An answer in BigQuery's error shape."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message

    def body(self) -> dict[str, Any]:
        """The JSON body BigQuery sends with this error."""
        return {
            "error": {
                "code": self.code,
                "message": self.message,
                "errors": [{"message": self.message, "domain": "global", "reason": self.reason}],
                "status": _STATUS.get(self.code, "UNKNOWN"),
            }
        }


@dataclass
class Job:
    """A job the proxy has seen. Until ``forwarded`` (a held or failed load) the proxy answers for it."""

    project: str
    job_id: str
    kind: str
    location: str
    destination: str  # project.dataset.table, or "" (queries without one)
    created: float
    body: dict[str, Any]  # the insert request, sent to bqemulator when a held load is due
    state: str = "PENDING"
    forwarded: bool = False
    backend_id: str = ""  # bqemulator's id for it (its own one for uploads)
    rule: dict[str, Any] | None = None  # the load fault holding it back
    start_at: float = 0.0
    due_at: float = 0.0
    ended: float = 0.0
    error: dict[str, Any] | None = None  # errorResult when the proxy ended it
    resource: dict[str, Any] | None = None  # bqemulator's resource when a held load was forwarded
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    def summary(self) -> dict[str, Any]:
        """The row ``GET /_proxy/jobs`` lists."""
        return {
            "project": self.project,
            "job_id": self.job_id,
            "type": self.kind,
            "destination": self.destination,
            "state": self.state,
            "error_reason": (self.error or {}).get("reason"),
            "location": self.location,
            "created": datetime.fromtimestamp(self.created, UTC).isoformat(timespec="milliseconds"),
        }


def _ms(seconds: float) -> str:
    return str(int(seconds * 1000))


def _table_id(ref: dict[str, Any] | None) -> str:
    if not ref:
        return ""
    return f"{ref.get('projectId', '')}.{ref.get('datasetId', '')}.{ref.get('tableId', '')}"


def _same_location(asked: str | None, actual: str) -> bool:
    """BigQuery looks a job up in the named location; no location means the US multi-region."""
    return (asked or "US").lower() == actual.lower()


def _json(body: dict[str, Any], status: int = 200) -> Response:
    return Response(orjson.dumps(body), status=status, mimetype="application/json")


def _multipart_metadata(content_type: str, body: bytes) -> dict[str, Any]:
    """The job resource in the first part of a ``multipart/related`` upload."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
    )
    parts = [part for part in message.walk() if part is not message]
    payload = parts[0].get_payload(decode=True) if parts else None
    if not isinstance(payload, bytes):
        raise ApiError(400, "invalid", "a multipart upload starts with the job resource")
    return dict(orjson.loads(payload))


class Proxy:
    """Jobs seen, fault rules and strictness switches, in front of one bqemulator."""

    def __init__(self, backend: str, project: str, location: str) -> None:
        self.backend, self.project, self.location = backend.rstrip("/"), project, location
        self.lock = threading.Lock()
        self.jobs: dict[tuple[str, str], Job] = {}
        self.aliases: dict[tuple[str, str], str] = {}  # (project, bqemulator's id) -> client's id
        self.uploads: dict[str, Job] = {}  # resumable upload_id -> its job
        self.load_rules: list[dict[str, Any]] = []
        self.insert_rules: list[dict[str, Any]] = []
        self.strict_job_ids = True
        self.strict_locations = True
        self._local = threading.local()

    # --- bqemulator ------------------------------------------------------------------------
    def call(
        self,
        method: str,
        path: str,
        *,
        params: Any = None,
        data: bytes | None = None,
        body: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> requests.Response:
        """One request to bqemulator (one session per thread; redirects are the client's business)."""
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session.request(
            method,
            self.backend + path,
            params=params,
            data=orjson.dumps(body) if body is not None else data,
            headers=headers,
            allow_redirects=False,
            timeout=600,
        )

    def dataset_location(self, project: str, dataset: str) -> str | None:
        """Where bqemulator says the dataset is (it keeps the location it was created with)."""
        reply = self.call("GET", f"/bigquery/v2/projects/{project}/datasets/{dataset}")
        return str(reply.json().get("location") or "US") if reply.ok else None

    # --- the job registry ------------------------------------------------------------------
    def find(self, project: str, job_id: str) -> Job | None:
        """The job by the client's id or by bqemulator's id for it."""
        with self.lock:
            job = self.jobs.get((project, job_id))
            alias = self.aliases.get((project, job_id))
            return job or (self.jobs.get((project, alias)) if alias else None)

    def lookup(self, project: str, job_id: str, asked_location: str | None) -> Job | None:
        """The job a get/getQueryResults/cancel names; 404 when the request names another location."""
        job = self.find(project, job_id)
        if job is not None and self.strict_locations and not _same_location(asked_location, job.location):
            log.info(
                "job not found: location",
                extra={"job_id": job_id, "asked": asked_location, "location": job.location},
            )
            where = f"{asked_location}." if asked_location else ""
            raise ApiError(404, "notFound", f"Not found: Job {project}:{where}{job_id}")
        return job

    def reserve(self, project: str, meta: dict[str, Any]) -> Job:
        """Check a job about to be created (unused id, its dataset's location, no insert fault); record it."""
        ref = meta.setdefault("jobReference", {})
        ref.setdefault("projectId", project)
        job_id = ref.setdefault("jobId", f"job_{uuid.uuid4().hex}")
        config = meta.get("configuration") or {}
        kind = next((k for k in KINDS if k in config), "unknown")
        spec = config.get(kind) or {}
        destination = _table_id(spec.get("destinationTable"))
        dataset = spec.get("destinationTable") or spec.get("defaultDataset")
        found = self.dataset_location(dataset.get("projectId", project), dataset["datasetId"]) if dataset else None
        asked = ref.get("location")
        if dataset and found and asked and self.strict_locations and not _same_location(asked, found):
            name = f"{dataset.get('projectId', project)}:{dataset['datasetId']}"
            raise ApiError(404, "notFound", f"Not found: Dataset {name} was not found in location {asked}")
        with self.lock:
            if self.strict_job_ids and (project, job_id) in self.jobs:
                used = self.jobs[(project, job_id)]
                log.info("duplicate job id refused", extra={"job_id": job_id, "state": used.state})
                raise ApiError(409, "duplicate", f"Already Exists: Job {project}:{used.location}.{job_id}")
            rule = _take(self.insert_rules, job_id, destination)
            if rule is not None:
                log.info("insert fault", extra={"job_id": job_id, "code": rule.get("code", 403)})
                reason = str(rule.get("reason", "quotaExceeded"))
                message = rule.get("message") or MESSAGES.get(reason, f"{reason} (injected)")
                raise ApiError(int(rule.get("code", 403)), reason, str(message))
            job = Job(project, job_id, kind, found or asked or self.location, destination, time.time(), meta)
            self.jobs[(project, job_id)] = job
        return job

    def release(self, job: Job) -> None:
        """Forget a job bqemulator refused to create (its id can be used again, as on BigQuery)."""
        with self.lock:
            self.jobs.pop((job.project, job.job_id), None)

    def adopt(self, job: Job, resource: dict[str, Any]) -> None:
        """Remember the id bqemulator gave the job it created."""
        with job.lock:
            job.forwarded = True
            job.backend_id = str(resource.get("jobReference", {}).get("jobId") or job.job_id)
        with self.lock:
            self.aliases[(job.project, job.backend_id)] = job.job_id

    def present(self, project: str, resource: dict[str, Any]) -> dict[str, Any]:
        """A bqemulator job resource as BigQuery would send it: the client's job id, the job's location."""
        ref = resource.get("jobReference")
        job = self.find(project, ref["jobId"]) if isinstance(ref, dict) and ref.get("jobId") else None
        if job is None or ref is None:
            return resource
        ref.update(jobId=job.job_id, location=job.location)
        if "id" in resource:
            resource["id"] = f"{project}:{job.location}.{job.job_id}"
        state = resource.get("status", {}).get("state")
        if state:
            with job.lock:
                job.state = state
        return resource

    # --- held loads: the one place their state moves --------------------------------------
    def load_fault(self, job: Job) -> dict[str, Any] | None:
        """The load fault rule for a new load job, if one matches (uses up one of its ``count``)."""
        if job.kind != "load":
            return None
        with self.lock:
            return _take(self.load_rules, job.job_id, job.destination)

    def hold(self, job: Job, rule: dict[str, Any]) -> None:
        """Hold a load back as its fault says; a timer moves it on when due."""
        job.rule = rule
        job.start_at = job.created + float(rule.get("pending_seconds", 0))
        job.due_at = job.start_at + float(rule.get("running_seconds", 0))
        timer = threading.Timer(max(0.0, job.due_at - time.time()), self.advance, (job,))
        timer.daemon = True
        timer.start()
        log.info("load held", extra={"job_id": job.job_id, "destination": job.destination, "rule": rule})
        self.advance(job)

    def advance(self, job: Job) -> None:
        """PENDING -> RUNNING -> DONE on the fault's clock; when due, fail it or forward it to bqemulator."""
        with job.lock:
            if job.forwarded or job.state == "DONE" or job.rule is None:
                return
            now = time.time()
            if now < job.due_at:
                job.state = "PENDING" if now < job.start_at else "RUNNING"
                return
            fail = job.rule.get("fail")
            if fail:
                self.end(
                    job,
                    {
                        "reason": str(fail.get("reason", "invalid")),
                        "message": str(fail.get("message", "load failed (injected)")),
                    },
                )
                return
            reply = self.call("POST", f"/bigquery/v2/projects/{job.project}/jobs", body=job.body)
            if not reply.ok:
                self.end(
                    job, {"reason": "backendError", "message": f"bqemulator answered {reply.status_code}: {reply.text}"}
                )
                return
            self.adopt(job, reply.json())
            job.resource = self.present(job.project, reply.json())
            log.info("held load forwarded", extra={"job_id": job.job_id, "destination": job.destination})

    def end(self, job: Job, error: dict[str, Any]) -> None:
        """End a job the proxy holds as DONE with ``error`` (nothing was loaded)."""
        with job.lock:
            job.state, job.error, job.ended = "DONE", error, time.time()
        log.info("load ended with an error", extra={"job_id": job.job_id, "reason": error["reason"]})

    def view(self, job: Job) -> dict[str, Any]:
        """The job resource for a job the proxy answers for."""
        with job.lock:
            if job.resource is not None:
                return job.resource
            status: dict[str, Any] = {"state": job.state}
            if job.error:
                status.update(errorResult=job.error, errors=[job.error])
            stats = {"creationTime": _ms(job.created)}
            if job.state != "PENDING":
                stats["startTime"] = _ms(job.start_at)
            if job.state == "DONE":
                stats["endTime"] = _ms(job.ended)
            ref = {"projectId": job.project, "jobId": job.job_id, "location": job.location}
            return {
                "kind": "bigquery#job",
                "id": f"{job.project}:{job.location}.{job.job_id}",
                "jobReference": ref,
                "configuration": job.body.get("configuration", {}),
                "status": status,
                "statistics": stats,
            }

    # --- admin ------------------------------------------------------------------------------
    def add_faults(self, body: dict[str, Any]) -> dict[str, Any]:
        """Append fault rules; return all current ones."""
        with self.lock:
            self.load_rules.extend(dict(rule) for rule in body.get("loads", []))
            self.insert_rules.extend(dict(rule) for rule in body.get("inserts", []))
            return {"loads": list(self.load_rules), "inserts": list(self.insert_rules)}

    def reset(self) -> None:
        """No faults, strict again. Used job ids stay used, as on BigQuery."""
        with self.lock:
            self.load_rules.clear()
            self.insert_rules.clear()
            self.strict_job_ids = self.strict_locations = True


def _take(rules: list[dict[str, Any]], job_id: str, destination: str) -> dict[str, Any] | None:
    """The first rule whose ``match`` is in the job id or the destination table; uses up one ``count``."""
    for rule in rules:
        match = str(rule.get("match", ""))
        if match in job_id or (destination and match in destination):
            rule["count"] = int(rule.get("count", 1)) - 1
            if rule["count"] <= 0:
                rules.remove(rule)
            return rule
    return None


def create_app(proxy: Proxy) -> Flask:
    """The Flask app: BigQuery's job routes with the strict rules, everything else passed through."""
    app = Flask("bigquery-proxy")

    @app.errorhandler(ApiError)
    def api_error(error: ApiError) -> Response:
        return _json(error.body(), error.code)

    def base() -> str:
        return request.host_url.rstrip("/")

    def params() -> list[tuple[str, str]]:
        return list(request.args.items(multi=True))

    def headers() -> dict[str, str]:
        return {k: v for k, v in request.headers.items() if k.lower() not in _HOP}

    def relay(reply: requests.Response, body: dict[str, Any] | None = None) -> Response:
        """The answer from bqemulator, with its own URLs replaced by the proxy's."""
        own = base()
        out = [(k, v.replace(proxy.backend, own)) for k, v in reply.headers.items() if k.lower() not in _HOP]
        content = orjson.dumps(body) if body is not None else reply.content
        return Response(content.replace(proxy.backend.encode(), own.encode()), status=reply.status_code, headers=out)

    def forward(path: str | None = None) -> requests.Response:
        return proxy.call(
            request.method, path or request.path, params=params(), data=request.get_data(), headers=headers()
        )

    @app.post(JOBS)
    def insert(project: str) -> Response:
        meta = request.get_json(silent=True)
        if not isinstance(meta, dict):
            raise ApiError(400, "invalid", "the body must be a job resource")
        job = proxy.reserve(project, meta)
        rule = proxy.load_fault(job)
        if rule is not None:
            proxy.hold(job, rule)
            return _json(proxy.view(job))
        reply = proxy.call("POST", request.path, params=params(), body=meta, headers=headers())
        if not reply.ok:
            proxy.release(job)
            return relay(reply)
        proxy.adopt(job, reply.json())
        log.info("job inserted", extra={"job_id": job.job_id, "type": job.kind, "location": job.location})
        return relay(reply, proxy.present(project, reply.json()))

    @app.get(JOBS)
    def list_jobs(project: str) -> Response:
        reply = forward()
        if not reply.ok:
            return relay(reply)
        listing = reply.json()
        listing["jobs"] = [proxy.present(project, job) for job in listing.get("jobs", [])]
        return relay(reply, listing)

    @app.get(JOBS + "/<job_id>")
    def get_job(project: str, job_id: str) -> Response:
        job = proxy.lookup(project, job_id, request.args.get("location"))
        if job is None:
            return relay(forward())
        proxy.advance(job)
        if not job.forwarded:
            return _json(proxy.view(job))
        reply = forward(f"/bigquery/v2/projects/{project}/jobs/{job.backend_id}")
        return relay(reply, proxy.present(project, reply.json()) if reply.ok else None)

    @app.post(JOBS + "/<job_id>/cancel")
    def cancel(project: str, job_id: str) -> Response:
        job = proxy.lookup(project, job_id, request.args.get("location"))
        if job is None:
            return relay(forward())
        proxy.advance(job)
        with job.lock:
            if not job.forwarded:
                if job.state != "DONE":
                    proxy.end(job, dict(CANCELLED))
                return _json({"kind": "bigquery#jobCancelResponse", "job": proxy.view(job)})
        reply = forward(f"/bigquery/v2/projects/{project}/jobs/{job.backend_id}/cancel")
        if not reply.ok:
            return relay(reply)
        answer = reply.json()
        answer["job"] = proxy.present(project, answer.get("job", {}))
        return relay(reply, answer)

    @app.get("/bigquery/v2/projects/<project>/queries/<job_id>")
    def query_results(project: str, job_id: str) -> Response:
        job = proxy.lookup(project, job_id, request.args.get("location"))
        if job is None:
            return relay(forward())
        proxy.advance(job)
        if not job.forwarded:
            resource = proxy.view(job)
            answer = {"kind": "bigquery#getQueryResultsResponse", "jobReference": resource["jobReference"]}
            answer["jobComplete"] = resource["status"]["state"] == "DONE"
            return _json({**answer, "errors": resource["status"].get("errors", [])})
        reply = forward(f"/bigquery/v2/projects/{project}/queries/{job.backend_id}")
        return relay(reply, proxy.present(project, reply.json()) if reply.ok else None)

    @app.post("/bigquery/v2/projects/<project>/queries")
    def query(project: str) -> Response:
        reply = forward()
        if not reply.ok:
            return relay(reply)
        answer = reply.json()
        ref = answer.get("jobReference") or {}
        body = request.get_json(silent=True) or {}
        dataset = body.get("defaultDataset")
        found = proxy.dataset_location(dataset.get("projectId", project), dataset["datasetId"]) if dataset else None
        if ref.get("jobId"):
            job = Job(
                project, ref["jobId"], "query", found or body.get("location") or proxy.location, "", time.time(), {}
            )
            job.forwarded, job.backend_id = True, ref["jobId"]
            with proxy.lock:
                proxy.jobs[(project, job.job_id)] = job
        return relay(reply, proxy.present(project, answer))

    @app.route(UPLOADS, methods=["POST", "PUT"])
    def upload(project: str) -> Response:
        kind = request.args.get("uploadType", "")
        if request.method == "PUT" or "upload_id" in request.args:
            reply = forward()
            job = proxy.uploads.get(request.args.get("upload_id", ""))
            if job is None or reply.status_code == 308:  # 308: more chunks to come
                return relay(reply)
            proxy.uploads.pop(request.args.get("upload_id", ""), None)
            if not reply.ok:
                proxy.release(job)
                return relay(reply)
            proxy.adopt(job, reply.json())
            log.info("upload job inserted", extra={"job_id": job.job_id, "backend_id": job.backend_id})
            return relay(reply, proxy.present(project, reply.json()))
        if kind == "multipart":
            meta = _multipart_metadata(request.content_type or "", request.get_data())
            job = proxy.reserve(project, meta)
            reply = forward()
            if not reply.ok:
                proxy.release(job)
                return relay(reply)
            proxy.adopt(job, reply.json())
            return relay(reply, proxy.present(project, reply.json()))
        meta = request.get_json(silent=True) or {}
        job = proxy.reserve(project, meta)
        reply = proxy.call("POST", request.path, params=params(), body=meta, headers=headers())
        upload_id = parse_qs(urlsplit(reply.headers.get("Location", "")).query).get("upload_id", [""])[0]
        if not reply.ok or not upload_id:
            proxy.release(job)
            return relay(reply)
        proxy.uploads[upload_id] = job
        return relay(reply)

    @app.get("/_proxy/health")
    def health() -> Response:
        return _json({"backend": proxy.backend, "project": proxy.project, "location": proxy.location})

    @app.route("/_proxy/faults", methods=["GET", "POST"])
    def faults() -> Response:
        body = request.get_json(silent=True) if request.method == "POST" else {}
        return _json(proxy.add_faults(body if isinstance(body, dict) else {}))

    @app.post("/_proxy/strict")
    def strict() -> Response:
        body = request.get_json(silent=True) or {}
        with proxy.lock:
            proxy.strict_job_ids = bool(body.get("job_ids", proxy.strict_job_ids))
            proxy.strict_locations = bool(body.get("locations", proxy.strict_locations))
            return _json({"job_ids": proxy.strict_job_ids, "locations": proxy.strict_locations})

    @app.post("/_proxy/reset")
    def reset() -> Response:
        proxy.reset()
        return _json({})

    @app.get("/_proxy/jobs")
    def jobs() -> Response:
        with proxy.lock:
            listed = list(proxy.jobs.values())
        return _json({"jobs": [job.summary() for job in sorted(listed, key=lambda j: j.created)]})

    @app.route("/", defaults={"path": ""}, methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    @app.route("/<path:path>", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    def passthrough(path: str) -> Response:
        return relay(forward())

    return app


def main() -> None:
    """Serve the proxy until stopped."""
    from shared.logs import configure

    parser = argparse.ArgumentParser(prog="python -m local.bigquery_proxy", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--backend", required=True, help="bqemulator's URL")
    parser.add_argument("--project", default="local-project")
    parser.add_argument("--location", default="US", help="where jobs are when no dataset says (the wiring's)")
    args = parser.parse_args()
    configure("local", logging.INFO)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # bqemulator logs every request already
    proxy = Proxy(args.backend, args.project, args.location)
    server = make_server(args.host, args.port, create_app(proxy), threaded=True)
    log.info("bigquery proxy listening", extra={"port": args.port, "backend": args.backend, "location": args.location})
    server.serve_forever()


if __name__ == "__main__":
    main()
