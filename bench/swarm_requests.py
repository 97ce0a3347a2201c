"""Benchmark: rollover on a three-node Swarm against Swarm's own updater, and request -> ack there.

A throwaway three-node swarm (the Swarm tests' ``scripts/swarm-cluster.sh``, network namespaces
on this machine) runs a 6-replica service of the test app (healthcheck every 0.5 s). Each row
rolls it to the other image, alternately with rollover and with the control, ``--runs`` times:

- rollover: ``rollover redeploy SERVICE --platform swarm --step N --order O --output json``;
- the control, no rollover code: ``docker service update --image IMG --update-parallelism N
  --update-order O --update-delay 0s --update-monitor 1s`` (Swarm's updater, which waits for each
  batch to run healthy, then for the monitor period), timed until it returns converged.

Reported per row: both durations (median), their ratio, and rollover's request -> acknowledged
p50/p95 (from its JSON events ``request_sent`` -> ``acknowledged``: one spec change and Swarm
making the tasks, seen in the manager's task list).

    flock /tmp/netns.lock .venv/bin/python -m bench.swarm_requests [--runs 2]

The swarm is made and removed by the run; it uses the fixed namespace addresses of the Swarm
tests, hence the lock shared with them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.engine import APP_V1, APP_V2, app_image_context
from tests.support.swarm import ServiceFactory, SwarmCluster, running_cluster, running_tasks, wait_for
from tests.support.swarm_cli import cli_env, rollover

REPLICAS = 6
ROWS = (("1", "stop-first"), ("2", "stop-first"), ("1", "start-first"))


def percentile(values: list[float], share: float) -> float:
    """Nearest-rank: 20 values, p95 -> the 19th smallest."""
    ordered = sorted(values)
    return ordered[max(0, round(share * len(ordered)) - 1)]


def with_rollover(cluster: SwarmCluster, service: str, image: str, step: str, order: str) -> tuple[float, list[float]]:
    started = time.monotonic()
    outcome = rollover(cluster, service, "--image", image, "--step", step, "--order", order)
    took = time.monotonic() - started
    if outcome.code != 0:
        raise SystemExit(f"rollover exited {outcome.code}: {outcome}")
    events = [json.loads(line) for line in outcome.stdout.splitlines() if line.startswith("{")]
    sent: dict[str, float] = {}
    acks = []
    for event in events:
        if event["event"] == "request_sent":
            sent[event["replica"]] = event["t"]
        elif event["event"] == "acknowledged" and event["replica"] in sent:
            acks.append(event["t"] - sent.pop(event["replica"]))
    return took, acks


def with_swarm(cluster: SwarmCluster, service: str, image: str, step: str, order: str) -> float:
    started = time.monotonic()
    subprocess.run(["docker", "service", "update", "--quiet", "--image", image, "--update-parallelism", step,
                    "--update-order", order, "--update-delay", "0s", "--update-monitor", "1s", service],
                   env=cli_env(cluster), check=True, capture_output=True, timeout=600)
    took = time.monotonic() - started
    wait_for(lambda: sorted(t["Spec"]["ContainerSpec"]["Image"] for t in running_tasks(cluster, service))
             == [image] * REPLICAS, 60, "the control's tasks to run")
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=2)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rsw-bench-") as scratch, \
            running_cluster(3, app_image_context(Path(scratch))) as cluster:
        factory = ServiceFactory(cluster)
        try:
            print(f"{'step':>4} {'order':<11} {'rollover':>9} {'swarm':>7} {'ratio':>6} {'ack p50':>8} {'ack p95':>8}")
            for step, order in ROWS:
                ours: list[float] = []
                theirs: list[float] = []
                acks: list[float] = []
                for run in range(options.runs):
                    service = factory(APP_V1, replicas=REPLICAS, host_port=order == "stop-first")
                    # Each rolls the service once: to v2 first, back to v1 second; who goes first alternates.
                    if run % 2 == 0:
                        took, acked = with_rollover(cluster, service, APP_V2, step, order)
                        theirs.append(with_swarm(cluster, service, APP_V1, step, order))
                    else:
                        theirs.append(with_swarm(cluster, service, APP_V2, step, order))
                        took, acked = with_rollover(cluster, service, APP_V1, step, order)
                    ours.append(took)
                    acks += acked
                    cluster.client.api.remove_service(service)
                mine, control = statistics.median(ours), statistics.median(theirs)
                print(f"{step:>4} {order:<11} {mine:8.1f}s {control:6.1f}s {mine / control:6.2f} "
                      f"{percentile(acks, 0.5) * 1000:6.0f}ms {percentile(acks, 0.95) * 1000:6.0f}ms", flush=True)
        finally:
            factory.remove_all()


if __name__ == "__main__":
    main()
