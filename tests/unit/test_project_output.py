"""``rollover up``'s per-service reporter marks each of a service's events with its name."""

from __future__ import annotations

import json

import pytest

from rollover.core.events import EventKind
from rollover.core.model import ProgressEvent
from rollover.project.output import ProjectOutput
from rollover.report.redact import Redactor


def test_a_rolled_services_json_events_carry_its_name(capsys: pytest.CaptureFixture[str]) -> None:
    output = ProjectOutput(json=True, quiet=False, redact=Redactor())
    report, _ = output.reporter_for("web")
    report(ProgressEvent(EventKind.UP, 1.5, "web-1", (("grace_s", 0.0),)))
    [line] = capsys.readouterr().out.splitlines()
    record = json.loads(line)
    assert (record["event"], record["replica"], record["service"], record["grace_s"]) == ("up", "web-1", "web", 0.0)


def test_a_rolled_services_text_lines_still_read_as_its_steps(capsys: pytest.CaptureFixture[str]) -> None:
    output = ProjectOutput(json=False, quiet=False, redact=Redactor())
    report, _ = output.reporter_for("web")
    report(ProgressEvent(EventKind.ACKNOWLEDGED, 2.0, "web-1", (("replacement", "web-7"),)))
    assert capsys.readouterr().out == "[    2.0s] web-1: replacement web-7 created\n"
