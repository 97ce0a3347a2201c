"""The commands that fit rollover into the docker CLI and the shell: ``plugin install|uninstall``
and ``completion bash|zsh|fish``, and the completion callbacks of ``redeploy``'s arguments."""

from __future__ import annotations

import os
import subprocess

import click
from click.shell_completion import CompletionItem, get_completion_class

from rollover.assembly import BALANCER_KINDS
from rollover.docker_cli import install as plugin_files

SHELLS = ("bash", "zsh", "fish")
COMPLETE_VARIABLE = "_ROLLOVER_COMPLETE"
# Completion must answer while the user waits at a prompt: a slow or absent engine gives nothing.
_COMPLETION_TIMEOUT_S = 5


@click.group("plugin")
def plugin_group() -> None:
    """Install rollover as a docker CLI plugin (`docker rollover ...`), or remove it."""


_scope = click.option("--user/--system", "user", default=True, show_default=True,
                      help="$DOCKER_CONFIG/cli-plugins (~/.docker/cli-plugins), or /usr/local/lib/docker/cli-plugins.")


@plugin_group.command("install")
@_scope
def plugin_install(user: bool) -> int:
    """Link docker-rollover into the docker CLI's plugin folder."""
    folder = plugin_files.plugin_dir(not user, os.environ)
    click.echo(plugin_files.install(folder, plugin_files.plugin_executable()))
    return 0


@plugin_group.command("uninstall")
@_scope
def plugin_uninstall(user: bool) -> int:
    """Remove the docker-rollover link (only a link to a docker-rollover script)."""
    click.echo(plugin_files.uninstall(plugin_files.plugin_dir(not user, os.environ)))
    return 0


@click.command("completion")
@click.argument("shell", type=click.Choice(SHELLS))
@click.pass_context
def completion(ctx: click.Context, shell: str) -> int:
    """Print the tab-completion script for SHELL.

    \b
    bash:  eval "$(rollover completion bash)"            (e.g. in ~/.bashrc)
    zsh:   eval "$(rollover completion zsh)"             (e.g. in ~/.zshrc)
    fish:  rollover completion fish > ~/.config/fish/completions/rollover.fish
    """
    root = ctx.find_root().command
    script_class = get_completion_class(shell)
    assert script_class is not None  # every name in SHELLS is one of click's
    click.echo(script_class(root, {}, "rollover", COMPLETE_VARIABLE).source())
    return 0


def complete_service(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """The services of the Compose project in this folder (what `docker compose config --services` lists)."""
    try:
        done = subprocess.run(["docker", "compose", "config", "--services"], capture_output=True, text=True,
                              timeout=_COMPLETION_TIMEOUT_S, check=False, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return []
    if done.returncode != 0:
        return []
    names = sorted({line.strip() for line in done.stdout.splitlines() if line.strip()})
    return [CompletionItem(name, help="Compose service") for name in names if name.startswith(incomplete)]


def complete_balancer(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """The balancer kinds, each with the shape of the rest: ``haproxy:`` -> SOCKET:BACKEND."""
    shapes = {"haproxy": "SOCKET:BACKEND", "traefik": "API_URL:SERVICE", "caddy": "ADMIN_URL:ROUTE_ID",
              "nginx": "UPSTREAM_FILE:UPSTREAM"}
    return [CompletionItem(f"{kind}:", help=f"{kind}:{shapes[kind]}") for kind in BALANCER_KINDS
            if f"{kind}:".startswith(incomplete)]


def complete_balancer_address(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    return [CompletionItem(value) for value in ("auto", "published", "network:") if value.startswith(incomplete)]
