"""Bad input, generated: every malformed flag or variable gives one line and exit 2, and the engine
is left exactly as it was (checked against a real running Compose service after every example)."""

from __future__ import annotations

import contextlib
import io
import string
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rollover.cli import main
from tests.support.engine import APP_V1, APP_V2, ComposeProject

pytestmark = pytest.mark.engine
EXAMPLES = 60
KNOWN_OPTIONS = {
    "platform", "project", "selector", "step", "grace", "order", "timeout", "on-failure", "image", "pull",
    "no-pull", "balancer", "balancer-address", "balancer-port", "drain-timeout", "pre-stop", "post-start", "probe",
    "probe-rate", "max-probe-failures", "output", "timeline", "no-timeline", "verbose", "quiet", "help",
}

words = st.text(string.ascii_letters, min_size=1, max_size=12)
bad_steps = st.one_of(
    st.integers(-1000, 0).map(str),
    st.integers(101, 10**6).map(lambda n: f"{n}%"),
    st.just("0%"),
    st.floats(0.01, 99.9).map(lambda f: f"{f:.2f}"),
    words.filter(lambda w: w.lower() not in {"half", "all", "service"}),
    st.just(""), st.just("  "), st.just("%"), st.just("5 %"),
)
bad_durations = st.one_of(
    st.integers(-10**6, -1).map(str),
    words.filter(lambda w: not w.isdigit()),
    st.sampled_from(["1x", "--5", "1.2.3", "5 s", "ms", "1m-3s", "nan", "inf", "1e3"]),
)
bad_selectors = st.one_of(words, st.just("=x"), st.just("app="), words.map(lambda w: f"{w} x=y"))
bad_images = st.one_of(
    words.filter(lambda w: w != w.lower()),  # repositories are lower case
    st.sampled_from(["has space:tag", "repo::tag", "repo:", ":tag", "-repo", "repo@sha256:xyz", "Repo/App"]),
)
bad_urls = st.one_of(words, st.sampled_from(["ftp://127.0.0.1/", "http://", "127.0.0.1:8080", "http//x"]))
unknown_options = words.map(str.lower).filter(lambda w: w not in KNOWN_OPTIONS).map(lambda w: f"--{w}-x")

CASES: dict[str, tuple[str, Any]] = {
    "step": ("--step", bad_steps),
    "grace": ("--grace", bad_durations),
    "timeout": ("--timeout", st.one_of(bad_durations, st.just("0"))),
    "drain-timeout": ("--drain-timeout", bad_durations),
    "selector": ("--selector", bad_selectors),
    "image": ("--image", bad_images),
    "probe": ("--probe", bad_urls),
    "order": ("--order", words.filter(lambda w: w.lower() not in {"auto"})),
    "on-failure": ("--on-failure", words.filter(lambda w: w.lower() not in {"pause", "continue", "rollback"})),
}


@pytest.fixture(scope="module")
def running_service(app_images: dict[str, str], tmp_path_factory: pytest.TempPathFactory,
                    docker_client: Any) -> Iterator[ComposeProject]:
    from tests.support.engine import unique_name

    project = ComposeProject(unique_name("badinput"), tmp_path_factory.mktemp("badinput"), docker_client)
    project.write(APP_V1, replicas=2)
    project.compose("up", "-d", "--wait", "--wait-timeout", "60")
    project.write(APP_V2, replicas=2)  # a rollout would have something to do: nothing may start one
    try:
        yield project
    finally:
        project.tear_down()


def engine_state(project: ComposeProject) -> list[tuple[str, str, str]]:
    """Every container whose name holds the project's (its replicas and a lock, if one were made)."""
    found = project.client.api.containers(all=True, filters={"name": project.name})
    return sorted((c["Id"], c["State"], c["ImageID"]) for c in found)


