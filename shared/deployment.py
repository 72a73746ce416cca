"""Where the ``gemini-batch`` operations commands talk to: a deployment, or the running local cloud.

One documented way each (README: Day-2 operations):

- a deployment: ``make outputs`` saves ``terraform output -json`` to ``gemini-batch.json``; its
  ``settings`` output is the functions' own environment, so the CLI reads and writes exactly
  what the functions do. ``--config FILE`` (or ``GEMINI_BATCH_CONFIG``) names another file.
- ``--local``: the local cloud started by ``make local-up`` (its state directory, or
  ``LOCAL_CLOUD_STATE_DIR``): its endpoints, and the settings its wiring gives submit_batch.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any, Final

import orjson

from shared.config import Settings
from shared.core.errors import PermanentError

DEFAULT_CONFIG: Final = Path("gemini-batch.json")


def deployment_settings(config: Path | None = None) -> Settings:
    """The settings of a deployment, from ``terraform output -json`` saved to a file."""
    path = config or Path(os.environ.get("GEMINI_BATCH_CONFIG") or DEFAULT_CONFIG)
    if not path.exists():
        raise PermanentError(f"{path} does not exist: run `make outputs` after `terraform apply`, or pass --local")
    try:
        outputs: Any = orjson.loads(path.read_bytes())
        env = outputs["settings"]["value"]
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise PermanentError(f"{path} is not `terraform output -json` of this deployment (no settings): {exc}") from exc
    return Settings.from_env({str(k): str(v) for k, v in env.items()})


def local_settings(state_dir: Path | None = None) -> Settings:
    """The running local cloud's settings; its endpoints go into this process's environment (the clients read them)."""
    # The local cloud is in a checkout of the repository only (not in the package): imported here.
    clients: Any = importlib.import_module("local.clients")
    stack: Any = importlib.import_module("local.stack")
    wirings: Any = importlib.import_module("local.wiring")
    state_dir = state_dir or Path(os.environ.get("LOCAL_CLOUD_STATE_DIR") or stack.DEFAULT_STATE_DIR)
    state_file = state_dir / "state.json"
    if not state_file.exists():
        raise PermanentError(f"no local cloud is running from {state_dir}: `make local-up` first")
    state = orjson.loads(state_file.read_bytes())
    os.environ.update({k: v for k, v in clients.endpoints(state_dir).env().items() if k != "GOOGLE_CLOUD_PROJECT"})
    wiring = wirings.Wiring.load(Path(state["wiring"])) if state.get("wiring") else wirings.Wiring.load()
    # submit_batch's: its INPUT_PREFIX is the one its trigger watches (uploads go there).
    env = next((f.env for f in wiring.functions if f.name == "submit_batch"), None)
    if env is None:
        raise PermanentError(f"the local cloud's wiring {wiring.path} has no submit_batch")
    return Settings.from_env(env)
