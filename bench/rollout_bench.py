"""Benchmark: a rollout's duration against a control measured in the same run, request and reaction
times, and rollover's CPU per replica.

A Compose service of N replicas (the demo image, busybox httpd, healthcheck every 0.5 s), rolled
start-first at each step, alternately by two things:

- the **control**, which involves no rollover code: a minimal loop that makes the same replacements
  straight through the Engine API (each a copy of its target's create config on the other image:
  labels, env, healthcheck, networks), at most ``batch`` not yet healthy at once, the next one
  created the moment one turns healthy (the engine's health event) and started beside the loop
  (as rollover acknowledges a replacement once created and starts it meanwhile), each old one
  stopped and removed once its replacement is healthy. Its duration runs until every replacement
  is healthy and every old one gone: the bound rollover is measured against;
- **rollover** itself, the CLI as a user runs it (``rollover redeploy web --step S --output json``),
  back to the image the compose file names. With ``--kind selector`` the same containers are
  rolled as a label-selected service (``--selector rfast.bench.service=web --image ...``): each
  replacement a clone of its target, no Compose.

Each row: rollover's duration (from its plan), the control's, their ratio; from rollover's JSON
events, request -> acknowledgement p50/p95 (per replica), beside the control's create p50/p95 (the
engine's own create call, with as many replacements starting at once: the floor under a request)
and reaction p50/p95 (from the health event or acknowledgement that freed a slot to the next
request); rollover's CPU per replaced replica (user + system of the rollover process and every
child it started, the docker CLI and Compose included, divided by N). Also measured once: the time
to healthy of a single container started alone. The machine's load average is printed with the
figures: on a shared machine, the ratio against the same run's control is the figure that counts.

    bench/run [--replicas 6,24,60] [--steps 1,2,25%,half] [--runs 1] [--interval 500ms] [--kind compose]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors

ROOT = Path(__file__).resolve().parent.parent
ROLLOVER = ROOT / ".venv" / "bin" / "rollover"
PROJECT = "rfast-bench"
IMAGES = ("rollover-test/app:v1", "rollover-test/app:v2")
SERVICE_LABELS = {"com.docker.compose.project": PROJECT, "com.docker.compose.service": "web"}
# --kind selector rolls the same containers as a label-selected service (each replacement a clone
# of its target, no Compose), by this label, which the control's copies carry too.
SELECTOR_LABEL = "rfast.bench.service"


@dataclass
class Row:
    replicas: int
    step: str
    batch: int
    durations: list[float] = field(default_factory=list)
    controls: list[float] = field(default_factory=list)
    control_create_ms: list[float] = field(default_factory=list)  # the engine's own create, at the same load
    request_ms: list[float] = field(default_factory=list)
    reaction_ms: list[float] = field(default_factory=list)
    cpu_per_replica_ms: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # rollouts that did not complete, and why


def compose_file(image: str, replicas: int, interval: str = "500ms") -> str:
    return (
        f"name: {PROJECT}\nservices:\n  web:\n    image: {image}\n    init: true\n    stop_grace_period: 5s\n"
        f"    labels:\n      {SELECTOR_LABEL}: web\n    deploy:\n      replicas: {replicas}\n"
        # The image's check every 0.5 s (--interval), with room for a loaded shared machine: a probe
        # may take 5 s and fail 5 times before the replica counts as unhealthy.
        f"    healthcheck:\n      interval: {interval}\n      timeout: 5s\n      retries: 5\n"
    )


def compose(directory: Path, *args: str) -> None:
    subprocess.run(["docker", "compose", "-p", PROJECT, "-f", str(directory / "compose.yaml"), *args],
                   cwd=directory, check=True, capture_output=True)


def batch_of(step: str, replicas: int) -> int:
    """'1' -> 1, '25%' of 24 -> 6, 'half' of 7 -> 3 (floor, at least 1), as rollover's --step."""
    if step == "half":
        return max(1, replicas // 2)
    if step.endswith("%"):
        return max(1, math.floor(replicas * int(step[:-1]) / 100))
    return int(step)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1)] if ordered else float("nan")


# -- the control: no rollover code --------------------------------------------------------------------


def copy_body(attrs: dict[str, Any], image: str) -> tuple[dict[str, Any], str]:
    """A create body like the container's own, on ``image`` (single network: Compose's default)."""
    config = {key: value for key, value in attrs["Config"].items() if key not in ("Hostname", "Image")}
    config["Env"] = [entry for entry in config.get("Env") or [] if not entry.startswith("APP_VERSION=")]
    host = {"Init": True, "NetworkMode": attrs["HostConfig"]["NetworkMode"]}
    network = attrs["HostConfig"]["NetworkMode"]
    aliases = [a for a in attrs["NetworkSettings"]["Networks"][network].get("Aliases") or [] if a != attrs["Id"][:12]]
    body = {**config, "Image": image, "HostConfig": host,
            "NetworkingConfig": {"EndpointsConfig": {network: {"Aliases": aliases}}}}
    return body, network


