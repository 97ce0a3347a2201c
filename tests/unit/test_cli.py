"""The command line: flags, variables, the seed's aliases, output shapes, exit codes."""

from __future__ import annotations

import json

import pytest

from rollover.cli import main

SIM = ["simulate", "--replicas", "10", "--request-time", "1", "--redeploy-time", "10"]


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_simulate_prints_the_seed_chart(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, *SIM, "--step", "half", "--timeline", "-q")
    assert code == 0
    assert out.splitlines()[-1] == "|0 |25"
    assert out.splitlines()[-2] == "---------------_________|"


def test_json_output_is_one_object_per_line_with_the_summary_last(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, *SIM, "--step", "1", "--output", "json", "--timeline")
    records = [json.loads(line) for line in out.splitlines()]
    assert code == 0
    assert records[0]["event"] == "plan"
    assert {"request_sent", "acknowledged", "up", "settled"} <= {record["event"] for record in records}
    summary = records[-1]
    assert summary["event"] == "summary"
    assert (summary["replaced"], summary["failed"], summary["duration_s"], summary["result"]) == (
        10, 0, 100, "completed")
    assert summary["timeline"]["axis"] == "|0 |101"
    assert all(isinstance(record["t"], (int, float)) for record in records)


def test_a_failed_rollout_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, *SIM, "--fail-replica", "2", "--output", "json")
    assert code == 1
    summary = json.loads(out.splitlines()[-1])
    assert summary["result"] == "rolled-back" and summary["failed"] == 1


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--step", "0"], "step '0'"),
        (["--step", "150%"], "150%"),
        (["--grace", "soon"], "grace period 'soon'"),
        (["--timeout", "0"], "timeout"),
        (["--order", "sideways"], "'--order': 'sideways' is not one of 'auto', 'start-first', 'stop-first'"),
        (["--on-failure", "panic"], "'--on-failure': 'panic' is not one of 'rollback', 'pause', 'continue'"),
        (["--output", "yaml"], "'--output': 'yaml' is not one of 'text', 'json'"),
        (["--no-such-flag"], "--no-such-flag"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str], args: list[str], named: str) -> None:
    code, out, err = run(capsys, *SIM, *args)
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("error: InvalidOption:") and named in err


@pytest.mark.parametrize(
    "args",
    [
        ["web", "--step", "nope"],
        ["web", "--selector", "novalue"],
        ["web", "--selector", "=x"],
        ["web", "--image", "Not A Ref"],
        ["web", "--project", "p", "--selector", "a=b"],
        ["web", "--platform", "kubernetes"],
        ["web", "--nginx-master", "pidfile:/run/nginx.pid"],
        ["web", "--balancer", "nginx:/etc/nginx/web.conf"],
    ],
)
def test_redeploy_rejects_bad_input_before_reaching_any_engine(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    # An address nothing listens on: reaching for the engine would be a different error.
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    code, _, err = run(capsys, "redeploy", *args)
    assert code == 2
    assert err.startswith("error: InvalidOption:")


def test_variables_configure_and_flags_win(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROLLOVER_STEP", "all")
    _, out, _ = run(capsys, *SIM, "--output", "json")
    assert json.loads(out.splitlines()[-1])["duration_s"] == 10
    _, out, _ = run(capsys, *SIM, "--output", "json", "--step", "half")
    assert json.loads(out.splitlines()[-1])["duration_s"] == 24


def test_seed_variables_are_aliases_with_a_notice(capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ROLLOVER_STEP", raising=False)
    monkeypatch.delenv("ROLLOVER_GRACE_PERIOD", raising=False)
    monkeypatch.setenv("TUTUM_REDEPLOY_STEP", "service")
    monkeypatch.setenv("TUTUM_GRACE_PERIOD", "0")
    code, out, err = run(capsys, *SIM, "--output", "json")
    assert code == 0
    assert json.loads(out.splitlines()[-1])["duration_s"] == 10  # 'service' means all
    assert "notice: TUTUM_REDEPLOY_STEP is read as ROLLOVER_STEP" in err
    assert len([line for line in err.splitlines() if line.startswith("notice:")]) == 2


def test_an_invalid_seed_variable_is_named_too(capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ROLLOVER_STEP", raising=False)
    monkeypatch.setenv("TUTUM_REDEPLOY_STEP", "lots")
    code, _, err = run(capsys, *SIM)
    assert code == 2 and "step 'lots'" in err
