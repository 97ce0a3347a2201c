"""How far off is the live view's ETA? A real 12-replica Compose rollout, its time left predicted at
25, 50 and 75 % of the targets replaced, against the time it really took from there.

    .venv/bin/python -m bench.eta_accuracy [--replicas 12] [--step 2] [--rounds 1] [--grace 0]

The service is the test app (busybox httpd FROM scratch, healthcheck every 0.5 s) on random
loopback ports, v1 -> v2 with ``rollover redeploy web --output json``. The prediction is
``rollover.report.eta.remaining_s``, exactly what the live view shows, fed the events printed up to
the moment the given share of targets had settled; the control is the same run's own figure, the
summary's duration minus that moment. Printed per point: predicted, actual, error (predicted -
actual) and the ratio predicted / actual.

Everything is named rrep-bench-* and removed at the end, also on failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import tempfile
import uuid
from pathlib import Path

import docker

from rollover.report.eta import remaining_s
from tests.support.engine import APP_V1, APP_V2, ComposeProject, build_app_images
from tests.support.faults import LOOPBACK_PORT, ROLLOVER

SHARES = (0.25, 0.50, 0.75)


def one_round(client: docker.DockerClient, replicas: int, step: int, grace: float) -> list[tuple[float, float, float]]:
    with tempfile.TemporaryDirectory(prefix="rrep-bench-") as folder:
        project = ComposeProject(f"rrep-bench-{uuid.uuid4().hex[:8]}", Path(folder), client)
        try:
            # A loaded machine can make the image's 3 x 2 s health checks time out as 12 replicas start.
            patient = {"retries": "20"}
            project.write(APP_V1, replicas=replicas, ports=[LOOPBACK_PORT], healthcheck=patient)
            project.compose("up", "-d", "--wait", "--wait-timeout", "180")
            project.write(APP_V2, replicas=replicas, ports=[LOOPBACK_PORT], healthcheck=patient)
            done = subprocess.run([ROLLOVER, "redeploy", "web", "--step", str(step), "--grace", f"{grace:g}",
                                   "--output", "json"], cwd=folder, capture_output=True, text=True, check=False,
                                  env=dict(os.environ), timeout=900)
            records = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
            if done.returncode != 0:
                raise SystemExit(f"the rollout failed ({done.returncode}): {done.stderr}{done.stdout[-2000:]}")
        finally:
            project.tear_down()
    duration = float(records[-1]["duration_s"])
    points = []
    settled = [index for index, record in enumerate(records) if record["event"] == "settled"]
    for share in SHARES:
        index = settled[math.ceil(share * replicas) - 1]
        moment = float(records[index]["t"])
        predicted = remaining_s(records[: index + 1], moment)
        assert predicted is not None
        points.append((share, predicted, duration - moment))
    return points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicas", type=int, default=12)
    parser.add_argument("--step", type=int, default=2)
    parser.add_argument("--grace", type=float, default=0.0)
    parser.add_argument("--rounds", type=int, default=1)
    options = parser.parse_args()
    client = docker.from_env()
    with tempfile.TemporaryDirectory(prefix="rrep-bench-images-") as folder:
        build_app_images(client, Path(folder))
    print(f"{options.replicas} replicas, step {options.step}, grace {options.grace:g}s, start-first, Compose")
    print(f"{'round':>5} {'at':>5} {'predicted s':>12} {'actual s':>9} {'error s':>8} {'ratio':>6}")
    for round_number in range(1, options.rounds + 1):
        for share, predicted, actual in one_round(client, options.replicas, options.step, options.grace):
            print(f"{round_number:>5} {share:>5.0%} {predicted:>12.1f} {actual:>9.1f} {predicted - actual:>+8.1f}"
                  f" {predicted / actual if actual else float('nan'):>6.2f}")


if __name__ == "__main__":
    main()
