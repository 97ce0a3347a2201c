"""The command line: flags and ROLLOVER_* variables -> a policy and a backend -> the controller.

Exit codes: 0 every target replaced and up; 1 the rollout failed (rolled back, paused, or
failures under 'continue'); 2 bad input or configuration, nothing touched; 3 locked by another
rollout; 130 interrupted. Errors print one line, ``error: Class: message``; -v adds the traceback.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import traceback
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import click

from rollover import __version__
from rollover.assembly import (
    BackendChoice,
    Platform,
    TrafficOptions,
    check_probe_url,
    make_backend,
    make_balancer,
    make_probe,
    parse_balancers,
    parse_hook,
    parse_nginx_master,
)
from rollover.backends.base import Backend
from rollover.backends.sim import SimBackend
from rollover.clock import run_virtual
from rollover.controller.loop import Controller, Reporter
from rollover.core.policy import (
    FailurePolicy,
    OrderChoice,
    Policy,
    parse_duration,
    parse_enum,
    parse_step,
)
from rollover.core.result import RolloutResult
from rollover.docker_cli import endpoint, plugin
from rollover.docker_cli.commands import (
    complete_balancer,
    complete_balancer_address,
    complete_service,
    completion,
    plugin_group,
)
from rollover.errors import InvalidOption, RolloverError
from rollover.report.html import Recorder, check_report_path, read_events, write_report
from rollover.report.output import JsonReporter, render_timeline
from rollover.report.outputs import Outputs, choose_outputs
from rollover.report.redact import Redactor, secret_values

if TYPE_CHECKING:
    from rollover.report.live import LiveReporter

# The seed script's variables, still honoured: (old name, new name).
TUTUM_ALIASES = (
    ("TUTUM_SERVICE", "ROLLOVER_SERVICE"),
    ("TUTUM_REDEPLOY_STEP", "ROLLOVER_STEP"),
    ("TUTUM_GRACE_PERIOD", "ROLLOVER_GRACE_PERIOD"),
)


def apply_seed_aliases(environ: MutableMapping[str, str], warn: Callable[[str], None]) -> list[str]:
    """Copy TUTUM_* into ROLLOVER_* where the new name is unset, with a one-line notice each;
    the names it set, so the caller can take them back."""
    added = []
    for old, new in TUTUM_ALIASES:
        if old in environ and new not in environ:
            environ[new] = environ[old]
            added.append(new)
            warn(f"notice: {old} is read as {new} (the seed script's name); prefer {new}")
    return added


_LABEL_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]*")
_IMAGE_REF = re.compile(
    r"(?:[a-zA-Z0-9.-]+(?::\d+)?/)?"  # registry host[:port]/
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"  # path
    r"(?::[\w][\w.-]{0,127})?"  # :tag
    r"(?:@sha256:[0-9a-f]{64})?"  # @digest
)


def parse_selector(values: Sequence[str]) -> dict[str, str]:
    """'app=web' (repeatable, or comma-separated in ROLLOVER_SELECTOR) -> {'app': 'web'}."""
    selector: dict[str, str] = {}
    for value in (part.strip() for raw in values for part in raw.split(",")):
        if not value:
            continue
        key, sep, label_value = value.partition("=")
        if not sep or not _LABEL_KEY.fullmatch(key) or not label_value or "\n" in label_value:
            raise InvalidOption(f"selector {value!r}: expected LABEL=VALUE")
        selector[key] = label_value
    return selector


def parse_node_hosts(text: str) -> dict[str, str]:
    """'rsw-n2=unix:///run/rsw-n2/docker.sock,rsw-n3=tcp://10.0.0.3:2376' -> {hostname: docker host}."""
    hosts: dict[str, str] = {}
    for part in (item.strip() for item in text.split(",")):
        if not part:
            continue
        node, sep, host = part.partition("=")
        if not sep or not node.strip() or "://" not in host:
            raise InvalidOption(f"swarm node {part!r}: expected NODE=DOCKER_HOST (e.g. n2=tcp://10.0.0.2:2376)")
        hosts[node.strip()] = host.strip()
    return hosts


def parse_image(reference: str | None) -> str | None:
    if reference is None:
        return None
    if not _IMAGE_REF.fullmatch(reference):
        raise InvalidOption(f"image {reference!r}: not a valid image reference (repo[:tag][@sha256:digest])")
    return reference


@dataclass(frozen=True)
class OutputChoice:
    json: bool
    timeline: bool
    quiet: bool
    verbose: int
    marks: tuple[float, ...] = ()
    report_file: str | None = None  # --report FILE.html
    live: bool = False  # a live view: stdout is a terminal, text output, not quiet (redeploy only)


def build_policy(step: str, grace: str, order: str, timeout: str | None, on_failure: str) -> Policy:
    return Policy(
        step=parse_step(step),
        grace_s=parse_duration(grace, "grace period"),
        order=parse_enum(OrderChoice, order, "order"),
        timeout_s=None if timeout is None else _positive(parse_duration(timeout, "timeout"), "timeout"),
        on_failure=parse_enum(FailurePolicy, on_failure, "on-failure"),
    )


def _positive(value: float, what: str) -> float:
    if value <= 0:
        raise InvalidOption(f"{what} must be more than 0 seconds")
    return value


def _redactor() -> Redactor:
    return Redactor(secret_values(os.environ))


def _reporter(choice: OutputChoice, flush: bool = True) -> Outputs:
    return choose_outputs(json=choice.json, quiet=choice.quiet, live=choice.live,
                          report=choice.report_file is not None, redactor=_redactor, flush=flush)


async def _run_controller(make_backend: Callable[[], Backend], policy: Policy, report: Reporter) -> RolloutResult:
    return await Controller(make_backend(), policy, report=report).run()


def _finish(result: RolloutResult, choice: OutputChoice, json_reporter: JsonReporter | None,
            recorder: Recorder | None = None) -> int:
    chart = render_timeline(result, choice.marks) if choice.timeline else None
    if recorder is not None and choice.report_file is not None:
        write_report(choice.report_file, recorder.records)
    if json_reporter is not None:
        json_reporter.finish(chart)
    elif chart is not None:
        click.echo(chart)
    return result.exit_code


_output_options: list[Callable[[Any], Any]] = [
    click.option("--output", "output", type=click.Choice(["text", "json"], case_sensitive=False), default="text",
                 envvar="ROLLOVER_OUTPUT", show_default=True,
                 help="text, or json: one JSON object per event per line, the summary last."),
    click.option("--timeline/--no-timeline", default=False, envvar="ROLLOVER_TIMELINE",
                 help="Draw the rollout in the seed's chart notation at the end."),
    click.option("-v", "--verbose", count=True, help="Tracebacks on errors."),
    click.option("-q", "--quiet", is_flag=True, envvar="ROLLOVER_QUIET", help="Only failures and the summary."),
]

_traffic_options: list[Callable[[Any], Any]] = [
    click.option("--balancer", "balancers", multiple=True, envvar="ROLLOVER_BALANCER", shell_complete=complete_balancer,
                 help="haproxy:SOCKET:BACKEND, traefik:API_URL:SERVICE, caddy:ADMIN_URL:ROUTE_ID or"
                 " nginx:UPSTREAM_FILE:UPSTREAM (repeatable)."),
    click.option("--nginx-master", default="pid:/run/nginx.pid", envvar="ROLLOVER_NGINX_MASTER", show_default=True,
                 help="The nginx an nginx balancer reloads: pid:PIDFILE or container:NAME."),
    click.option("--balancer-address", default="auto", envvar="ROLLOVER_BALANCER_ADDRESS", show_default=True,
                 shell_complete=complete_balancer_address,
                 help="How the balancer reaches a replica: auto, published, or network:NAME."),
    click.option("--balancer-port", type=int, default=None, envvar="ROLLOVER_BALANCER_PORT",
                 help="The container port the balancer sends to [default: learned from the balancer]."),
    click.option("--drain-timeout", default="30", envvar="ROLLOVER_DRAIN_TIMEOUT", show_default=True,
                 help="Seconds to wait for a draining replica's sessions to end."),
    click.option("--pre-stop", default=None, envvar="ROLLOVER_PRE_STOP",
                 help="Command run before a replica is stopped (no shell; replica in ROLLOVER_REPLICA_*)."),
    click.option("--post-start", default=None, envvar="ROLLOVER_POST_START",
                 help="Command run when a replacement is up, before it counts as up."),
    click.option("--probe", "probe_url", default=None, envvar="ROLLOVER_PROBE",
                 help="Send steady traffic to this URL during the rollout and report what it saw."),
    click.option("--probe-rate", type=float, default=50.0, envvar="ROLLOVER_PROBE_RATE", show_default=True,
                 help="Probe requests per second."),
    click.option("--max-probe-failures", type=int, default=None, envvar="ROLLOVER_MAX_PROBE_FAILURES",
                 help="Fail the rollout (exit 1) when the probe sees more failed requests [default: report only]."),
]

_rollout_options: list[Callable[[Any], Any]] = [
    click.option("--step", default="1", envvar="ROLLOVER_STEP", show_default=True,
                 help="Replicas in redeployment at once: N, N%, half, or all (one service-wide redeploy)."),
    click.option("--grace", default="0", envvar="ROLLOVER_GRACE_PERIOD", show_default=True,
                 help="Seconds a replacement must stay up before the next redeploy goes out."),
    click.option("--order", type=click.Choice(["auto", "start-first", "stop-first"], case_sensitive=False),
                 default="auto", envvar="ROLLOVER_ORDER", show_default=True,
                 help="start-first keeps full capacity; auto is start-first unless a fixed host port is published."),
    click.option("--timeout", default=None, envvar="ROLLOVER_TIMEOUT",
                 help="Seconds a replacement may take to come up [default: healthcheck budget + 10 s, else 60 s]."),
    click.option("--on-failure", type=click.Choice(["rollback", "pause", "continue"], case_sensitive=False),
                 default="rollback", envvar="ROLLOVER_ON_FAILURE", show_default=True,
                 help="What a failed replacement does to the rollout."),
]


# redeploy, simulate and up (a section per rolled service)
_report_option = click.option("--report", "report_file", default=None, envvar="ROLLOVER_REPORT",
                              help="Also write the rollout as a self-contained HTML report to this file.")


def _with(options: list[Callable[[Any], Any]]) -> Callable[[Any], Any]:
    def decorate(function: Any) -> Any:
        for option in reversed(options):
            function = option(function)
        return function
    return decorate


def _output_choice(output: str, timeline: bool, quiet: bool, verbose: int,
                   marks: tuple[float, ...] = (), report_file: str | None = None) -> OutputChoice:
    if output not in ("text", "json"):
        raise InvalidOption(f"output {output!r}: expected text or json")
    if report_file is not None:
        check_report_path(report_file)
    return OutputChoice(json=output == "json", timeline=timeline, quiet=quiet, verbose=verbose, marks=marks,
                        report_file=report_file)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rollover")
@click.option("-c", "--context", "docker_context", default=None,
              help="The docker context to use [default: DOCKER_HOST, else DOCKER_CONTEXT, else the current one].")
@click.option("-H", "--host", "docker_host", default=None,
              help="The engine's address: unix:///PATH, tcp://HOST:PORT, ssh://[USER@]HOST[:PORT].")
def cli(docker_context: str | None, docker_host: str | None) -> None:
    """Zero-downtime rolling redeploys of Docker Engine, Compose and Swarm services."""


cli.add_command(plugin_group)
cli.add_command(completion)


def _use_engine_endpoint() -> None:
    """Point DOCKER_HOST (and TLS) at the engine --context/-H/the variables choose, for the SDK and
    for every `docker compose` rollover runs (see docker_cli/endpoint.py)."""
    flags = click.get_current_context().find_root().params
    chosen = endpoint.resolve(flags.get("docker_context"), flags.get("docker_host"), os.environ)
    if chosen is not None:
        chosen.apply(os.environ)


@cli.command()
@click.argument("service", envvar="ROLLOVER_SERVICE", shell_complete=complete_service)
@click.option("--platform", type=click.Choice(["auto", "docker", "swarm", "podman"], case_sensitive=False),
              default="auto", envvar="ROLLOVER_PLATFORM", show_default=True,
              help="docker (Engine and Compose), swarm, podman (its Docker API; the engine must be Podman),"
                   " or auto: swarm when SERVICE is a swarm service here, Podman when the engine is.")
@click.option("--swarm-nodes", default=None, envvar="ROLLOVER_SWARM_NODES",
              help="NODE=DOCKER_HOST,... : each swarm node's own daemon (container events are per node).")
@click.option("--project", default=None, envvar="ROLLOVER_PROJECT",
              help="Compose project [default: the one `docker compose` would pick here].")
@click.option("--selector", multiple=True, envvar="ROLLOVER_SELECTOR",
              help="LABEL=VALUE: roll the containers carrying this label instead of a Compose service.")
@_with(_rollout_options)
@click.option("--image", default=None, envvar="ROLLOVER_IMAGE", help="Roll to this image instead of the defined one.")
@click.option("--pull/--no-pull", default=False, envvar="ROLLOVER_PULL", help="Pull the image before rolling.")
@click.option("--lock-wait", default="0", envvar="ROLLOVER_LOCK_WAIT", show_default=True,
              help="Wait this long for another live rollout of the service to end instead of exiting 3.")
@_with(_traffic_options)
@_with(_output_options)
@_report_option
def redeploy(service: str, platform: str, swarm_nodes: str | None, project: str | None, selector: tuple[str, ...],
             step: str, grace: str,
             order: str, timeout: str | None, on_failure: str, image: str | None, pull: bool, lock_wait: str,
             balancers: tuple[str, ...], balancer_address: str, balancer_port: int | None, drain_timeout: str,
             nginx_master: str, pre_stop: str | None, post_start: str | None, probe_url: str | None, probe_rate: float,
             max_probe_failures: int | None, output: str, timeline: bool, report_file: str | None, verbose: int,
             quiet: bool) -> int:
    """Replace every running replica of SERVICE, STEP at a time, with a fresh one."""
    choice = _output_choice(output, timeline, quiet, verbose, report_file=report_file)
    policy = build_policy(step, grace, order, timeout, on_failure)
    labels = parse_selector(selector)
    if labels and project:
        raise InvalidOption("--project and --selector exclude each other")
    reference = parse_image(image)
    lock_wait_s = parse_duration(lock_wait, "lock wait")
    traffic = TrafficOptions(
        balancers=parse_balancers(balancers), address_mode=balancer_address, port=balancer_port,
        drain_timeout_s=parse_duration(drain_timeout, "drain timeout"),
        pre_stop=parse_hook(pre_stop, "pre-stop hook"), post_start=parse_hook(post_start, "post-start hook"),
        probe_url=check_probe_url(probe_url), probe_rate=_positive(probe_rate, "probe rate"),
        max_probe_failures=_not_negative(max_probe_failures, "max probe failures"),
        nginx_master=parse_nginx_master(nginx_master),
    )
    target = BackendChoice(
        service=service, platform=parse_enum(Platform, platform, "platform"), project=project,
        selector=labels or None, image=reference, pull=pull, swarm_nodes=parse_node_hosts(swarm_nodes or ""),
        timeout_s=policy.timeout_s,
    )
    _use_engine_endpoint()
    outputs = _reporter(replace(choice, live=not choice.json and not choice.quiet and sys.stdout.isatty()))
    result = asyncio.run(_redeploy(target, policy, traffic, outputs.report, outputs.live,
                                      lock_wait_s))
    return _finish(result, choice, outputs.json, outputs.recorder)


def _not_negative(value: int | None, what: str) -> int | None:
    if value is not None and value < 0:
        raise InvalidOption(f"{what} {value}: must be 0 or more")
    return value


async def _redeploy(target: BackendChoice, policy: Policy, traffic: TrafficOptions,
                    report: Reporter, live: LiveReporter | None = None,
                    lock_wait_s: float = 0.0) -> RolloutResult:
    clock = asyncio.get_running_loop().time
    probe = make_probe(traffic, clock)
    controller = Controller(
        await make_backend(target, clock), policy, report=report, balancer=make_balancer(traffic, clock),
        drain_timeout_s=traffic.drain_timeout_s, probe=probe,
        max_probe_failures=traffic.max_probe_failures, lock_wait_s=lock_wait_s,
    )
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signal_number, controller.interrupt, signal.Signals(signal_number).name)
    ticking = None
    if live is not None:
        live.probe = probe.progress if probe is not None else None
        ticking = asyncio.create_task(live.ticking())
    try:
        return await controller.run()
    finally:
        if ticking is not None and live is not None:
            ticking.cancel()
            live.close()
        for signal_number in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signal_number)


@cli.command()
@click.option("--replicas", type=int, required=True, help="Replicas of the simulated service.")
@click.option("--request-time", required=True, help="Seconds until the platform acknowledges a request.")
@click.option("--redeploy-time", required=True, help="Seconds from a request until its replacement is up.")
@_with(_rollout_options)
@click.option("--fail-replica", type=int, multiple=True,
              help="1-based target whose replacement exits instead of coming up (repeatable).")
@click.option("--extra-at", multiple=True, help="A time at which an extra replica comes up (repeatable).")
@click.option("--mark", multiple=True, help="A reference tick on the timeline's axis, in seconds (repeatable).")
@_with(_output_options)
@_report_option
def simulate(replicas: int, request_time: str, redeploy_time: str, step: str, grace: str,
             order: str, timeout: str | None, on_failure: str, fail_replica: tuple[int, ...],
             extra_at: tuple[str, ...], mark: tuple[str, ...], output: str, timeline: bool, report_file: str | None,
             verbose: int, quiet: bool) -> int:
    """Predict a rollout on virtual time: the same controller, an in-memory platform."""
    marks = tuple(parse_duration(value, "mark") for value in mark)
    choice = _output_choice(output, timeline, quiet, verbose, marks, report_file)
    policy = build_policy(step, grace, order, timeout, on_failure)
    if replicas < 1:
        raise InvalidOption(f"replicas {replicas}: must be at least 1")
    request_s = parse_duration(request_time, "request time")
    redeploy_s = parse_duration(redeploy_time, "redeploy time")
    if redeploy_s < request_s:
        raise InvalidOption("redeploy time must be at least the request time (a replica is up after its ack)")
    extras = tuple(parse_duration(value, "extra-at") for value in extra_at)
    outputs = _reporter(choice, flush=False)  # virtual time: no line is worth a write of its own

    def make() -> Backend:
        return SimBackend(replicas, request_s, redeploy_s, fail_replicas=fail_replica, extra_at=extras)

    result = run_virtual(_run_controller(make, policy, outputs.report))
    return _finish(result, choice, outputs.json, outputs.recorder)


@cli.command("report")
@click.argument("events")
@click.option("-o", "--out", "html_file", required=True, help="The HTML file to write.")
def report_command(events: str, html_file: str) -> int:
    """Draw the HTML report of a saved `--output json` run (EVENTS: its JSON lines)."""
    check_report_path(html_file)
    write_report(html_file, read_events(events))
    return 0


@cli.command(context_settings={"ignore_unknown_options": False})
@click.argument("services", nargs=-1, shell_complete=complete_service)
@click.option("-f", "--file", "files", multiple=True, help="Compose file (repeatable), as for docker compose.")
@click.option("-p", "--project-name", default=None, help="Project name, as for docker compose.")
@click.option("--project-directory", default=None, help="Project directory, as for docker compose.")
@click.option("--env-file", "env_files", multiple=True, help="Environment file (repeatable), as for docker compose.")
@click.option("--profile", "profiles", multiple=True, help="Profile to enable (repeatable), as for docker compose.")
@click.option("--dry-run", is_flag=True, help="Print the plan and the predicted durations; touch nothing.")
@click.option("--force-recreate", is_flag=True, help="Roll unchanged services too.")
@click.option("--remove-orphans", is_flag=True, help="Remove the containers of services no longer in the file.")
@click.option("--no-deps", is_flag=True, help="Only the named services, not what they depend on.")
@click.option("--pull/--no-pull", default=False, envvar="ROLLOVER_PULL", help="Pull the images first.")
@_with([click.option(f"--{name}", default=None, envvar=f"ROLLOVER_{var}",
                     help=f"Every service's {name}, over the file's ({hint}).")
        for name, var, hint in (("step", "STEP", "update_config.parallelism"), ("grace", "GRACE_PERIOD",
                                "update_config.delay"), ("order", "ORDER", "update_config.order"),
                                ("timeout", "TIMEOUT", "x-rollover.timeout"),
                                ("on-failure", "ON_FAILURE", "update_config.failure_action"),
                                ("drain-timeout", "DRAIN_TIMEOUT", "x-rollover.drain_timeout"))])
@click.option("--max-probe-failures", type=int, default=None, envvar="ROLLOVER_MAX_PROBE_FAILURES",
              help="Every service's probe failure limit, over x-rollover.max_probe_failures.")
@_with(_output_options)
@_report_option
def up(services: tuple[str, ...], files: tuple[str, ...], project_name: str | None, project_directory: str | None,
       env_files: tuple[str, ...], profiles: tuple[str, ...], dry_run: bool, force_recreate: bool,
       remove_orphans: bool, no_deps: bool, pull: bool, output: str, timeline: bool, verbose: int, quiet: bool,
       report_file: str | None, **overrides: Any) -> int:
    """What `docker compose up -d` does, without downtime: every changed service rolled, in order."""
    from rollover.project.command import run_up

    _use_engine_endpoint()
    return run_up(services, files=files, project_name=project_name, project_directory=project_directory,
                  env_files=env_files, profiles=profiles, dry_run=dry_run, force_recreate=force_recreate,
                  remove_orphans=remove_orphans, no_deps=no_deps, pull=pull,
                  output=_output_choice(output, timeline, quiet, verbose, report_file=report_file), redact=_redactor(),
                  **overrides)


def _say_error(exc: BaseException, code_name: str, verbose: bool) -> None:
    redact = _redactor()
    text = exc.format_message() if isinstance(exc, click.ClickException) else str(exc)
    message = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    if verbose:
        click.echo(redact("".join(traceback.format_exception(exc))), err=True, nl=False)
    click.echo(redact(f"error: {code_name}: {message}"), err=True)


def main(argv: Sequence[str] | None = None, environ: MutableMapping[str, str] | None = None,
         prog_name: str = "rollover") -> int:
    """Entry point; returns the exit code (the console script exits with it)."""
    env: MutableMapping[str, str] = os.environ if environ is None else environ
    aliased = apply_seed_aliases(env, lambda line: click.echo(line, err=True))
    endpoint_before = {name: os.environ.get(name) for name in endpoint.ENDPOINT_VARIABLES}
    try:
        return _main(list(sys.argv[1:] if argv is None else argv), prog_name)
    finally:
        for name in aliased:  # click read them; leave the environment as it was given
            env.pop(name, None)
        for name, value in endpoint_before.items():  # and the engine endpoint too (main may run in-process)
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _main(args: list[str], prog_name: str) -> int:
    verbose = any(arg in ("-v", "--verbose") or re.fullmatch(r"-v+", arg) for arg in args)
    try:
        code = cli.main(args=args, prog_name=prog_name, standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("error: Interrupted: stopped by the user", err=True)
        return 130
    except click.ClickException as exc:
        _say_error(exc, "InvalidOption", verbose)
        return 2
    except RolloverError as exc:
        _say_error(exc, type(exc).__name__, verbose)
        return exc.exit_code
    except KeyboardInterrupt:
        click.echo("error: Interrupted: stopped by the user", err=True)
        return 130
    return code if isinstance(code, int) else 0


def run() -> None:
    sys.exit(main())


def run_plugin() -> None:
    """``docker-rollover``: the docker CLI plugin (docker_cli/plugin.py has the protocol)."""
    args = sys.argv[1:]
    if args[:1] == [plugin.METADATA_COMMAND]:
        click.echo(plugin.metadata())
        sys.exit(0)
    try:
        call = plugin.parse_plugin_argv(args)
    except RolloverError as exc:
        _say_error(exc, type(exc).__name__, verbose=False)
        sys.exit(exc.exit_code)
    if call.config:
        os.environ["DOCKER_CONFIG"] = call.config
    plugin.watch_cli_socket(os.environ)
    flags = [*(["--context", call.context] if call.context else []), *(["--host", call.host] if call.host else [])]
    sys.exit(main([*flags, *call.args], prog_name=f"docker {plugin.PLUGIN_NAME}"))

