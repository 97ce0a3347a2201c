"""Benchmark: how fast rollover reacts, and how close a whole rollout comes to its lower bound.

Runs on the real engine: a Compose service of N replicas (busybox httpd, healthcheck every 0.5 s)
rolled from v1 to v2 and back, start-first, with several steps, several times each.

(a) Reaction time: from the moment a replacement's health event reaches rollover to the moment
    the next redeploy request goes out. A slot that frees while another request is still waiting
    for its acknowledgement is measured from that acknowledgement (requests are sequential by
    design; the wait is Compose's, not the controller's).
(b) Duration against its lower bound: waves x time-to-healthy, where waves = ceil(N / batch) and
    time-to-healthy is the mean time from a request to its replacement's health event.

    .venv/bin/python -m bench.rollout_bench [--replicas 6] [--runs 2] [--steps 1,2,half]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from rollover.backends.docker.backend import DockerBackend
from rollover.controller.loop import Controller
from rollover.core.model import ProgressEvent
from rollover.core.policy import OrderChoice, Policy, batch_size, parse_step

ROOT = Path(__file__).resolve().parent.parent
PROJECT = "rollover-bench"


@dataclass
class RunFigures:
    step: str
    batch: int
    reactions_ms: list[float]
    duration_s: float
    lower_bound_s: float


def compose_file(image: str, replicas: int) -> str:
    return (
        f"name: {PROJECT}\nservices:\n  web:\n    image: {image}\n    stop_grace_period: 5s\n"
        f"    deploy:\n      replicas: {replicas}\n"
    )


def compose(directory: Path, *args: str) -> None:
    subprocess.run(["docker", "compose", "-p", PROJECT, "-f", str(directory / "compose.yaml"), *args],
                   cwd=directory, check=True, capture_output=True)


def reactions(events: list[ProgressEvent], batch: int) -> list[float]:
    """Request k (k >= batch) was freed by the (k - batch)-th settle; measured from the later of that
    settle and the previous request's acknowledgement."""
    sent = [event.at for event in events if event.kind == "request_sent"]
    acked = [event.at for event in events if event.kind == "acknowledged"]
    settled = [event.at for event in events if event.kind == "settled"]
    delays = []
    for index in range(batch, len(sent)):
        freed_at = max(settled[index - batch], acked[index - 1])
        delays.append((sent[index] - freed_at) * 1000)
    return delays


def lower_bound(events: list[ProgressEvent], replicas: int, batch: int) -> float:
    sent = {event.replica: event.at for event in events if event.kind == "request_sent"}
    up = {event.replica: event.at for event in events if event.kind == "up"}
    to_healthy = statistics.mean(up[name] - sent[name] for name in up)
    return math.ceil(replicas / batch) * to_healthy


async def roll(step: str, replicas: int) -> tuple[list[ProgressEvent], float]:
    events: list[ProgressEvent] = []
    clock = asyncio.get_running_loop().time
    backend = DockerBackend("web", project=PROJECT, clock=clock)
    policy = Policy(step=parse_step(step), order=OrderChoice.START_FIRST)
    result = await Controller(backend, policy, report=events.append).run()
    if result.outcome != "completed":
        raise SystemExit(f"bench rollout did not complete: {result.reason}")
    return events, result.duration_s


def measure(directory: Path, step: str, replicas: int, runs: int) -> RunFigures:
    batch = batch_size(parse_step(step), replicas)
    figures = RunFigures(step, batch, [], 0.0, 0.0)
    durations, bounds = [], []
    for run in range(runs):
        image = "rollover-test/app:v2" if run % 2 == 0 else "rollover-test/app:v1"
        (directory / "compose.yaml").write_text(compose_file(image, replicas))
        events, duration = asyncio.run(roll(step, replicas))
        figures.reactions_ms += reactions(events, batch)
        durations.append(duration)
        bounds.append(lower_bound(events, replicas, batch))
    figures.duration_s = statistics.mean(durations)
    figures.lower_bound_s = statistics.mean(bounds)
    return figures


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1)]


def report(all_figures: list[RunFigures], replicas: int, runs: int) -> None:
    print(f"rollover bench: {replicas} replicas, {runs} rollouts per step, start-first, healthcheck every 0.5 s")
    print("| step | batch | reaction p50 | reaction p95 | reaction max | samples | duration | lower bound | ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    for fig in all_figures:
        rs = fig.reactions_ms
        print(f"| {fig.step} | {fig.batch} | {percentile(rs, .5):.1f} ms | {percentile(rs, .95):.1f} ms | "
              f"{max(rs):.1f} ms | {len(rs)} | {fig.duration_s:.1f} s | {fig.lower_bound_s:.1f} s | "
              f"{fig.duration_s / fig.lower_bound_s:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicas", type=int, default=6)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--steps", default="1,2,half")
    options = parser.parse_args()
    subprocess.run([str(ROOT / "scripts" / "build-images")], check=True)
    with tempfile.TemporaryDirectory(prefix="rollover-bench-") as workdir:
        directory = Path(workdir)
        (directory / "compose.yaml").write_text(compose_file("rollover-test/app:v1", options.replicas))
        try:
            compose(directory, "up", "-d", "--wait")
            figures = [measure(directory, step, options.replicas, options.runs) for step in options.steps.split(",")]
        finally:
            compose(directory, "down", "-v", "--remove-orphans")
    report(figures, options.replicas, options.runs)


if __name__ == "__main__":
    sys.exit(main())
