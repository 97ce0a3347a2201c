"""Benchmark: `rollover up` on the issue's four-service project, against its own prediction and
against `docker compose up -d --wait` doing the same change.

    .venv/bin/python -m bench.project_up [--rounds 3]

Each round: api's image and worker's environment change (v1 -> v2 by rollover, back by Compose).
(a) `rollover up --dry-run` predicts each rolled service's duration (the simulator, fed with the
    running replicas' time to come up); `rollover up` then rolls them: predicted / measured.
(b) The control, in the same round: the change made back, by `docker compose up -d --wait`
    (every changed container recreated at once, stop-first): rollover's wall time / Compose's.
    Compose is faster because it stops everything first; what that costs clients is measured by
    bench/side_by_side.py (failed requests through a balancer).

Everything is named rup-bench-* and removed at the end, also on failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import docker

from tests.support.engine import APP_V1, APP_V2, build_app_images, run
from tests.support.http_stubs import closed_port
from tests.support.project_up import UpProject, four_services, up_project


def _change(project: UpProject, to_v2: bool) -> None:
    project.services["api"]["image"] = APP_V2 if to_v2 else APP_V1
    project.services["worker"]["environment"] = {"MODE": "b" if to_v2 else "a"}
    project.write()


def _round(project: UpProject) -> dict[str, float]:
    """v1 -> v2 by rollover up, then back to v1 by docker compose up."""
    _change(project, to_v2=True)
    dry = project.up("--dry-run")
    assert dry.code == 0, dry
    predicted = {name: item["prediction"]["duration_s"] for name, item in dry.plan.items() if "prediction" in item}
    started = time.monotonic()
    rolled = project.up()
    rollover_wall = time.monotonic() - started
    assert rolled.code == 0, rolled
    measured = {item["service"]: item["duration_s"] for item in rolled.summary["services"] if item["action"] == "roll"}
    _change(project, to_v2=False)
    started = time.monotonic()
    run("docker", "compose", "-p", project.name, "up", "-d", "--wait", "--wait-timeout", "120", cwd=project.directory)
    compose_wall = time.monotonic() - started
    figures = {f"{name} predicted/measured": predicted[name] / measured[name] for name in sorted(measured)}
    figures.update({"rollover up wall s": rollover_wall, "compose up wall s": compose_wall,
                    "rollover/compose": rollover_wall / compose_wall})
    for name in sorted(measured):
        figures[f"{name} predicted s"], figures[f"{name} measured s"] = predicted[name], measured[name]
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    client = docker.from_env()
    with tempfile.TemporaryDirectory(prefix="rup-bench-") as workdir:
        build_app_images(client, Path(workdir) / "image")
        with up_project(client, Path(workdir) / "project", four_services(closed_port()), {"data": {}}) as project:
            project.name = f"rup-bench-{project.name.removeprefix('rup-')}"
            project.write()
            first = project.up()
            assert first.code == 0, first
            rounds = [_round(project) for _ in range(options.rounds)]
    print(f"rollover up, four-service project (api 3 replicas step 2, worker 2 step 1), {options.rounds} round(s):")
    for key in rounds[0]:
        values = [figures[key] for figures in rounds]
        print(f"  {key:<32} median {statistics.median(values):7.2f}   ({', '.join(f'{v:.2f}' for v in values)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
