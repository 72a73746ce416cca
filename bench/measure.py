"""One measurement in a fresh process: ``python -m bench.measure METHOD INPUT OUTPUT``.

Prints one JSON object: wall seconds and CPU seconds (user + system) of the work, and the
process's peak RSS (MiB). CPU time is what the ratios use: on a shared VM, time stolen by
neighbours inflates wall time (seen here: ±50% between runs) but not the process's CPU time.
Each method reads INPUT line by line and (where it emits) writes OUTPUT.
"""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path
from typing import Any

import orjson

# Imported before the clock starts: import time is not per-line work.
from shared.core.cost import default_prices
from shared.core.normalize import Normalizer, RowContext
from shared.core.validate import validate


def orjson_loads(src: Path, dst: Path) -> None:
    loads = orjson.loads
    with src.open("rb") as f:
        for line in f:
            loads(line)


def floor(src: Path, dst: Path) -> None:
    loads, dumps, opt = orjson.loads, orjson.dumps, orjson.OPT_APPEND_NEWLINE
    with src.open("rb") as f, dst.open("wb") as out:
        write = out.write
        for line in f:
            write(dumps(loads(line), option=opt))


def normalizer(src: Path, dst: Path) -> None:
    price = default_prices().price("gemini-2.5-flash")  # every row is priced, as in the pipeline
    context = RowContext(
        "run-1", "projects/p/locations/us-central1/batchPredictionJobs/1", str(src), 1, "2026-11-25T00:00:00Z", price
    )
    with src.open("rb") as f, dst.open("wb") as out:
        Normalizer(context).write_ndjson(f, out)


def pandas_recipe(src: Path, dst: Path) -> None:
    """The usual recipe, made not to crash: failed rows (no response) are set aside."""
    import pandas as pd

    df = pd.read_json(src, lines=True)
    ok = df[df["response"].apply(lambda r: isinstance(r, dict) and bool(r.get("candidates")))]
    flat = pd.json_normalize(
        ok["response"].tolist(), "candidates", ["modelVersion", "responseId", ["usageMetadata", "totalTokenCount"]]
    )
    flat["key"] = ok["key"].repeat(ok["response"].apply(lambda r: len(r["candidates"]))).to_numpy()
    flat.to_json(dst, orient="records", lines=True)


def sdk_validate(src: Path, dst: Path) -> None:
    from google.genai import types

    validate = types.GenerateContentResponse.model_validate
    with src.open("rb") as f:
        for line in f:
            obj: dict[str, Any] = orjson.loads(line)
            response = obj.get("response")
            if response is not None:
                validate(response, extra="ignore")


def validator(src: Path, dst: Path) -> None:
    with src.open("rb") as f:
        summary = validate(f)
    if not summary.ok:
        raise SystemExit(f"benchmark requests are not valid: {summary.as_dict()}")


METHODS = {f.__name__: f for f in (orjson_loads, floor, normalizer, pandas_recipe, sdk_validate, validator)}


def main() -> None:
    method, src, dst = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    started, cpu_started = time.perf_counter(), time.process_time()
    METHODS[method](src, dst)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {"method": method, "seconds": seconds, "cpu_seconds": cpu_seconds, "peak_rss_mib": peak_mib}
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()
