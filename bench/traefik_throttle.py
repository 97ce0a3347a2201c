"""Benchmark: what Traefik's ``providersThrottleDuration`` costs a rollout behind it.

Traefik applies configuration changes at most every ``providersThrottleDuration`` (2 s by default),
and a replacement counts as up only once Traefik routes to it (rollover's admission waits for
Traefik's API to list it). The same 6-replica Compose service behind the same Traefik (the
zero-downtime tests' ``TraefikFront`` and compose options) is rolled with ``--step 2``, once with
Traefik at 100ms and once at its 2s default, alternately ``--runs`` times each:

    .venv/bin/python -m bench.traefik_throttle [--runs 2]

Reported per setting: the rollout's duration, and the admission wait (from a replacement's health
event to Traefik routing to it, from rollover's JSON events ``up`` -> ``admitted``), p50 and max.
Everything is named rfast-thr-* and removed at the end.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import docker

from tests.support.engine import APP_V1, APP_V2, ComposeProject
from tests.support.fronts import TraefikFront, network_addresses, traefik_compose_options

ROLLOVER = Path(__file__).resolve().parent.parent / ".venv" / "bin" / "rollover"
REPLICAS = 6


def roll(project: ComposeProject, front: TraefikFront, image: str, site: str) -> tuple[float, list[float]]:
    project.write(image, replicas=REPLICAS, **traefik_compose_options(site))
    done = subprocess.run([str(ROLLOVER), "redeploy", "web", "--project", project.name, "--step", "2",
                           "--balancer", front.spec, "--output", "json"],
                          cwd=project.directory, capture_output=True, text=True, check=False)
    events = [json.loads(line) for line in done.stdout.splitlines()]
    if done.returncode != 0:
        raise SystemExit(f"rollover exited {done.returncode}: {done.stderr.strip()} {events[-1:]}")
    up = {e["replica"]: e["t"] for e in events if e["event"] == "up"}
    waits = [e["t"] - up[e["replica"]] for e in events if e["event"] == "admitted" and e["replica"] in up]
    return events[-1]["duration_s"], waits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=2)
    options = parser.parse_args()
    client = docker.from_env()
    site = f"thr{uuid.uuid4().hex[:6]}"
    figures: dict[str, tuple[list[float], list[float]]] = {"100ms": ([], []), "2s": ([], [])}
    with tempfile.TemporaryDirectory(prefix="rfast-thr-") as workdir:
        project = ComposeProject(f"rfast-thr-{site}", Path(workdir) / "project", client)
        project.directory.mkdir()
        project.write(APP_V1, replicas=REPLICAS, **traefik_compose_options(site))
        try:
            project.compose("up", "-d", "--wait", "--wait-timeout", "120")
            image = APP_V1
            for run in range(options.runs * 2):
                throttle = "100ms" if run % 2 == 0 else "2s"
                front = TraefikFront(f"{project.name}_default", site, Path(workdir) / f"traefik-{run}", throttle)
                try:
                    front.start(network_addresses(client, project.name, f"{project.name}_default"), timeout=60)
                    image = APP_V2 if image == APP_V1 else APP_V1
                    duration, waits = roll(project, front, image, site)
                finally:
                    front.stop()
                figures[throttle][0].append(duration)
                figures[throttle][1].extend(waits)
        finally:
            project.tear_down()
    print(f"Traefik providersThrottleDuration, {REPLICAS} replicas, --step 2, {options.runs} rollouts each")
    print("| providersThrottleDuration | duration | admission wait p50 | admission wait max |")
    print("|---|---|---|---|")
    for throttle, (durations, waits) in figures.items():
        print(f"| {throttle} | {statistics.mean(durations):.1f} s | {statistics.median(waits):.2f} s | "
              f"{max(waits):.2f} s |")


if __name__ == "__main__":
    sys.exit(main())
