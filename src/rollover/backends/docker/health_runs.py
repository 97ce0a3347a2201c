"""Healthchecks an engine does not run by itself, run by rollover (Podman without systemd).

Podman schedules a container's healthcheck with a systemd timer; where there is no systemd (a
container host, CI) the check never runs, the container stays "starting" for ever and no health
event ever comes. So for each container of the service that starts with a healthcheck, a task
runs it through Podman's own API (``healthcheck run``) on the container's interval, as the
engine would, and reports a status as the event Docker would have sent: healthy -> up,
unhealthy -> down (once per change). Podman applies the check's retries and start period itself and keeps the
result in the container's state, so an inspect (a resync) agrees with what was reported.

The runs of a container end once it is healthy (up: what the rollout waits for) or when it
stops. Run on for every replica made, they kept the engine client's threads busy (a check is an
exec in the container, a blocking call here, and they share the default thread pool): on a
loaded 2-core machine, replacements whose checks passed were reported up only 13.6 s after they
were made, or not within their 14 s budget. The cost: on Podman, a replica that turns unhealthy
after it was up is not seen by rollover (it dying still is).

A container's runs begin from whichever comes first: its start event, rollover's own start of it
returning, or a resync finding it running and still "starting". One path alone left a replacement
unchecked on a loaded CI machine (no run at all in 14 s, the rollout rolled back); all three are
idempotent, so a container gets one run loop whichever way it was seen.

Podman's own ``health_status`` events are not used: each carries the status from before its run
(dialect.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from rollover.backends.docker.container_tasks import ContainerTasks
from rollover.backends.docker.inspect import healthcheck_of
from rollover.core.model import ReplicaDown, ReplicaEvent, ReplicaUp
from rollover.engine import Engine, Inspect
from rollover.errors import RolloverError

_NS = 1e9
_DEFAULT_INTERVAL_S = 30.0  # the engine's default when the definition leaves the interval unset


def check_interval_s(inspect: Inspect) -> float | None:
    """Seconds between two runs of the container's healthcheck; None when it has none.
    Interval 500000000 (ns) -> 0.5 s; unset (0) -> 30 s."""
    check = healthcheck_of(inspect.get("Config") or {})
    if check is None:
        return None
    return (check.get("Interval") or 0) / _NS or _DEFAULT_INTERVAL_S


class HealthRuns:
    """One task per started container that has a healthcheck, reporting through ``report``."""

    def __init__(self, engine: Engine, clock: Callable[[], float], report: Callable[[ReplicaEvent], None]) -> None:
        self._engine = engine
        self._clock = clock
        self._report = report
        self._runs = ContainerTasks()
        self._healthy: set[str] = set()  # runs ended healthy: not begun again until it stops

    def is_checked(self, container_id: str) -> bool:
        """Its checks run now, or ran until it was healthy."""
        return container_id in self._runs or container_id in self._healthy

    def started(self, container_id: str, inspect: Inspect) -> None:
        """The container started: run its healthcheck from now on (until it stops or is gone)."""
        interval = check_interval_s(inspect)
        if interval is None or self.is_checked(container_id):
            return
        self._runs.spawn(container_id, self._run(container_id, interval))

    def stopped(self, container_id: str) -> None:
        self._healthy.discard(container_id)
        self._runs.cancel(container_id)

    async def _run(self, container_id: str, interval_s: float) -> None:
        reported = "starting"
        while True:
            # The container's own schedule: the first run one interval after the start, as Docker does.
            await asyncio.sleep(interval_s)
            try:
                status = await self._engine.run_healthcheck(container_id)
            except RolloverError:
                # The engine did not answer this time (a lost stream is handled above us): the next
                # run tells, and a replacement that never turns healthy runs out of its health budget.
                continue
            if status is None and not await self._still_running(container_id):
                return  # stopped or gone: its die/destroy events say so
            if status == "healthy":
                self._healthy.add(container_id)
                self._report(ReplicaUp(container_id, self._clock()))
                return  # up: see the module's note on why the runs end here
            if status is not None and status != reported:
                reported = status
                if status == "unhealthy":
                    self._report(ReplicaDown(container_id, self._clock(), "unhealthy"))

    async def _still_running(self, container_id: str) -> bool:
        """Podman refuses a check (409) while a container is not running: gone for good, or only
        caught mid-start. Only the first ends the runs."""
        try:
            inspect = await self._engine.inspect_container(container_id)
        except RolloverError:
            return True  # ask again at the next run
        return inspect is not None and bool((inspect.get("State") or {}).get("Running"))

    async def close(self) -> None:
        await self._runs.close()