def run_cli(args: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(args)
    return code, out.getvalue(), err.getvalue()


def assert_rejected(project: ComposeProject, before: list[tuple[str, str, str]], args: list[str]) -> None:
    code, out, err = run_cli(args)
    assert code == 2, (args, out, err)
    lines = [line for line in err.splitlines() if not line.startswith("notice:")]
    assert len(lines) == 1 and lines[0].startswith("error: "), (args, err)
    assert engine_state(project) == before


@pytest.mark.parametrize("flag", sorted(CASES))
def test_malformed_flags(running_service: ComposeProject, flag: str) -> None:
    option, values = CASES[flag]
    before = engine_state(running_service)

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
    @given(value=values)
    def check(value: str) -> None:
        assert_rejected(running_service, before, ["redeploy", "web", "--project", running_service.name,
                                                  f"{option}={value}"])

    check()


# An empty variable counts as unset (click's rule, and the docker CLI's): it is not bad input.
ENV_CASES = {"ROLLOVER_STEP": bad_steps, "ROLLOVER_GRACE_PERIOD": bad_durations, "TUTUM_REDEPLOY_STEP": bad_steps,
             "ROLLOVER_TIMEOUT": bad_durations, "ROLLOVER_IMAGE": bad_images, "ROLLOVER_PROBE": bad_urls}


@pytest.mark.parametrize("variable", sorted(ENV_CASES))
def test_malformed_variables(running_service: ComposeProject, variable: str,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    before = engine_state(running_service)
    for name in ("ROLLOVER_STEP", "ROLLOVER_GRACE_PERIOD", "TUTUM_REDEPLOY_STEP", "TUTUM_GRACE_PERIOD"):
        monkeypatch.delenv(name, raising=False)

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
    @given(value=ENV_CASES[variable].filter(bool))
    def check(value: str) -> None:
        with monkeypatch.context() as env:
            env.setenv(variable, value)
            env.delenv("ROLLOVER_STEP" if variable == "TUTUM_REDEPLOY_STEP" else "_UNSET_", raising=False)
            assert_rejected(running_service, before, ["redeploy", "web", "--project", running_service.name])

    check()


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(option=unknown_options)
def test_unknown_options(running_service: ComposeProject, option: str) -> None:
    before = engine_state(running_service)
    assert_rejected(running_service, before, ["redeploy", "web", "--project", running_service.name, option])


@pytest.mark.parametrize(
    ("args", "environment", "says"),
    [
        (["--project", "{project}"], {"DOCKER_HOST": "unix:///nonexistent/docker.sock"},
         "cannot reach the Docker daemon"),
        (["--project", "{project}"], {"DOCKER_HOST": "tcp://127.0.0.1:1"}, "cannot reach the Docker daemon"),
        (["--project", "{project}"], {"DOCKER_HOST": "tcp://127.0.0.1:1", "DOCKER_TLS_VERIFY": "1",
                                      "DOCKER_CERT_PATH": "/nonexistent/certs"}, "EngineUnavailable"),
        (["--project", "rtest-docker-no-such-project"], {}, "no running replicas"),
        (["--selector", "rtest.no.such=label"], {}, "no running container matches"),
        (["--project", "{project}", "--image", "rollover-test/app:nope"], {}, "ImageNotFound"),
    ],
    ids=["missing-socket", "refused-tcp", "bad-tls", "unknown-project", "empty-selector", "missing-image"],
)
def test_unusable_targets_are_named_and_touch_nothing(
    running_service: ComposeProject, monkeypatch: pytest.MonkeyPatch, args: list[str],
    environment: dict[str, str], says: str,
) -> None:
    before = engine_state(running_service)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    resolved = [arg.format(project=running_service.name) for arg in args]
    code, _, err = run_cli(["redeploy", "web", *resolved])
    assert code == 2 and says in err, err
    assert len(err.strip().splitlines()) == 1
    for name in environment:
        monkeypatch.delenv(name)
    assert engine_state(running_service) == before
