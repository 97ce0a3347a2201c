"""The zero-downtime proof through the balancers, the whole matrix: start-first and stop-first x
step 1, 2 and half, each a 6-replica service rolled under the probe at 200 req/s and the
independent client; the figures of each row are printed (``ZD ...`` lines). The suite runs all six
cells for HAProxy and three for each other balancer (the cost: 15-40 s a cell).

    .venv/bin/python -m bench.balancer_matrix [caddy] [traefik] [nginx] [-- pytest arguments]

With no balancer named: Caddy, Traefik and nginx.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SELECTIONS = {
    "caddy": ["tests/zero_downtime/test_balancer_rollouts.py", "-k", "loses_no_request and caddy"],
    "traefik": ["tests/zero_downtime/test_balancer_rollouts.py", "-k", "loses_no_request and traefik"],
    "nginx": ["tests/zero_downtime/test_nginx_rollout.py", "-k", "loses_no_request"],
}


def main(arguments: list[str]) -> int:
    named, _, extra = " ".join(arguments).partition("--")
    balancers = named.split() or list(SELECTIONS)
    unknown = [name for name in balancers if name not in SELECTIONS]
    if unknown:
        print(f"error: unknown balancer(s) {', '.join(unknown)}: choose from {', '.join(SELECTIONS)}", file=sys.stderr)
        return 2
    environment = {**os.environ, "ROLLOVER_FULL_MATRIX": "1"}
    worst = 0
    for name in balancers:
        command = [sys.executable, "-m", "pytest", "-s", "-q", "-p", "no:cacheprovider", *SELECTIONS[name],
                   *extra.split()]
        worst = max(worst, subprocess.run(command, cwd=ROOT, env=environment, check=False).returncode)
    return worst


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
