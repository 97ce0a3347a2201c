"""The zero-downtime proof through nginx, the whole matrix: start-first and stop-first x step 1, 2
and half (the suite runs three of the six cells), each a 6-replica service rolled under the probe
at 200 req/s and the independent client; the figures of each row are printed (``ZD ...`` lines).

    .venv/bin/python -m bench.nginx_matrix [pytest arguments, e.g. -k stop-first]
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(arguments: list[str]) -> int:
    environment = {**os.environ, "ROLLOVER_NGINX_FULL_MATRIX": "1"}
    command = [sys.executable, "-m", "pytest", "-s", "-q", "-p", "no:cacheprovider",
               "tests/zero_downtime/test_nginx_rollout.py", "-k", "loses_no_request", *arguments]
    return subprocess.run(command, cwd=ROOT, env=environment, check=False).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
