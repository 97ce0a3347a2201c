"""The zero-downtime proof through nginx: rolling 6 real replicas under steady load, rollover steering
nginx by its upstream file and graceful reloads (``--balancer nginx:FILE:web``).

Each test starts ``web`` (6 replicas of app:v1 on random 127.0.0.1 ports; the project is named
``rngx-...``) and a real nginx (Debian's binary, its own prefix directory, pid file and free
loopback port) whose configuration includes the upstream file, one ``server`` per replica and
``proxy_next_upstream off`` (nginx hides no failure by retrying). rollover finds the master by
``ROLLOVER_NGINX_MASTER=pid:...`` (the variable of ``--nginx-master``).

The same proof as the other balancers': 0 failed requests (probe at 200/s and the independent
client), no 5xx in nginx's access log, only v2 answers once the last old replica was drained,
and the upstream holding exactly the v2 replicas at the end. The suite runs three cells of the
matrix (two on the host, ``NGINX_SUITE_MATRIX``, and stop-first step 2 through nginx in a
container); ``python -m bench.balancer_matrix nginx`` runs all six on the host
(``ROLLOVER_FULL_MATRIX=1``). Beside it: ``wrk`` with keep-alive connections through an
nginx that keeps connections to the replicas alive too (``keepalive 16``), nginx in a container
with the upstream file's directory on a bind mount, and the control: the same drain done by hooks
that only rewrite and reload (``nginx -s reload``'s way), without waiting for anything, loses
requests.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.engine import APP_BROKEN, APP_V1, APP_V2, loopback_endpoints, service_containers
from tests.support.faults import Rollover
from tests.support.fronts import wait_until
from tests.support.http_stubs import who_answers
from tests.support.local_nginx import NGINX, NginxContainer, NginxFront, nginx_image
from tests.support.zero_downtime import (
    RANDOM_LOOPBACK_PORT,
    REPLICAS,
    ROLLOVER,
    ZdProject,
    assert_no_request_lost,
    prove_rollout,
    redeploy_args,
    report,
    roll_under_load,
    roll_under_wrk,
    suite_cells,
    v2_replicas,
    wrk_running,
)

pytestmark = pytest.mark.engine

# The suite's three cells: two here, stop-first step 2 through nginx in a container below.
NGINX_SUITE_MATRIX = {"start-first-step-1", "start-first-step-half"}
CELLS = suite_cells(NGINX_SUITE_MATRIX)
HOOK = Path(__file__).resolve().parent.parent / "support" / "nginx_naive_hook.py"


def rngx_name(kind: str) -> str:
    return f"rngx-{kind}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def nginx_for(
    start_service: Callable[..., ZdProject], docker_client: Any, tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Callable[..., tuple[ZdProject, NginxFront]]]:
    """Factory: ``web`` and nginx in front of it (on the host, or ``container=True``)."""
    if not Path(NGINX).exists():
        pytest.fail("nginx is not installed: scripts/setup installs it (a skip would hide it in CI)")
    started: list[NginxFront] = []

    def launch(*, keepalive: bool = False, container: bool = False) -> tuple[ZdProject, NginxFront]:
        project = start_service(name=rngx_name("proj"), ports=[RANDOM_LOOPBACK_PORT])
        servers = loopback_endpoints(docker_client, project.name)
        assert len(servers) == REPLICAS, servers
        workdir = tmp_path_factory.mktemp("rngx-nginx")
        if container:
            image = nginx_image(docker_client, tmp_path_factory.mktemp("rngx-image"))
            front: NginxFront = NginxContainer(docker_client, image, rngx_name("nginx"), workdir, servers,
                                               keepalive=keepalive)
        else:
            front = NginxFront(workdir, servers, keepalive=keepalive)
        started.append(front)
        front.start()
        monkeypatch.setenv("ROLLOVER_NGINX_MASTER", front.master)
        return project, front

    try:
        yield launch
    finally:
        for front in started:
            front.stop()


@pytest.mark.parametrize(("order", "step"), CELLS)
def test_rollout_through_nginx_loses_no_request(
    order: str, step: str, nginx_for: Callable[..., tuple[ZdProject, NginxFront]], docker_client: Any,
    app_images: dict[str, str],
) -> None:
    project, front = nginx_for()
    prove_rollout(order, step, project, front, docker_client, app_images)


def race_slack(count: float) -> float:
    """How far a second count of the same race may lie above ``count`` by chance: 3 standard
    deviations of the difference of two counts of this size. Each reload loses a request on each
    of wrk's 8 connections that is idle at that moment, or not: a sum of yes-or-no draws, whose
    variance is at most its mean (as for a Poisson count), so the difference of two such counts
    has a variance of at most twice the mean. 16 bare-reload errors (a measured run):
    3 * sqrt(2 * 17) = 17.5, so rollover may see up to 33."""
    return 3 * math.sqrt(2 * (count + 1))


def test_wrk_keep_alive_through_nginx_loses_no_more_than_nginx_s_own_reloads(
    nginx_for: Callable[..., tuple[ZdProject, NginxFront]], docker_client: Any, app_images: dict[str, str],
) -> None:
    """wrk (keep-alive, closed loop, 8 connections) through nginx with ``keepalive 16`` upstream
    connections, for the whole start-first step-2 rollout (the probe runs too, at 50/s); then the
    control, in the same test through the same nginx: wrk again while only ``nginx -s reload`` is
    sent, as many times as the rollout reloaded, changing nothing.

    Every answer is a 200 and no request times out or fails to connect or write, in both. What
    wrk does count in both are read errors: at a reload, nginx 1.22's old workers close their
    idle keep-alive connections at once (``ngx_close_idle_connections``, and the keep-alive
    handler closes without reading what arrived), so a request a closed-loop client sent on one
    at that moment is lost; no directive changes that (docs/benchmarks.md, "Through nginx").
    rollover's share of it must be nginx's own: its read errors no more than the bare reloads'
    plus a slack for the randomness of the race (``race_slack``).
    """
    project, front = nginx_for(keepalive=True)
    args = redeploy_args(project, front, "--order", "start-first", "--step", "2", probe_rate=50)
    run, samples, output, figures = roll_under_wrk(project, args, front)
    report("nginx wrk start-first step 2", run, samples, front)
    reloads = front.reloads()
    with wrk_running(front.url) as control:
        front.bare_reloads(reloads)
    print(f"ZD nginx wrk: rollover {figures}, {reloads} reloads; bare reloads {control['figures']}")

    assert run.exit_code == 0, run.describe()
    front.assert_clean()
    for seen, text in ((figures, output), (control["figures"], control["output"])):
        assert seen["non_2xx"] == 0 and seen["connect_write_timeout_errors"] == 0, text
    bare = control["figures"]["read_errors"]
    assert figures["read_errors"] <= bare + race_slack(bare), (
        f"rollover {figures}, bare reloads {control['figures']}, {reloads} reloads")
    assert figures["rate"] >= 200, output
    assert run.probe["failed"] == 0, run.probe
    assert not [s for s in samples if not s.ok]
    assert len(v2_replicas(docker_client, project, app_images)) == REPLICAS
    assert front.routed() == loopback_endpoints(docker_client, project.name)


def test_nginx_in_a_container_with_the_file_on_a_bind_mount(
    nginx_for: Callable[..., tuple[ZdProject, NginxFront]], docker_client: Any, app_images: dict[str, str],
) -> None:
    """``--nginx-master container:NAME``: the reload through the Engine API, the generations from
    the container's process table, ``nginx -t`` by an exec; stop-first, step 2."""
    project, front = nginx_for(container=True)
    args = redeploy_args(project, front, "--order", "stop-first", "--step", "2")
    run, samples = asyncio.run(roll_under_load(project, args, front))
    report("nginx in a container, stop-first step 2", run, samples, front)
    assert_no_request_lost(run, samples, front, project, docker_client, app_images)


