"""--dry-run's prediction: each rolled service's duration from the simulator (the same controller on
a virtual clock), fed with what the service's running replicas took to come up.

Time to up, per replica, from the engine's own history: creation -> start (what a request takes
to be acknowledged; the smallest of them), then start -> its first ``health_status: healthy`` event (the engine keeps
its last few hundred events). When that history has rolled off: the first probe's time, the
healthcheck's interval plus what its probes take (the health log). The prediction says which.
"""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import Mapping, Sequence

from rollover.backends.docker.inspect import created_at, engine_time, healthcheck_of
from rollover.backends.sim import SimBackend
from rollover.clock import run_virtual
from rollover.controller.loop import Controller
from rollover.core.policy import Policy
from rollover.core.project import Action, ProjectPlan
from rollover.engine import Engine, Inspect

_NS = 1e9
_NO_CHECK_UP_S = 1.0  # without a healthcheck a replica is up once it runs


async def predict_durations(engine: Engine, plan: ProjectPlan,
                            containers: Mapping[str, Sequence[Inspect]]) -> dict[str, dict[str, object]]:
    predictions: dict[str, dict[str, object]] = {}
    for item in plan.services:
        running = [inspect for inspect in containers.get(item.service, ())
                   if (inspect.get("State") or {}).get("Running")]
        if item.action is not Action.ROLL or item.settings is None or not running:
            continue
        request_s, up_s, basis = await _time_to_up(engine, running)
        duration = await asyncio.to_thread(_simulate, item.settings.policy, len(running), request_s, request_s + up_s)
        predictions[item.service] = {"duration_s": round(duration, 1), "request_s": round(request_s, 2),
                                     "time_to_up_s": round(up_s, 2), "basis": basis}
    return predictions


def _simulate(policy: Policy, replicas: int, request_s: float, redeploy_s: float) -> float:
    async def main() -> float:
        result = await Controller(SimBackend(replicas, request_s, redeploy_s), policy).run()
        return result.duration_s

    return run_virtual(main())


async def _time_to_up(engine: Engine, running: Sequence[Inspect]) -> tuple[float, float, str]:
    requests, ups = [], []
    for inspect in running:
        created, started = created_at(inspect), engine_time(str((inspect.get("State") or {}).get("StartedAt", "")))
        if created is None or started is None:
            continue
        requests.append(max(0.0, started - created))
        if healthcheck_of(inspect.get("Config") or {}) is None:
            ups.append(_NO_CHECK_UP_S)
            continue
        healthy = await _first_healthy(engine, str(inspect["Id"]), started)
        if healthy is not None:
            ups.append(healthy - started)
    # Compose creates a service's containers together and starts them one after another: the
    # smallest creation -> start gap is one request's time (3 created at 0 s, started at 1.9,
    # 3.5 and 4.6 s -> 1.9 s).
    request_s = min(requests) if requests else 0.5
    if ups:
        return request_s, statistics.median(ups), f"measured from {len(ups)} replica(s)' start and healthy events"
    # The engine's event buffer is short (its healthchecks' own exec events flood it): then a
    # replica is taken as healthy at its first probe, one interval after the start, which takes as
    # long as the probes in its health log took. interval 0.5 s, probes 0.02 s -> 0.52 s.
    check = healthcheck_of(running[0].get("Config") or {}) or {}
    interval = (check.get("Interval") or 0) / _NS or 30.0
    probes = [end - start for inspect in running for start, end in _probe_times(inspect)]
    probe_s = statistics.median(probes) if probes else 0.0
    basis = (f"first probe after the healthcheck's interval; probe time from {len(probes)} health log entries"
             if probes else "first probe after the healthcheck's interval")
    return request_s, interval + probe_s, basis


def _probe_times(inspect: Inspect) -> list[tuple[float, float]]:
    log = ((inspect.get("State") or {}).get("Health") or {}).get("Log") or ()
    times = [(engine_time(str(entry.get("Start", ""))), engine_time(str(entry.get("End", "")))) for entry in log]
    return [(start, end) for start, end in times if start is not None and end is not None and end >= start]


async def _first_healthy(engine: Engine, container_id: str, started: float) -> float | None:
    # Not filtered by event on the engine's side: that filter misses health_status (moby#25798).
    events = await engine.past_events(started, engine.now_on_engine(), {"container": [container_id]})
    healthy = [event.get("timeNano", 0) / _NS for event in events if event.get("status") == "health_status: healthy"]
    return min(healthy) if healthy else None
