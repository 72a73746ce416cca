"""``make bench``: the normalizer and the validator against their floors, measured in one run.

Each measurement runs in a fresh process (``bench.measure``) so peak RSS is its own. Ratios
compare CPU seconds (wall seconds are shown too). Fast methods take the best of ``REPEATS``
runs; pandas and the SDK run once.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

from bench.generate import write_predictions, write_requests

DATA = Path(__file__).parent / ".data"
SIZES = (10_000, 200_000)
REPEATS = 3
TARGET_FLOOR_RATIO = 1.2
TARGET_PANDAS_SPEEDUP = 8.0
TARGET_PEAK_MIB = 150.0
TARGET_VALIDATION_SHARE = 0.5


def _measure(method: str, src: Path, repeats: int) -> dict[str, float]:
    best: dict[str, float] = {}
    for _ in range(repeats):
        done = subprocess.run(
            [sys.executable, "-m", "bench.measure", method, str(src), str(DATA / f"{method}.out")],
            check=True,
            capture_output=True,
        )
        result = orjson.loads(done.stdout)
        peak = max(result["peak_rss_mib"], best.get("peak_rss_mib", 0))
        if not best or result["cpu_seconds"] < best["cpu_seconds"]:
            best = {"seconds": result["seconds"], "cpu_seconds": result["cpu_seconds"]}
        best["peak_rss_mib"] = peak
    return best


def _file(name: str, count: int, writer: object) -> Path:
    path = DATA / name
    if not path.exists():
        sys.stderr.write(f"generating {path} ...\n")
        writer(path, count)  # type: ignore[operator]
    return path


def main() -> None:
    DATA.mkdir(exist_ok=True)
    checks: list[tuple[str, bool, str]] = []
    peaks: dict[int, float] = {}
    header = f"{'lines':>8} {'method':<14} {'wall s':>8} {'cpu s':>8} {'lines/s':>10} {'vs floor':>9} {'peak MiB':>9}"
    print(header)
    print("-" * len(header))
    for count in SIZES:
        src = _file(f"predictions_{count}.jsonl", count, write_predictions)
        results = {m: _measure(m, src, REPEATS) for m in ("orjson_loads", "floor", "normalizer")}
        results["pandas_recipe"] = _measure("pandas_recipe", src, 1)
        results["sdk_validate"] = _measure("sdk_validate", src, 1)
        floor = results["floor"]["cpu_seconds"]
        for method, r in results.items():
            seconds, cpu, peak = r["seconds"], r["cpu_seconds"], r["peak_rss_mib"]
            rate, versus = count / cpu, cpu / floor
            print(f"{count:>8} {method:<14} {seconds:>8.3f} {cpu:>8.3f} {rate:>10,.0f} {versus:>8.2f}x {peak:>9.1f}")
        ratio = results["normalizer"]["cpu_seconds"] / floor
        speedup = results["pandas_recipe"]["cpu_seconds"] / results["normalizer"]["cpu_seconds"]
        peaks[count] = results["normalizer"]["peak_rss_mib"]
        checks.append(
            (f"{count}: normalizer <= {TARGET_FLOOR_RATIO}x floor", ratio <= TARGET_FLOOR_RATIO, f"{ratio:.2f}x")
        )
        checks.append(
            (
                f"{count}: >= {TARGET_PANDAS_SPEEDUP:.0f}x faster than pandas",
                speedup >= TARGET_PANDAS_SPEEDUP,
                f"{speedup:.1f}x",
            )
        )
        requests = _file(f"requests_{count}.jsonl", count, write_requests)
        parse = _measure("orjson_loads", requests, REPEATS)["cpu_seconds"]
        validation = _measure("validator", requests, REPEATS)
        share = parse / validation["cpu_seconds"]
        seconds, cpu, peak = validation["seconds"], validation["cpu_seconds"], validation["peak_rss_mib"]
        print(f"{count:>8} {'validator':<14} {seconds:>8.3f} {cpu:>8.3f} {count / cpu:>10,.0f} {'':>9} {peak:>9.1f}")
        print(f"{count:>8} {'(req. loads)':<14} {'':>8} {parse:>8.3f} {count / parse:>10,.0f}")
        checks.append(
            (
                f"{count}: validation >= {TARGET_VALIDATION_SHARE:.0%} of parse rate",
                share >= TARGET_VALIDATION_SHARE,
                f"{share:.0%}",
            )
        )
    big, small = peaks[SIZES[-1]], peaks[SIZES[0]]
    checks.append((f"peak RSS <= {TARGET_PEAK_MIB:.0f} MiB at {SIZES[-1]}", big <= TARGET_PEAK_MIB, f"{big:.1f} MiB"))
    checks.append(("peak RSS flat from 10k (within 10%)", big <= small * 1.1, f"{small:.1f} -> {big:.1f} MiB"))
    print()
    for name, ok, value in checks:
        print(f"{'PASS' if ok else 'MISS'}  {name}: {value}")


if __name__ == "__main__":
    main()
