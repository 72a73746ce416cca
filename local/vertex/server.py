"""The REST surface google-genai uses in Vertex mode, plus a small admin API.

    POST   /{v}/projects/P/locations/L/batchPredictionJobs            create
    GET    /{v}/projects/P/locations/L/batchPredictionJobs/ID         get
    GET    /{v}/projects/P/locations/L/batchPredictionJobs?pageSize&pageToken&filter
    POST   /{v}/projects/P/locations/L/batchPredictionJobs/ID:cancel  cancel
    DELETE /{v}/projects/P/locations/L/batchPredictionJobs/ID         delete (an LRO, done)

Admin (not part of Vertex): ``GET /_emulator/health``; ``POST /_emulator/faults`` with
``{"create": [429, 503], "jobs": [{"labels": {...}, "faults": {"partial": "true"}, "count": 1}]}``
queues create errors and job faults; ``POST /_emulator/reset`` forgets everything.
"""

from __future__ import annotations

from typing import Any

import orjson
from flask import Flask, Response, request

from local.vertex.jobs import ApiError, JobStore

BASE = "/<version>/projects/<project>/locations/<location>/batchPredictionJobs"


def _json(body: dict[str, Any], status: int = 200) -> Response:
    return Response(orjson.dumps(body), status=status, mimetype="application/json")


def create_app(store: JobStore) -> Flask:
    """The Flask app serving ``store``."""
    app = Flask("vertex-batch-emulator")

    @app.errorhandler(ApiError)
    def api_error(error: ApiError) -> Response:
        return _json(error.body(), error.code)

    def _version(version: str) -> None:
        if version not in ("v1", "v1beta1"):
            raise ApiError(404, "NOT_FOUND", f"unknown API version {version}")

    @app.post(BASE)
    def create(version: str, project: str, location: str) -> Response:
        _version(version)
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise ApiError(400, "INVALID_ARGUMENT", "the body must be a JSON object")
        return _json(store.create(project, location, body))

    @app.get(BASE)
    def list_jobs(version: str, project: str, location: str) -> Response:
        _version(version)
        args = request.args
        return _json(
            store.list(
                project, location, int(args.get("pageSize", 0)), args.get("pageToken", ""), args.get("filter", "")
            )
        )

    @app.route(BASE + "/<job_ref>", methods=["GET", "POST", "DELETE"])
    def one_job(version: str, project: str, location: str, job_ref: str) -> Response:
        _version(version)
        if request.method == "POST":
            job_id, _, verb = job_ref.partition(":")
            if verb != "cancel":
                raise ApiError(404, "NOT_FOUND", f"unknown method {verb!r}")
            return _json(store.cancel(project, location, job_id))
        if request.method == "DELETE":
            return _json(store.delete(project, location, job_ref))
        return _json(store.get(project, location, job_ref))

    @app.get("/_emulator/health")
    def health() -> Response:
        return _json({"status": "ok", "jobs": len(store.jobs)})

    @app.post("/_emulator/faults")
    def faults() -> Response:
        body = request.get_json(silent=True) or {}
        with store.lock:
            store.create_errors.extend(int(c) for c in body.get("create", []))
            store.job_rules.extend(body.get("jobs", []))
        return _json({"create": store.create_errors, "jobs": store.job_rules})

    @app.post("/_emulator/reset")
    def reset() -> Response:
        with store.lock:
            store.jobs.clear()
            store.create_errors.clear()
            store.job_rules.clear()
            store.once_seen.clear()
        return _json({})

    return app
