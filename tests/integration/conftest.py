"""The local cloud for integration tests: started once per session, stopped at the end."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from local.stack import Endpoints, Stack, _alive
from local.wiring import Wiring

HERE = Path(__file__).parent
TIME_SCALE = 0.02  # one emulated second lasts 20 ms

# The SDK must never look for a metadata server or real credentials here.
os.environ["NO_GCE_CHECK"] = "true"
for name in list(os.environ):
    if name.startswith(("GOOGLE_", "GEMINI_")):
        del os.environ[name]


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    state = tmp_path_factory.mktemp("local-cloud")
    os.environ["ECHO_LOG"] = str(state / "echo.jsonl")
    cloud = Stack(state, Wiring.load(HERE / "wiring.json"))
    cloud.up(time_scale=TIME_SCALE)
    processes = list(cloud.processes)
    try:
        yield cloud
    finally:
        cloud.stop()
        left = [p.name for p in processes if _alive(p)]
        assert not left, f"processes left behind: {left}"


@pytest.fixture(scope="session")
def cloud(stack: Stack) -> Endpoints:
    # In-process services (crash tests) build their clients from these, like the functions do.
    os.environ.update({k: v for k, v in stack.endpoints.env().items() if k != "GOOGLE_CLOUD_PROJECT"})
    return stack.endpoints


def wait_for(condition: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05) -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")
