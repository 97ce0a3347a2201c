"""Secrets given in the environment never reach the output, the JSON events or the errors."""

from __future__ import annotations

import json

import pytest

from rollover.cli import main
from rollover.report.redact import Redactor, secret_values


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("http://ci:hunter2@127.0.0.1:8080/x", "http://ci:***@127.0.0.1:8080/x"),
        ("tcp://admin:pw@host:2376 refused", "tcp://admin:***@host:2376 refused"),
        ("token abcd-1234 leaked twice: abcd-1234", "token *** leaked twice: ***"),
        ("nothing secret here", "nothing secret here"),
    ],
)
def test_redactor(text: str, expected: str) -> None:
    assert Redactor({"abcd-1234"})(text) == expected


def test_secret_values_come_from_variables_named_like_secrets() -> None:
    env = {"REGISTRY_PASSWORD": "hunter22", "API_TOKEN": "t0ken-value", "HOME": "/root", "GITHUB_AUTH": "x",
           "ROLLOVER_STEP": "half"}
    assert secret_values(env) == {"hunter22", "t0ken-value"}  # "x" is too short to mask everywhere


def test_a_secret_never_appears_in_errors_or_json(capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEPLOY_API_TOKEN", "sup3r-s3cret-t0ken")
    # A bad probe URL carrying the token and a password: the error names the value, masked.
    code = main(["redeploy", "web", "--probe", "ftp://bot:pa55word@127.0.0.1/?t=sup3r-s3cret-t0ken"])
    err = capsys.readouterr().err
    assert code == 2
    assert "sup3r-s3cret-t0ken" not in err and "pa55word" not in err
    assert "***" in err
    # The JSON stream of a (simulated) rollout run with the secret in its environment.
    code = main(["simulate", "--replicas", "2", "--request-time", "1", "--redeploy-time", "2", "--output", "json",
                 "-v"])
    out = capsys.readouterr().out
    assert code == 0 and "sup3r-s3cret-t0ken" not in out
    assert all(json.loads(line) for line in out.splitlines())
