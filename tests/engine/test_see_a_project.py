"""Seeing a whole project roll (``rollover up``, issue 15): the live view on a real terminal (tmux) and
the ``--report`` page in a real Chromium, for a project of two services rolled one after the other.

Everything made here is named ``rrep-...`` and removed by name afterwards, pass or fail.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.support.browser import browser, console_errors
from tests.support.engine import APP_V1, APP_V2
from tests.support.faults import ROLLOVER
from tests.support.project_up import PATIENT_HEALTHCHECK, UpProject
from tests.support.see_a_rollout import ARTEFACTS, assert_not_blank, run_on_a_terminal

__all__ = ["browser"]  # the fixture

pytestmark = pytest.mark.engine

REPLICAS = {"api": 3, "web": 2}


def _services(image: str) -> dict[str, Any]:
    quick = {"image": image, "init": True, "stop_grace_period": "5s", "healthcheck": PATIENT_HEALTHCHECK}
    return {"api": {**quick, "deploy": {"replicas": REPLICAS["api"]}},
            "web": {**quick, "depends_on": ["api"], "deploy": {"replicas": REPLICAS["web"]}}}


def test_up_on_a_terminal_shows_each_service_and_its_report_draws_each_rollout(
        docker_client: Any, app_images: dict[str, str], browser: Any, tmp_path: Path) -> None:
    directory = tmp_path / "project"
    directory.mkdir()
    project = UpProject(f"rrep-{uuid.uuid4().hex[:8]}", directory, docker_client, _services(APP_V1))
    try:
        project.write()
        assert project.up().code == 0
        project.services = _services(APP_V2)
        project.write()
        report = directory / "report.html"
        code, joined, _ = run_on_a_terminal([str(ROLLOVER), "up", "--report", str(report)], directory)
        screens = joined.split("\n=====\n")
        assert code == 0, screens[-1]

        # The live view: a line per service, the replicas in flight under the one rolling, one bar
        # over every replica of the project; at the end every service done and the bar full.
        lines = [line for screen in screens for line in screen.splitlines()]
        assert any(re.fullmatch(r"  api  rolling: replaced [0-2]/3", line) for line in lines), screens
        assert any(re.fullmatch(r"  web  roll: waiting", line) for line in lines), screens
        assert any(re.fullmatch(rf"    {project.name}-api-\d+  starting, health checks passed 0/1  \d+\.\ds", line)
                   for line in lines), screens
        last = screens[-1]
        assert re.search(r"replaced 5/5 .*services done 2/2", last), last
        assert re.search(r"  api  roll: completed in \d+\.\ds", last) and re.search(
            r"  web  roll: completed in \d+\.\ds", last), last

        # The report: a section per rolled service, a Gantt row per replica it replaced.
        screenshot = ARTEFACTS / "report-project.png"
        ARTEFACTS.mkdir(parents=True, exist_ok=True)
        browser.get(report.as_uri())
        browser.save_screenshot(str(screenshot))
        assert console_errors(browser) == []
        sections = browser.find_elements("css selector", "section.service")
        assert [section.get_attribute("data-service") for section in sections] == ["api", "web"]
        for section in sections:
            service = section.get_attribute("data-service")
            rows = section.find_elements("css selector", ".gantt-row")
            assert len(rows) == REPLICAS[service], service
            for row in rows:
                assert row.get_attribute("data-replica").startswith(f"{project.name}-{service}-")
                phases = (row.get_attribute("data-phases") or "").split()
                assert phases[:3] == ["serving", "request", "starting"] and phases[-1] == "admitted", phases
                assert [mark.get_attribute("data-mark") for mark in row.find_elements(
                    "css selector", ".mark")] == ["retired"]
        results = [cell.text for cell in browser.find_elements("css selector", "#services td:nth-child(3)")]
        assert results == ["completed", "completed"], results
        assert_not_blank(browser, screenshot)
    finally:
        project.tear_down()
