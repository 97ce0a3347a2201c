"""The traffic probe in a process of its own, so that it and the controller never slow each other.

Why: at 200 requests/s the probe costs about 40 % of a core (``bench/probe_cost.py``: 1.9 ms
of CPU per request, a new connection each). In rollover's own process it shares one event loop
and one GIL with the controller and the Docker SDK's threads: a slow engine answer parsed in a
thread holds the probe's requests back until they go out in a burst and pile up to "overload",
and a burst of probe answers holds back the controller's reaction to an event. Two processes
each get their own share of the CPUs.

The two talk over the worker's stdin and stdout:
- the worker prints ``ready`` once its probe is sending;
- the parent closes the worker's stdin to stop it. A parent that dies, even by SIGKILL, closes
  it too, so the worker never outlives rollover;
- the worker then stops its probe (requests in flight finish within the timeout), prints the
  report as one JSON line and exits.

The worker runs in a session of its own, so a Ctrl-C at the terminal reaches only rollover, which
then stops the probe as part of its own orderly stop.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from rollover.errors import PlatformError
from rollover.probe import Probe, ProbeReport

_READY = "ready"
_START_LIMIT_S = 15.0  # a Python interpreter importing httpx: about 0.3 s on an idle machine


class ProbeProcess:
    """``rollover.probe.Probe`` run by a worker process; the same start/stop and report."""

    def __init__(self, url: str, rate: float = 50.0, timeout: float = 2.0) -> None:
        Probe(url, rate=rate, timeout=timeout)  # the same checks of the arguments, here and now
        self.url, self.rate, self.timeout = url, rate, timeout
        self._worker: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        if self._worker is not None:
            raise RuntimeError("the probe was already started")
        self._worker = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "rollover.probe_process", self.url, repr(self.rate), repr(self.timeout),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, start_new_session=True,
        )
        assert self._worker.stdout is not None
        try:
            async with asyncio.timeout(_START_LIMIT_S):
                line = await self._worker.stdout.readline()
        except TimeoutError:
            line = b""
        if line.decode().strip() != _READY:
            await self._end_worker()
            raise PlatformError(f"the traffic probe's process did not start (exit code {self._worker.returncode})")

    async def stop(self) -> ProbeReport:
        """Stop sending, let the requests in flight finish, and report (counts, no samples)."""
        if self._worker is None:
            raise RuntimeError("the probe was not started")
        worker = self._worker
        assert worker.stdin is not None and worker.stdout is not None
        worker.stdin.close()
        # Each request in flight ends within its timeouts: connect, write and read, one each.
        try:
            async with asyncio.timeout(3 * self.timeout + _START_LIMIT_S):
                line = await worker.stdout.readline()
        except TimeoutError:
            line = b""
        await self._end_worker()
        try:
            return report_from_json(json.loads(line))
        except (ValueError, KeyError, TypeError):
            raise PlatformError(f"the traffic probe's process ended without a report"
                                f" (exit code {worker.returncode})") from None

    async def _end_worker(self) -> None:
        assert self._worker is not None
        if self._worker.returncode is None:
            try:
                async with asyncio.timeout(5):
                    await self._worker.wait()
            except TimeoutError:
                self._worker.kill()
                await self._worker.wait()


def report_to_json(report: ProbeReport) -> dict[str, Any]:
    return {"sent": report.sent, "ok": report.ok, "failed": report.failed,
            "failures_by_kind": dict(report.failures_by_kind), "longest_gap_s": report.longest_gap_s,
            "answers": dict(report.answers)}


def report_from_json(data: dict[str, Any]) -> ProbeReport:
    return ProbeReport(sent=int(data["sent"]), ok=int(data["ok"]), failed=int(data["failed"]),
                       failures_by_kind={str(k): int(v) for k, v in data["failures_by_kind"].items()},
                       longest_gap_s=float(data["longest_gap_s"]),
                       answers={str(k): int(v) for k, v in data["answers"].items()})


async def _work(url: str, rate: float, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    probe = Probe(url, rate=rate, timeout=timeout)
    await probe.start()
    print(_READY, flush=True)
    await stdin.read()  # until EOF: the parent asked to stop, or is gone
    report = await probe.stop()
    print(json.dumps(report_to_json(report)), flush=True)


if __name__ == "__main__":
    asyncio.run(_work(sys.argv[1], float(sys.argv[2]), float(sys.argv[3])))
