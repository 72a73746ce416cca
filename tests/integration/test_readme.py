"""The README's local-cloud example works as written against a running local cloud."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from local.stack import Stack

ROOT = Path(__file__).parents[2]


def test_readme_local_cloud_example_runs_as_written(stack: Stack) -> None:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- local-cloud-example -->\n```python\n(.*?)```", readme, re.S)
    assert block, "the README lost its local-cloud example"
    env = {**os.environ, "LOCAL_CLOUD_STATE_DIR": str(stack.state_dir)}
    done = subprocess.run(
        [sys.executable, "-c", block.group(1)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "JOB_STATE_SUCCEEDED"
    assert re.match(r"hello/prediction-model-\S+/predictions\.jsonl b'\{\"key\":\"", lines[1]), lines[1]
