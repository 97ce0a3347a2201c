"""PURE: why a failed replacement failed, in the engine's own words, for the failure event.

A user told "not up within 14 s" would otherwise run ``docker inspect`` and ``docker logs``
themselves; the failure event carries what they would have looked for: the container's state and
exit code, the engine's error, its last health-check results (Docker keeps the last five, each
with its exit code and output) and the last lines of its log. Secrets are masked at the output
boundary (report/redact.py), like everything else rollover prints.
"""

from __future__ import annotations

from typing import Any

LOG_LINES = 20  # the log lines a failure shows: enough for a stack trace's end, short enough to read
_OUTPUT_CHARS = 500  # a health check's output, cut: a check that dumps a page says its first words


def diagnosis_of(inspect: dict[str, Any] | None, log: str | None) -> dict[str, object]:
    """The failure's evidence from ``docker inspect`` data and the log's tail.

    A container that exited 3 after printing "db down" twice, healthcheck never run:
    {"state": "exited", "exit_code": 3, "health_checks": [], "log": ["db down", "db down"]}.
    A container already removed (someone else, or Docker's --rm): {"gone": True}.
    """
    if inspect is None:
        return {"gone": True}
    state: dict[str, Any] = inspect.get("State") or {}
    found: dict[str, object] = {"state": str(state.get("Status", "")), "exit_code": _exit_code(state)}
    if state.get("Error"):
        found["error"] = str(state["Error"])
    if state.get("OOMKilled"):
        found["oom_killed"] = True
    health = state.get("Health") or {}
    found["health_checks"] = [
        {"exit_code": int(check.get("ExitCode", -1)), "output": str(check.get("Output", ""))[:_OUTPUT_CHARS].strip(),
         "at": str(check.get("End") or check.get("Start") or "")}
        for check in (health.get("Log") or [])
    ]
    found["log"] = log_lines(log)
    return found


def _exit_code(state: dict[str, Any]) -> int | None:
    """None while it still runs (a timeout, a failed admission): a running process has no exit code."""
    if state.get("Running") or state.get("Status") in ("created", "running", "restarting"):
        return None
    return int(state.get("ExitCode", 0))


def log_lines(log: str | None, count: int = LOG_LINES) -> list[str]:
    """The last ``count`` non-empty lines, without trailing whitespace."""
    if not log:
        return []
    lines = [line.rstrip() for line in log.replace("\r\n", "\n").split("\n")]
    return [line for line in lines if line][-count:]


def task_history(slot_tasks: list[tuple[str, str, str]]) -> list[dict[str, str]]:
    """A Swarm slot's tasks, oldest first, as (created, state, error): what ``docker service ps``
    shows, e.g. [{"at": "...", "state": "failed", "error": "task: non-zero exit (3)"}, ...]."""
    return [{"at": created, "state": state, "error": error if error != state else ""}
            for created, state, error in sorted(slot_tasks)]
