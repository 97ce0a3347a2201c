"""Seeing a rollout, the pure parts: the finer timeline scale for short rollouts, the Gantt rows the
HTML report draws from the events, the probe's series, the failure diagnosis from inspect data and
its text, and the report's bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from rollover.backends.diagnosis import diagnosis_of, log_lines, task_history
from rollover.cli import main
from rollover.core.gantt import gantt_rows
from rollover.core.probe_report import ProbeSample, latency_series, request_series
from rollover.core.timeline import Row, Segment, choose_scale, render
from rollover.report.eta import remaining_s
from rollover.report.output import diagnosis_text
from tests.unit.test_simulator import simulate

# -- the timeline's scale --------------------------------------------------------------------------

SHORT = """\
-----_______|
-----------------_______|
-----------------------------_______|
|0 |3.7  (1 column = 0.1s)"""


def test_a_rollout_of_a_few_seconds_is_drawn_ten_columns_a_second() -> None:
    from rollover.report.output import render_timeline

    result, _backend = simulate(3, request=0.5, redeploy=1.2)
    assert render_timeline(result) == SHORT


@pytest.mark.parametrize(("last", "scale"), [(0.0, 0.1), (9.99, 0.1), (10.0, 1), (100.0, 1), (300.0, 3)],
                         ids=["instant", "just-under-10s", "10s", "100s", "300s"])
def test_the_scale_is_fine_below_ten_seconds_only(last: float, scale: float) -> None:
    rows = [Row("a", (Segment(requested_at=0.0, acked_at=0.0, up_at=last),))]
    assert choose_scale(rows) == scale


def test_a_mark_on_a_fine_axis_keeps_its_tenth() -> None:
    rows = [Row("a", (Segment(requested_at=0.0, acked_at=1.0, up_at=4.0),))]
    assert render(rows, marks=(2.25,)).splitlines()[-1] == "|0 |2.2 |4.1  (1 column = 0.1s)"


# -- the Gantt rows --------------------------------------------------------------------------------


def _records(args: list[str], capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    main(["simulate", *args, "--output", "json"], environ={})
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]


def test_the_gantt_rows_of_a_rollout_with_a_failure_and_a_rollback(capsys: pytest.CaptureFixture[str]) -> None:
    records = _records(["--replicas", "3", "--request-time", "1", "--redeploy-time", "3", "--fail-replica", "2"],
                       capsys)
    rows, end = gantt_rows(records)
    assert end == 9.0
    assert [row.name for row in rows] == ["app-1", "app-2", "app-3"]
    first, second, third = rows
    # app-1: requested at 0, made at 1, up (and settled, no grace) at 3, retired at 3; put back 6-9.
    assert first.bars == [("serving", 0.0, 3.0), ("request", 0.0, 1.0), ("starting", 1.0, 3.0),
                          ("admitted", 3.0, 6.0), ("restore request", 6.0, 7.0), ("restore starting", 7.0, 9.0)]
    assert ("rolled back", 6.0) in first.marks and ("retired", 3.0) in first.marks
    assert second.phases() == ["serving", "request", "starting"] and ("failed", 6.0) in second.marks
    assert third.bars == [("serving", 0.0, 9.0)] and third.marks == []


def test_a_stop_first_old_replica_stops_serving_when_its_redeploy_is_requested(
        capsys: pytest.CaptureFixture[str]) -> None:
    records = _records(["--replicas", "2", "--request-time", "1", "--redeploy-time", "2", "--order", "stop-first"],
                       capsys)
    rows, _end = gantt_rows(records)
    assert rows[1].bars[0] == ("serving", 0.0, 2.0)  # app-2 requested at 2, when app-1 was up


# -- the probe's series ----------------------------------------------------------------------------


def test_requests_per_100ms_and_latency_per_second() -> None:
    samples = [ProbeSample(10.05, True, "v1", 0.010), ProbeSample(10.12, True, "v1", 0.030),
               ProbeSample(10.15, False, "connect"), ProbeSample(11.5, True, "v2", 0.002)]
    series = request_series(samples, start=10.0)
    assert series["ok"] == [1, 1] + [0] * 13 + [1]
    assert series["failed"] == {"connect": [0, 1] + [0] * 14}
    latency = latency_series(samples, start=10.0)
    assert (latency["p50_ms"], latency["p99_ms"]) == ([10.0, 2.0], [30.0, 2.0])


# -- the failure's diagnosis -----------------------------------------------------------------------

UNHEALTHY = {"State": {"Status": "running", "Running": True, "ExitCode": 0, "Error": "",
                       "Health": {"Status": "unhealthy", "Log": [
                           {"Start": "s1", "End": "e1", "ExitCode": 1, "Output": "db down\n"},
                           {"Start": "s2", "End": "e2", "ExitCode": 1, "Output": "db down\n"}]}}}
EXITED = {"State": {"Status": "exited", "Running": False, "ExitCode": 3, "Error": "", "OOMKilled": True}}


def test_an_unhealthy_replacement_is_diagnosed_by_its_checks_and_its_log() -> None:
    found = diagnosis_of(UNHEALTHY, "starting\n\nconnecting\r\ndb down\n")
    assert found == {"state": "running", "exit_code": None,
                     "health_checks": [{"exit_code": 1, "output": "db down", "at": "e1"},
                                       {"exit_code": 1, "output": "db down", "at": "e2"}],
                     "log": ["starting", "connecting", "db down"]}
    assert diagnosis_text(found) == ["still running (container state: running)", "health check exit 1: db down",
                                     "health check exit 1: db down", "last 3 log line(s):", "  | starting",
                                     "  | connecting", "  | db down"]


def test_an_exited_replacement_shows_its_exit_code_and_an_empty_log() -> None:
    found = diagnosis_of(EXITED, "")
    assert diagnosis_text(found) == ["exited with code 3 (container state: exited)",
                                     "killed by the kernel: out of memory", "the log is empty"]
    assert diagnosis_text(diagnosis_of(None, None)) == ["the replacement was already removed: nothing left to look at"]


def test_a_swarm_slots_history_is_oldest_first_without_repeating_the_state_as_its_error() -> None:
    history = task_history([("2026-12-06T10:00:05", "failed", "task: non-zero exit (3)"),
                            ("2026-12-06T10:00:00", "shutdown", "shutdown"),
                            ("2026-12-06T10:00:09", "running", "running")])
    assert history == [{"at": "2026-12-06T10:00:00", "state": "shutdown", "error": ""},
                       {"at": "2026-12-06T10:00:05", "state": "failed", "error": "task: non-zero exit (3)"},
                       {"at": "2026-12-06T10:00:09", "state": "running", "error": ""}]
    found = {"state": "failed", "exit_code": 3, "health_checks": [], "log": [], "task_error": "x",
             "task_history": history}
    assert "task failed: task: non-zero exit (3)" in diagnosis_text(found)


def test_the_log_keeps_its_last_twenty_lines() -> None:
    assert log_lines("\n".join(f"line {n}" for n in range(50))) == [f"line {n}" for n in range(30, 50)]


# -- the report's bad input ------------------------------------------------------------------------


@pytest.mark.parametrize(("content", "message"), [
    ("not json\n", "line 1: not JSON"),
    ('{"event": "up", "t": 1}\n', "no plan event"),
    ("[1, 2]\n", "line 1: not a rollover event"),
], ids=["not-json", "no-plan", "not-an-event"])
def test_rollover_report_refuses_what_is_not_a_saved_run(tmp_path: Path, content: str, message: str,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    saved = tmp_path / "events.jsonl"
    saved.write_text(content)
    assert main(["report", str(saved), "-o", str(tmp_path / "r.html")], environ={}) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists()


def test_a_report_into_a_missing_folder_is_bad_input_before_the_simulation(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["simulate", "--replicas", "2", "--request-time", "1", "--redeploy-time", "2",
                 "--report", str(tmp_path / "nowhere" / "r.html")], environ={})
    assert code == 2
    captured = capsys.readouterr()
    assert "does not exist" in captured.err and "rollover:" not in captured.out


def test_up_with_a_report_into_a_missing_folder_is_bad_input_before_compose_is_read(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["up", "-f", str(tmp_path / "absent.yaml"), "--report", str(tmp_path / "nowhere" / "r.html")],
                environ={})
    assert code == 2
    err = capsys.readouterr().err
    assert "the folder" in err and "does not exist" in err and "absent.yaml" not in err, err


def test_simulate_report_draws_a_row_per_replica(tmp_path: Path) -> None:
    path = tmp_path / "sim.html"
    assert main(["simulate", "--replicas", "4", "--request-time", "1", "--redeploy-time", "3", "-q",
                 "--report", str(path)], environ={}) == 0
    page = path.read_text()
    assert page.count("class=gantt-row") == 4 and "http://" not in page.replace("http://www.w3.org/2000/svg", "")


# -- the ETA ---------------------------------------------------------------------------------------


def _twelve_by_three_after_one_wave() -> list[dict[str, object]]:
    """report/eta.py's worked example: 12 targets, step 3; 3 settled (ack 1 s, up 10 s after their
    request); the next 3 requested at 10 s."""
    names = [f"web-{n}" for n in range(1, 13)]
    records: list[dict[str, object]] = [{"event": "plan", "t": 0.0, "targets": names, "batch": 3, "grace_s": 0.0,
                                         "order": "start-first"}]
    for name in names[:3]:
        records += [{"event": "request_sent", "t": 0.0, "replica": name, "restore": False},
                    {"event": "acknowledged", "t": 1.0, "replica": name},
                    {"event": "up", "t": 10.0, "replica": name}, {"event": "settled", "t": 10.0, "replica": name}]
    records += [{"event": "request_sent", "t": 10.0, "replica": name, "restore": False} for name in names[3:6]]
    return records


def test_the_eta_is_the_simulated_rest_minus_what_is_in_flight() -> None:
    records = _twelve_by_three_after_one_wave()
    assert remaining_s(records, now=14.0) == pytest.approx(20.0, abs=0.01)
    assert remaining_s(records[:1], now=0.5) is None  # nothing settled yet: nothing observed
    assert remaining_s([*records, {"event": "rollback", "t": 15.0, "replicas": []}], now=15.0) is None


# -- the balancer's view ---------------------------------------------------------------------------


def test_the_balancers_word_is_marked_on_its_row_and_drawn_as_a_lane_per_server() -> None:
    """HAProxy's view of a start-first replacement: the replacement admitted on web/spare1 at 1.4 s,
    the old replica drained on web/web1 from 1.5 s (2, then 0 sessions) and out at 1.6 s."""
    from rollover.core.gantt import balancer_lanes
    from rollover.report.html import render_report

    def view(server: str, state: str, sessions: int | None = None) -> dict[str, object]:
        found: dict[str, object] = {"balancer": "haproxy", "server": server, "state": state}
        return found if sessions is None else {**found, "sessions": sessions}

    records: list[dict[str, object]] = [
        {"event": "plan", "t": 0.0, "targets": ["web-1"], "order": "start-first"},
        {"event": "request_sent", "t": 0.1, "replica": "web-1", "restore": False, "refill": False},
        {"event": "acknowledged", "t": 0.3, "replica": "web-1", "replacement": "web-2", "replacement_id": "b",
         "health_checks_needed": 1},
        {"event": "up", "t": 1.3, "replica": "web-1", "grace_s": 0},
        {"event": "admitted", "t": 1.4, "replica": "web-1", "replacement": "web-2",
         "balancers": [view("web/spare1", "ready")]},
        {"event": "settled", "t": 1.4, "replica": "web-1", "reason": None},
        {"event": "draining", "t": 1.5, "replica": "web-1"},
        {"event": "draining", "t": 1.5, "replica": "web-1", "sessions": 2, "balancers": [view("web/web1", "drain", 2)]},
        {"event": "draining", "t": 1.55, "replica": "web-1", "sessions": 0,
         "balancers": [view("web/web1", "drain", 0)]},
        {"event": "drained", "t": 1.6, "replica": "web-1", "sessions_left": 0, "waited_s": 0.1,
         "balancers": [view("web/web1", "maint", 0)]},
        {"event": "retired", "t": 1.7, "replica": "web-1"},
        {"event": "summary", "t": 2.0, "duration_s": 2.0, "result": "completed"},
    ]
    rows, end = gantt_rows(records)
    [row] = rows
    assert [(mark.event, mark.at, mark.text()) for mark in row.balancer] == [
        ("admitted", 1.4, "haproxy web/spare1 ready"),
        ("draining", 1.5, "haproxy web/web1 drain, 2 open session(s)"),
        ("draining", 1.55, "haproxy web/web1 drain, 0 open session(s)"),
        ("drained", 1.6, "haproxy web/web1 maint, 0 open session(s)")]
    lanes = balancer_lanes(rows, end)
    assert [(lane.server, lane.segments) for lane in lanes] == [
        ("haproxy web/spare1", [("ready", 1.4, 2.0, [], "web-1")]),
        ("haproxy web/web1", [("ready", 0.0, 1.5, [], "web-1"), ("drain", 1.5, 1.6, [2, 0], "web-1"),
                              ("maint", 1.6, 2.0, [0], "web-1")])]
    page = render_report(records)
    assert page.count("class=balancer-lane") == 2 and "sessions 2 → 0" in page


def test_a_project_report_has_a_section_per_rolled_service_and_rollover_report_draws_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`rollover up --output json` saved, drawn again by `rollover report`: the project's services,
    then each rolled service (its own events, marked with its name) on an axis of its own."""
    simulated = _records(["--replicas", "2", "--request-time", "1", "--redeploy-time", "2"], capsys)
    api = [{**record, "service": "api"} for record in simulated]
    web = [{**record, "service": "web"} for record in simulated]
    services = [{"service": "api", "action": "roll", "why": "changed", "running": 2, "wanted": 2},
                {"service": "web", "action": "roll", "why": "changed", "running": 2, "wanted": 2},
                {"service": "db", "action": "untouched", "why": "unchanged", "running": 1, "wanted": 1}]
    done = [{"service": "api", "action": "roll", "result": "completed", "replaced": 2, "failed": 0,
             "duration_s": 3.0, "reason": None},
            {"service": "db", "action": "untouched", "result": "untouched", "replaced": 0, "failed": 0,
             "duration_s": 0.0, "reason": None}]
    records = [{"event": "project_plan", "t": 0.0, "project": "shop", "dry_run": False, "services": services},
               *api, {"event": "service_done", "t": 3.0, **done[0]}, *web,
               {"event": "project_summary", "t": 3.1, "project": "shop", "result": "completed", "exit_code": 0,
                "duration_s": 3.1, "services": done, "totals": {}}]
    saved = tmp_path / "up.jsonl"
    saved.write_text("".join(json.dumps(record) + "\n" for record in records))
    assert main(["report", str(saved), "-o", str(tmp_path / "up.html")], environ={}) == 0
    page = (tmp_path / "up.html").read_text()
    assert page.count("<section class=service") == 2 and "data-service='api'" in page
    assert page.count("class=gantt-row") == 4 and "<table id=services>" in page
    ids = re.findall(r"\bid=['\"]?([\w-]+)", page)
    assert len(ids) == len(set(ids)), ids  # one page, each id once (a chart per service is a class)