def control_roll(api: Any, image: str, batch: int) -> tuple[float, list[float]]:
    """Replace every replica of the service as described above; seconds it took, and how long
    each create call took (ms): the floor under rollover's request -> acknowledgement, which is a
    create too, at the same number of replacements starting at once."""
    targets = [c["Id"] for c in api.containers(filters={"label": [f"{k}={v}" for k, v in SERVICE_LABELS.items()]})]
    bodies = [copy_body(api.inspect_container(target), image)[0] for target in targets]
    # Health events only: unfiltered, every healthcheck's exec_create/exec_start/exec_die comes too
    # (360 a second at 60 replicas every 0.5 s), the loop falls behind, and the engine drops events
    # for a subscriber that does (the control then waited for replacements long healthy).
    events = api.events(decode=True, filters={"type": "container", "event": ["health_status"],
                                              "label": [f"{k}={v}" for k, v in SERVICE_LABELS.items()]})
    retiring = ThreadPoolExecutor(max_workers=8)
    # Starts run beside the loop, as rollover's do: a start waits for the engine to set the
    # container's network and process up, which at 12 at once on a loaded engine took seconds each.
    starts = ThreadPoolExecutor(max_workers=8)
    starting: dict[str, str] = {}  # replacement id -> the target it replaces
    queue = list(zip(targets, bodies, strict=True))
    creates_ms: list[float] = []
    started = time.monotonic()

    def launch() -> None:
        target, body = queue.pop(0)
        asked = time.perf_counter()
        made = api.create_container_from_config(body, name=f"{PROJECT}-ctl-{os.urandom(3).hex()}")
        creates_ms.append((time.perf_counter() - asked) * 1000)
        starting[made["Id"]] = target
        starts.submit(api.start, made["Id"])

    try:
        while queue and len(starting) < batch:
            launch()
        for event in events:
            if event.get("Action") != "health_status: healthy" or event.get("id") not in starting:
                continue
            old = starting.pop(event["id"])
            retiring.submit(lambda old=old: (api.stop(old, timeout=5), api.remove_container(old)))
            while queue and len(starting) < batch:
                launch()
            if not queue and not starting:
                break
    finally:
        events.close()
    starts.shutdown(wait=True)
    retiring.shutdown(wait=True)
    return time.monotonic() - started, creates_ms


def alone_to_healthy(api: Any, image: str) -> float:
    """Seconds from create to the healthy event of one container started alone."""
    [some] = api.containers(filters={"label": [f"{k}={v}" for k, v in SERVICE_LABELS.items()]}, limit=1)
    body, _ = copy_body(api.inspect_container(some["Id"]), image)
    body["Labels"] = {"rfast.bench": "alone"}
    events = api.events(decode=True, filters={"type": "container", "event": ["health_status"],
                                              "label": ["rfast.bench=alone"]})
    started = time.monotonic()
    made = api.create_container_from_config(body, name=f"{PROJECT}-alone")
    try:
        api.start(made["Id"])
        for event in events:
            if event.get("Action") == "health_status: healthy":
                return time.monotonic() - started
        raise SystemExit("the event stream ended")
    finally:
        events.close()
        api.remove_container(made["Id"], force=True)


# -- rollover, as a user runs it ----------------------------------------------------------------------


