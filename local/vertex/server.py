"""The REST surface google-genai uses in Vertex mode, plus a small admin API.

    POST   /{v}/projects/P/locations/L/batchPredictionJobs            create
    GET    /{v}/projects/P/locations/L/batchPredictionJobs/ID         get
    GET    /{v}/projects/P/locations/L/batchPredictionJobs?pageSize&pageToken&filter
    POST   /{v}/projects/P/locations/L/batchPredictionJobs/ID:cancel  cancel
    DELETE /{v}/projects/P/locations/L/batchPredictionJobs/ID         delete (an LRO, done)

Admin (not part of Vertex): ``GET /_emulator/health``; ``POST /_emulator/faults`` queues
call faults and job faults::

    {"create": [429, 503, "reset", "reset-after", "disconnect"],
     "get": [{"fault": "reset", "job": "<id or name>", "count": -1}],
     "list": [{"fault": "delay", "seconds": 2}],
     "jobs": [{"labels": {...}, "faults": {"partial": "true"}, "count": 1}]}

(see ``jobs.CallFault``); ``GET`` shows what is queued, ``DELETE`` forgets it;
``POST /_emulator/limits`` ``{"running": N}`` sets how many jobs run at once per project and
region (8 by default, as Vertex: the rest wait QUEUED, first come first served);
``POST /_emulator/reset`` forgets everything, jobs included, and restores the limit.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import time
from collections.abc import Callable, Iterable
from typing import Any

import orjson
from flask import Flask, Response, request

from local.vertex.jobs import MAX_RUNNING, ApiError, JobStore, filter_labels

BASE = "/<version>/projects/<project>/locations/<location>/batchPredictionJobs"
DROP = "emulator.drop"  # environ key: how the WSGI layer must drop this request's connection
log = logging.getLogger("local.vertex")


class ConnectionDropped(ConnectionResetError):
    """Raised to the WSGI server after an injected drop: werkzeug takes it for a client gone away."""


def _json(body: dict[str, Any], status: int = 200) -> Response:
    return Response(orjson.dumps(body), status=status, mimetype="application/json")


def drop_connection(sock: socket.socket, how: str) -> None:
    """End ``sock`` without an answer: ``"reset"`` sends a TCP RST, ``"disconnect"`` a FIN.

    werkzeug still holds the socket (and a file made from it, so ``close()`` alone would not
    close it). For a reset, SO_LINGER 0 plus pointing the descriptor at a dead socketpair
    closes the TCP connection at once (the kernel sends RST); werkzeug then reads EOF from the
    dead pair and finishes quietly. A disconnect is a plain shutdown: the peer sees EOF.
    """
    if how == "disconnect":
        sock.shutdown(socket.SHUT_RDWR)
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    dead, peer = socket.socketpair()
    peer.close()
    os.dup2(dead.fileno(), sock.fileno())
    dead.close()


def _dropping(app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
    """WSGI middleware: a request marked with ``DROP`` loses its connection instead of its answer."""

    def middleware(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        answer = app(environ, start_response)
        how = environ.get(DROP)
        if how is None:
            return answer
        getattr(answer, "close", lambda: None)()
        sock = environ.get("werkzeug.socket")
        if sock is not None:
            drop_connection(sock, how)
        raise ConnectionDropped(f"emulator: injected {how}")

    return middleware


def create_app(store: JobStore) -> Flask:
    """The Flask app serving ``store``."""
    app = Flask("vertex-batch-emulator")
    app.wsgi_app = _dropping(app.wsgi_app)  # type: ignore[method-assign]

    @app.errorhandler(ApiError)
    def api_error(error: ApiError) -> Response:
        return _json(error.body(), error.code)

    def _version(version: str) -> None:
        if version not in ("v1", "v1beta1"):
            raise ApiError(404, "NOT_FOUND", f"unknown API version {version}")

    def _call(
        call: str, operation: Callable[[], dict[str, Any]], job_id: str = "", labels: dict[str, str] | None = None
    ) -> Response:
        """Run ``operation`` as the queued call fault (if any) says."""
        fault = store.take_fault(call, job_id, labels)
        if fault is None:
            return _json(operation())
        log.info("call fault injected", extra={"call": call, "job_id": job_id, "fault": fault.fault})
        if isinstance(fault.fault, int):
            raise fault.error(call)
        if fault.fault in ("reset", "disconnect"):  # before the operation: nothing happened
            request.environ[DROP] = fault.fault
            return _json({})
        body = operation()
        if fault.fault == "delay":
            time.sleep(fault.seconds)
        else:  # "reset-after" / "disconnect-after": it happened, the answer is lost
            request.environ[DROP] = str(fault.fault).removesuffix("-after")
        return _json(body)

    @app.post(BASE)
    def create(version: str, project: str, location: str) -> Response:
        _version(version)
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise ApiError(400, "INVALID_ARGUMENT", "the body must be a JSON object")
        labels = {str(k): str(v) for k, v in (body.get("labels") or {}).items()}
        return _call("create", lambda: store.create(project, location, body), labels=labels)

    @app.get(BASE)
    def list_jobs(version: str, project: str, location: str) -> Response:
        _version(version)
        args = request.args
        size, token, text = int(args.get("pageSize", 0)), args.get("pageToken", ""), args.get("filter", "")
        return _call("list", lambda: store.list(project, location, size, token, text), labels=filter_labels(text))

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
        return _call("get", lambda: store.get(project, location, job_ref), job_ref, store.labels_of(job_ref))

    @app.get("/_emulator/health")
    def health() -> Response:
        return _json({"status": "ok", "jobs": len(store.jobs)})

    @app.route("/_emulator/faults", methods=["GET", "POST", "DELETE"])
    def faults() -> Response:
        if request.method == "POST":
            body = request.get_json(silent=True) or {}
            if not isinstance(body, dict):
                raise ApiError(400, "INVALID_ARGUMENT", "the body must be a JSON object")
            store.add_faults(body)
        elif request.method == "DELETE":
            store.clear_faults()
        return _json(store.faults_view())

    @app.post("/_emulator/limits")
    def limits() -> Response:
        body = request.get_json(silent=True) or {}
        running = body.get("running") if isinstance(body, dict) else None
        if not isinstance(running, int) or running < 1:
            raise ApiError(400, "INVALID_ARGUMENT", '{"running": N}: N jobs at once per project and region, N >= 1')
        with store.lock:
            store.max_running = running
        return _json({"running": store.max_running})

    @app.post("/_emulator/reset")
    def reset() -> Response:
        with store.lock:
            store.jobs.clear()
            store.clear_faults()
            store.once_seen.clear()
            store.max_running = MAX_RUNNING
        return _json({})

    return app