def test_control_rewrite_and_reload_without_waiting_loses_requests(
    nginx_for: Callable[..., tuple[ZdProject, NginxFront]], docker_client: Any, app_images: dict[str, str],
) -> None:
    """The same stop-first step-1 rollout, nginx steered by hooks instead (no ``--balancer``): the
    post-start hook adds the replacement's server and reloads, the pre-stop hook removes the
    outgoing one's and reloads, and neither waits for nginx (what a script around ``nginx -s
    reload`` does). The replica is stopped while nginx's workers still send to it: failures."""
    project, front = nginx_for()
    hook = f"{sys.executable} {HOOK} {front.upstream_file} {front.pid_file}"
    args = redeploy_args(project, front, "--order", "stop-first", "--step", "1", balancer=False)
    args += ["--pre-stop", hook, "--post-start", hook]
    run, samples = asyncio.run(roll_under_load(project, args, front))
    report("nginx control: rewrite and reload without waiting, stop-first step 1", run, samples, front)

    assert run.exit_code == 0, run.describe()  # the rollout itself succeeds, the hooks kept up...
    assert len(v2_replicas(docker_client, project, app_images)) == REPLICAS
    assert front.routed() == loopback_endpoints(docker_client, project.name)
    # ...but the clients pay for it: nginx itself answers 502 for requests it sent to stopped
    # replicas (the proof's own check, no 5xx in nginx's log, is what this shows can fail).
    assert sum(n for status, n in front.statuses().items() if status >= 500) > 0, front.describe()


def test_a_rollback_leaves_nginx_on_exactly_the_running_replicas(
    nginx_for: Callable[..., tuple[ZdProject, NginxFront]], docker_client: Any, app_images: dict[str, str],
) -> None:
    """Stop-first to an image whose healthcheck never passes: the first replica is drained and
    stopped, its replacement times out, the rollback restores it and nginx takes it back; no
    answer is a 5xx, and nginx ends on exactly the running (v1) replicas."""
    project, front = nginx_for()
    args = redeploy_args(project, front, "--order", "stop-first", "--step", "1", "--image", APP_BROKEN,
                         "--timeout", "8")
    run, samples = asyncio.run(roll_under_load(project, args, front))
    report("nginx rollback, stop-first step 1", run, samples, front)

    assert run.exit_code == 1, run.describe()
    assert run.summary["result"] == "rolled-back", run.summary
    containers = service_containers(docker_client, project.name)
    assert len(containers) == REPLICAS
    assert all(c.status == "running" and c.image.id == app_images[APP_V1] for c in containers)
    assert front.routed() == loopback_endpoints(docker_client, project.name)
    front.assert_clean()
    assert not [s for s in samples if not s.ok and s.answer != "timeout"], front.describe()


