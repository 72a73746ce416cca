"""``python -m local up|down|status``: the local cloud."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import orjson

from local.stack import DEFAULT_STATE_DIR, LocalCloudError, Stack


def main() -> int:
    """Parse the command and run it."""
    parser = argparse.ArgumentParser(prog="python -m local", description="The local cloud (emulators + bridge).")
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    parser.add_argument("--time-scale", type=float, default=1.0, help="0.1 runs emulated time 10x faster")
    parser.add_argument("--no-functions", action="store_true", help="do not start the functions")
    args = parser.parse_args()
    if args.command == "up":
        try:
            ends = Stack(args.state_dir).up(args.time_scale, functions=not args.no_functions)
        except LocalCloudError as exc:
            sys.stderr.write(f"local cloud: {exc}\n")
            return 1
        sys.stdout.write("local cloud is up. To use it from a shell:\n")
        for key, value in ends.env().items():
            sys.stdout.write(f"  export {key}={value}\n")
        return 0
    stack = Stack.load(args.state_dir)
    if args.command == "down":
        stopped = stack.stop()
        sys.stdout.write(f"stopped: {', '.join(stopped) or 'nothing was running'}\n")
        return 0
    sys.stdout.write(orjson.dumps(stack.status(), option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
