"""What the docker CLI hands its plugin (docker_cli/plugin.py) and how the engine is chosen from
flags and variables (docker_cli/endpoint.py): table tests, no engine."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from rollover.docker_cli.endpoint import Endpoint, resolve
from rollover.docker_cli.plugin import metadata, parse_plugin_argv
from rollover.errors import InvalidOption


@pytest.mark.parametrize(
    ("argv", "context", "host", "args"),
    [
        (["rollover", "redeploy", "web"], None, None, ["redeploy", "web"]),
        (["--context", "prod", "rollover", "up"], "prod", None, ["up"]),
        (["-c=prod", "--debug", "rollover", "redeploy", "web"], "prod", None, ["redeploy", "web"]),
        (["-H", "ssh://deploy@db1", "--log-level", "warn", "rollover", "-h"], None, "ssh://deploy@db1", ["-h"]),
        (["--tls", "--tlscacert", "ca.pem", "rollover", "redeploy", "rollover"], None, None,
         ["redeploy", "rollover"]),  # a service called rollover is the plugin's argument, not its name
    ],
    ids=["bare", "context", "context-equals", "host", "tls-flags"],
)
def test_the_global_flags_before_the_plugin_name_are_read(
    argv: list[str], context: str | None, host: str | None, args: list[str]
) -> None:
    call = parse_plugin_argv(argv)
    assert (call.context, call.host, call.args) == (context, host, args)


@pytest.mark.parametrize("argv", [[], ["redeploy", "web"], ["--context"]], ids=["empty", "no-plugin-name", "no-value"])
def test_a_call_not_from_the_docker_cli_is_bad_input(argv: list[str]) -> None:
    with pytest.raises(InvalidOption):
        parse_plugin_argv(argv)


def test_metadata_has_what_the_cli_requires() -> None:
    data = json.loads(metadata())
    assert data["SchemaVersion"] == "0.1.0" and data["Vendor"]
    assert data["Version"] and data["ShortDescription"]


def _store(root: Path, name: str, host: str, *, tls: bool = False, skip_verify: bool = False) -> None:
    digest = hashlib.sha256(name.encode()).hexdigest()
    meta = root / "contexts" / "meta" / digest
    meta.mkdir(parents=True)
    (meta / "meta.json").write_text(json.dumps(
        {"Name": name, "Metadata": {}, "Endpoints": {"docker": {"Host": host, "SkipTLSVerify": skip_verify}}}))
    if tls:
        material = root / "contexts" / "tls" / digest / "docker"
        material.mkdir(parents=True)
        for file in ("ca.pem", "cert.pem", "key.pem"):
            (material / file).write_text("-")


def test_the_docker_cli_order_decides(tmp_path: Path) -> None:
    _store(tmp_path, "prod", "tcp://10.0.0.5:2376", tls=True)
    _store(tmp_path, "ssh1", "ssh://deploy@db1")
    base = {"DOCKER_CONFIG": str(tmp_path)}
    tls_dir = str(tmp_path / "contexts" / "tls" / hashlib.sha256(b"prod").hexdigest() / "docker")
    prod = Endpoint("tcp://10.0.0.5:2376", context="prod", cert_path=tls_dir, tls_verify=True)
    # --context beats everything; -H next; DOCKER_HOST beats DOCKER_CONTEXT; then the current context.
    assert resolve("prod", None, {**base, "DOCKER_HOST": "unix:///x.sock"}) == prod
    assert resolve(None, "ssh://a@b", {**base, "DOCKER_CONTEXT": "prod"}) == Endpoint("ssh://a@b")
    assert resolve(None, None, {**base, "DOCKER_HOST": "unix:///x.sock", "DOCKER_CONTEXT": "prod"}) is None
    assert resolve(None, None, {**base, "DOCKER_CONTEXT": "ssh1"}) == Endpoint("ssh://deploy@db1", context="ssh1")
    (tmp_path / "config.json").write_text(json.dumps({"currentContext": "prod"}))
    assert resolve(None, None, base) == prod
    assert resolve("default", None, base) is None


def test_a_context_s_endpoint_reaches_the_environment(tmp_path: Path) -> None:
    environ = {"DOCKER_CONTEXT": "prod", "DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": "/old"}
    Endpoint("ssh://deploy@db1", context="ssh1").apply(environ)
    assert environ == {"DOCKER_HOST": "ssh://deploy@db1"}  # no TLS for ssh; the context is resolved
    environ = {"DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": "/mine"}
    Endpoint("tcp://h:2376").apply(environ)  # -H keeps the TLS variables the user set
    assert environ == {"DOCKER_HOST": "tcp://h:2376", "DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": "/mine"}


@pytest.mark.parametrize(
    ("context", "host", "environ", "named"),
    [
        ("nosuch", None, {}, "docker context 'nosuch' not found"),
        ("prod", "tcp://h:1", {}, "either --host or --context"),
        (None, "http://h", {}, "--host 'http://h'"),
        (None, None, {"DOCKER_HOST": "ftp://x"}, "DOCKER_HOST 'ftp://x'"),
    ],
    ids=["unknown-context", "both", "bad-host", "bad-variable"],
)
def test_bad_endpoints_are_bad_input(tmp_path: Path, context: str | None, host: str | None,
                                     environ: dict[str, str], named: str) -> None:
    with pytest.raises(InvalidOption, match=named.replace("(", r"\(")):
        resolve(context, host, {"DOCKER_CONFIG": str(tmp_path), **environ})