def test_attach_refuses_an_upstream_file_rollover_cannot_replace(
    nginx_for: Callable[..., tuple[ZdProject, NginxFront]], docker_client: Any,
) -> None:
    """The tests run as root, whom no permission bit stops: the two cases that stop root too. The
    upstream file's directory on a read-only bind mount (``unshare -m``: a mount namespace of
    rollover's own, as a ``:ro`` volume would be), then the file made immutable (``chattr +i``:
    nothing can be renamed over it). Each time: exit 2, one line naming the file, and nothing
    touched (the file, nginx's configuration, the containers, no lock left)."""
    project, front = nginx_for()
    project.write_version(APP_V2)
    args = [ROLLOVER, *redeploy_args(project, front, "--step", "2")]
    directory = front.upstream_file.parent
    before = (front.upstream_file.read_text(), sorted(c.id for c in service_containers(docker_client, project.name)))
    read_only = ["unshare", "-m", "--propagation", "private", "sh", "-c",
                 'mount --bind -o ro "$1" "$1" && shift && exec "$@"', "sh", str(directory), *args]
    refusals = [(_refusal(read_only), f"cannot create a file in {directory}: Read-only file system")]
    subprocess.run(["chattr", "+i", str(front.upstream_file)], check=True)
    try:
        refusals.append((_refusal(args), f"{front.upstream_file} is not writable"))
    finally:
        subprocess.run(["chattr", "-i", str(front.upstream_file)], check=True)

    for error, reason in refusals:
        assert error.startswith("error: BalancerUnavailable: ") and reason in error, error
    after = (front.upstream_file.read_text(), sorted(c.id for c in service_containers(docker_client, project.name)))
    assert after == before and front.reloads() == 0
    assert not docker_client.containers.list(all=True, filters={"name": f"rollover-lock-{project.name}-web"})


def _refusal(command: list[str]) -> str:
    """rollover's one line when it refuses with exit 2; before it, the JSON output holds the plan
    alone (nothing was done)."""
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    lines = done.stderr.strip().splitlines()
    events = [json.loads(line)["event"] for line in done.stdout.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1 and events == ["plan"], (done.returncode, done.stdout, done.stderr)
    return lines[0]


def test_after_sigkill_mid_drain_the_next_rollout_leaves_nginx_on_exactly_the_v2_replicas(
    nginx_for: Callable[..., tuple[ZdProject, NginxFront]], docker_client: Any, app_images: dict[str, str],
) -> None:
    """rollover (start-first, step 3) SIGKILLed while it drains its first old replica through nginx:
    the drain is held open by a client that sent half a request before the rollout (nginx's old
    worker keeps that connection until the request is complete), so the moment is sure. The next
    rollout takes the lock over and finishes; then nginx's upstream file holds exactly the running
    replicas, all v2, and nginx answers only v2, with no 5xx in its log over both runs. (Killed
    between writing the file and reloading, rollover left the file ahead of nginx: the next
    rollout stopped the drained replica while nginx still sent to it, 502s, until its drain
    reloaded first; test_nginx.py has that case alone.)"""
    project, front = nginx_for()
    project.write_version(APP_V2)
    initial = set(front.routed())
    args = ["--project", project.name, "--balancer", front.spec, "--balancer-address", front.balancer_address,
            "--probe", front.url, "--probe-rate", "50", "--step", "3", "--order", "start-first",
            "--drain-timeout", "60"]
    with socket.create_connection((front.host, front.port), timeout=10) as half_request:
        half_request.sendall(b"GET /version.txt HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # no blank line: not done
        killed = Rollover(args, project.directory, dict(os.environ))
        try:
            killed.wait_for("settled", deadline_s=90)  # the first replacement is in; its old replica drains
            wait_until(lambda: not initial <= set(front.routed()), 30, "the drain's reload")
            killed.kill()
        finally:
            killed.kill()
    died = [event["event"] for event in killed.drain()]
    assert "admitted" in died and "drained" not in died, died  # killed after an admission, mid-drain
    assert service_containers(docker_client, project.name), "the dead rollout left the service"

    outcome = Rollover(args, project.directory, dict(os.environ)).finish(deadline_s=150)
    assert outcome.returncode == 0, outcome.text()
    assert "is gone" in next(e for e in outcome.events if e["event"] == "took_over_lock")["reason"]
    assert len(v2_replicas(docker_client, project, app_images)) == REPLICAS
    assert front.routed() == loopback_endpoints(docker_client, project.name)
    assert asyncio.run(who_answers(front.url, 24)) == {"v2": 24}
    assert outcome.summary["probe"]["failed"] == 0, (died, outcome.text(), front.describe())
    front.assert_clean()
