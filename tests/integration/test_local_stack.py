"""The local cloud starts, listens on loopback only, refuses a second start, and stops cleanly."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import requests

from local import stack as stack_module
from local.clients import bigquery_client
from local.stack import LocalCloudError, Stack, _alive
from local.wiring import Wiring

HERE = Path(__file__).parent


def test_stack_every_service_is_alive_and_on_loopback_only(stack: Stack) -> None:
    status = stack.status()["processes"]
    assert set(status) >= {
        "pubsub",
        "gcs",
        "bigquery",
        "bigquery-proxy",
        "vertex",
        "bridge",
        "function-echo_storage",
        "function-echo_pubsub",
    }
    assert all(p["alive"] for p in status.values())
    groups = {p["pid"] for p in status.values()}
    listening = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    ours = []
    for line in listening.splitlines():
        pids = {int(pid) for pid in re.findall(r"pid=(\d+)", line)}
        if any(_group(pid) in groups for pid in pids):
            ours.append(line.split()[3])
    assert len(ours) >= len([p for p in status.values() if p["port"]])
    assert all(addr.rsplit(":", 1)[0] in LOOPBACK for addr in ours), ours


LOOPBACK = {"127.0.0.1", "[::ffff:127.0.0.1]"}


def _group(pid: int) -> int:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return -1


def test_stack_bigquery_goes_through_the_proxy_and_the_dataset_is_regional(stack: Stack) -> None:
    ends = stack.endpoints
    assert ends.bigquery != ends.bigquery_emulator
    assert requests.get(f"{ends.bigquery}/_proxy/health", timeout=5).json()["backend"] == ends.bigquery_emulator
    assert bigquery_client(ends).get_dataset(stack.wiring.dataset).location == stack.wiring.location


def test_stack_refuses_to_start_twice_in_one_folder(stack: Stack) -> None:
    with pytest.raises(LocalCloudError, match="already running"):
        Stack(stack.state_dir, stack.wiring).up()


def test_stack_without_java_says_what_is_missing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no java, no gcloud
    with pytest.raises(LocalCloudError, match="Java is not installed"):
        stack_module.pubsub_launcher()


def test_stack_up_then_down_leaves_no_process(tmp_path: Path) -> None:
    wiring = Wiring.load(HERE / "wiring.json")
    second = Stack(tmp_path / "second", wiring)
    second.up(time_scale=0.02, functions=False)
    processes = list(second.processes)
    assert len(processes) == 6 and all(_alive(p) for p in processes)
    # `down` from another process, as `make local-down` does.
    done = subprocess.run(
        [os.sys.executable, "-m", "local", "down", "--state-dir", str(second.state_dir)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "stopped: bridge, vertex, bigquery-proxy, bigquery, gcs, pubsub" in done.stdout
    for proc in processes:
        second._popen[proc.pid].wait(timeout=10)  # reap our children
    assert not any(_alive(p) for p in processes)
    assert not [p for p in Stack.load(second.state_dir).processes if _alive(p)]