def rollover_roll(directory: Path, step: str, kind: str) -> tuple[list[dict[str, Any]], float]:
    """Run the CLI; its JSON events and the CPU seconds it and its children used."""
    service = (["web", "--project", PROJECT] if kind == "compose"
               # A selector service rolls each replica to its own image reference unless told.
               else ["web", "--selector", f"{SELECTOR_LABEL}=web", "--image", IMAGES[0]])
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run([str(ROLLOVER), "redeploy", *service, "--step", step,
                           "--output", "json"], cwd=directory, capture_output=True, text=True, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    events = [json.loads(line) for line in done.stdout.splitlines()]
    if done.returncode not in (0, 1) or not events or events[-1]["event"] != "summary":
        raise SystemExit(f"rollover exited {done.returncode}: {done.stderr.strip()} {events[-1:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return events, cpu


def request_times_ms(events: list[dict[str, Any]]) -> list[float]:
    sent = {e["replica"]: e["t"] for e in events if e["event"] == "request_sent"}
    return [(e["t"] - sent[e["replica"]]) * 1000 for e in events if e["event"] == "acknowledged"]


def reactions_ms(events: list[dict[str, Any]], batch: int) -> list[float]:
    """Request k (k >= batch) was freed by the (k - batch)-th settle: measured from the later of
    that settle and the previous request's acknowledgement (requests go one at a time)."""
    sent = [e["t"] for e in events if e["event"] == "request_sent"]
    acked = [e["t"] for e in events if e["event"] == "acknowledged"]
    settled = [e["t"] for e in events if e["event"] == "settled"]
    return [(sent[k] - max(settled[k - batch], acked[k - 1])) * 1000 for k in range(batch, len(sent))]


# -- the run -------------------------------------------------------------------------------------------


def measure(directory: Path, api: Any, replicas: int, steps: list[str], runs: int, interval: str,
            kind: str) -> list[Row]:
    (directory / "compose.yaml").write_text(compose_file(IMAGES[0], replicas, interval))
    compose(directory, "up", "-d", "--wait", "--wait-timeout", "300")
    rows = []
    for step in steps:
        row = Row(replicas, step, batch_of(step, replicas))
        for _ in range(runs):
            control_s, creates_ms = control_roll(api, IMAGES[1], row.batch)  # v1 -> v2, no rollover code
            row.controls.append(control_s)
            row.control_create_ms += creates_ms
            events, cpu = rollover_roll(directory, step, kind)  # v2 -> v1, what compose.yaml says
            if events[-1]["result"] != "completed":  # reported, not averaged: the row says so
                row.failures.append(f"{events[-1]['result']}: {events[-1].get('reason')}")
                continue
            row.durations.append(events[-1]["duration_s"])
            row.request_ms += request_times_ms(events)
            row.reaction_ms += reactions_ms(events, row.batch)
            row.cpu_per_replica_ms.append(cpu / replicas * 1000)
        rows.append(row)
        load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
        print(f"{format_row(row)} load {load}", file=sys.stderr, flush=True)
    return rows


def report(rows: list[Row], alone_s: float, loads: tuple[str, str]) -> None:
    print(f"load average before: {loads[0]}; after: {loads[1]}")
    print(f"one container started alone: healthy after {alone_s:.2f} s")
    print("| replicas | step | batch | duration | control | ratio | request→ack p50 / p95 | control's create p50 / p95 "
          "| reaction p50 / p95 | CPU per replica |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(format_row(row))


def format_row(row: Row) -> str:
    if not row.durations:
        return (f"| {row.replicas} | {row.step} | {row.batch} | failed: {'; '.join(row.failures)} | "
                f"{statistics.mean(row.controls):.1f} s | — | — | — | — | — |")
    duration, control = statistics.mean(row.durations), statistics.mean(row.controls)
    rq, rx, cc = row.request_ms, row.reaction_ms, row.control_create_ms
    return (f"| {row.replicas} | {row.step} | {row.batch} | {duration:.1f} s | {control:.1f} s | "
            f"{duration / control:.2f} | {percentile(rq, .5):.0f} / {percentile(rq, .95):.0f} ms | "
            f"{percentile(cc, .5):.0f} / {percentile(cc, .95):.0f} ms | "
            f"{percentile(rx, .5):.1f} / {percentile(rx, .95):.1f} ms | "
            f"{statistics.mean(row.cpu_per_replica_ms):.0f} ms |"
            + (f" ({len(row.failures)} failed: {'; '.join(row.failures)})" if row.failures else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicas", default="6,24,60")
    parser.add_argument("--steps", default="1,2,25%,half")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--interval", default="500ms",
                        help="the replicas' healthcheck interval (60 replicas every 0.5 s saturate 2 cores)")
    parser.add_argument("--kind", choices=["compose", "selector"], default="compose",
                        help="roll the service as Compose's, or as the containers carrying a label (--selector)")
    options = parser.parse_args()
    # A SIGTERM (`timeout`, a CI job cancelled) ends the run like ^C does, so the cleanup below runs:
    # by default Python dies at once and leaves up to 2 x N containers healthchecking.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    subprocess.run([str(ROOT / "scripts" / "build-images")], check=True)
    api = docker.APIClient(version="auto")
    load_before = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    rows: list[Row] = []
    alone_s = math.nan
    with tempfile.TemporaryDirectory(prefix="rfast-bench-") as workdir:
        directory = Path(workdir)
        try:
            for replicas in map(int, options.replicas.split(",")):
                rows += measure(directory, api, replicas, options.steps.split(","), options.runs, options.interval,
                                options.kind)
                if math.isnan(alone_s):
                    alone_s = alone_to_healthy(api, IMAGES[1])
        finally:
            with contextlib.suppress(subprocess.CalledProcessError):  # the containers go below anyway
                compose(directory, "down", "-v", "--remove-orphans", "-t", "1")
            for container in api.containers(all=True, filters={"label": f"com.docker.compose.project={PROJECT}"}):
                api.remove_container(container["Id"], force=True, v=True)  # the control's, by the bench's label
            with contextlib.suppress(docker.errors.NotFound):  # a rollover stopped mid-run leaves its lock
                api.remove_container(f"rollover-lock-{PROJECT}-web", force=True, v=True)
            # Compose's down leaves its network while containers it does not count (the control's,
            # a selector run's clones) are still on it: they are gone now. Best effort: the figures
            # are printed below whatever the engine says (20.10 may keep a stale endpoint).
            with contextlib.suppress(docker.errors.APIError):
                api.remove_network(f"{PROJECT}_default")
    load_after = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    print(f"{options.kind} service, healthcheck interval {options.interval}")
    report(rows, alone_s, (load_before, load_after))


if __name__ == "__main__":
    sys.exit(main())
