"""``python -m local.vertex --port N --gcs URL --bigquery URL [--time-scale S]``."""

from __future__ import annotations

import argparse
import logging

from werkzeug.serving import make_server

from local.vertex.jobs import Clients, JobStore
from local.vertex.server import create_app
from shared.logs import configure


def main() -> None:
    """Serve the emulator until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m local.vertex", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--project", default="local-project")
    parser.add_argument("--gcs", required=True, help="GCS emulator URL")
    parser.add_argument("--bigquery", required=True, help="BigQuery emulator URL")
    parser.add_argument("--time-scale", type=float, default=1.0, help="0.01: an emulated second lasts 10 ms")
    args = parser.parse_args()
    configure("local", logging.INFO)
    store = JobStore(Clients(args.project, args.gcs, args.bigquery), time_scale=args.time_scale)
    store.start()
    server = make_server(args.host, args.port, create_app(store), threaded=True)
    logging.getLogger("local.vertex").info("vertex batch emulator listening", extra={"port": args.port})
    try:
        server.serve_forever()
    finally:
        store.stop()


if __name__ == "__main__":
    main()
