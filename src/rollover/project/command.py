"""``rollover up``'s body: validated option values -> an UpRequest -> the exit code (cli.py registers it)."""

from __future__ import annotations

import asyncio
import sys
from typing import Protocol

from rollover.core.project import PlanRequest
from rollover.core.settings import Overrides
from rollover.errors import InvalidOption
from rollover.project.live import ProjectLive
from rollover.project.model import ProjectArgs
from rollover.project.output import ProjectOutput
from rollover.project.up import UpRequest, rollover_up
from rollover.report.html import Recorder, write_report
from rollover.report.redact import Redactor


class OutputChoice(Protocol):
    @property
    def json(self) -> bool: ...

    @property
    def quiet(self) -> bool: ...

    @property
    def report_file(self) -> str | None: ...


def run_up(services: tuple[str, ...], *, files: tuple[str, ...], project_name: str | None,
           project_directory: str | None, env_files: tuple[str, ...], profiles: tuple[str, ...], dry_run: bool,
           force_recreate: bool, remove_orphans: bool, no_deps: bool, pull: bool, output: OutputChoice,
           redact: Redactor, step: str | None, grace: str | None, order: str | None, timeout: str | None,
           on_failure: str | None, drain_timeout: str | None, max_probe_failures: int | None) -> int:
    if max_probe_failures is not None and max_probe_failures < 0:
        raise InvalidOption(f"max probe failures {max_probe_failures}: must be 0 or more")
    if no_deps and not services:
        raise InvalidOption("--no-deps needs the services to deploy")
    overrides = Overrides(step=step, grace=grace, order=order, timeout=timeout, on_failure=on_failure,
                          drain_timeout=drain_timeout, max_probe_failures=max_probe_failures)
    request = UpRequest(
        args=ProjectArgs(files=files, project_name=project_name, project_directory=project_directory,
                         env_files=env_files, profiles=profiles),
        plan=PlanRequest(project="", selected=services, no_deps=no_deps, force_recreate=force_recreate,
                         remove_orphans=remove_orphans, overrides=overrides),
        pull=pull, dry_run=dry_run,
    )
    # The live view on a terminal, as for redeploy; plain lines anywhere else.
    live = ProjectLive(sys.stdout, redact) if not output.json and not output.quiet and sys.stdout.isatty() else None
    recorder = Recorder(redact) if output.report_file is not None else None
    out = ProjectOutput(json=output.json, quiet=output.quiet, redact=redact, live=live, recorder=recorder)
    try:
        return asyncio.run(_up(request, out))
    finally:
        if recorder is not None and output.report_file is not None and recorder.records:
            write_report(output.report_file, recorder.records)


async def _up(request: UpRequest, out: ProjectOutput) -> int:
    ticking = asyncio.create_task(out.live.ticking()) if out.live is not None else None
    try:
        return await rollover_up(request, out.emit, out.reporter_for)
    finally:
        if ticking is not None:
            ticking.cancel()
        if out.live is not None:
            out.live.close()
