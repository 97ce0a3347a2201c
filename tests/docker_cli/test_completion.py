"""Tab completion as a shell asks for it (click's protocol: the script `rollover completion SHELL`
prints calls `rollover` with _ROLLOVER_COMPLETE set), and bash running the script itself: the
options with a fixed set of values list it, SERVICE lists the Compose project's services."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.support.faults import ROLLOVER


def _complete(words: str, cwd: Path | None = None) -> list[str]:
    """What bash would be offered after ``words`` (the last word is the one being completed)."""
    parts = words.split(" ")
    env = {**os.environ, "_ROLLOVER_COMPLETE": "bash_complete", "COMP_WORDS": words, "COMP_CWORD": str(len(parts) - 1)}
    done = subprocess.run([ROLLOVER], env=env, cwd=cwd, capture_output=True, text=True, check=True, timeout=60)
    return [line.split(",", 1)[1] for line in done.stdout.splitlines() if "," in line]


@pytest.mark.parametrize(
    ("words", "offered"),
    [
        ("rollover redeploy web --order ", ["auto", "start-first", "stop-first"]),
        ("rollover redeploy web --on-failure ", ["rollback", "pause", "continue"]),
        ("rollover redeploy web --output ", ["text", "json"]),
        ("rollover redeploy web --platform s", ["swarm"]),
        ("rollover redeploy web --balancer ", ["haproxy:", "traefik:", "caddy:", "nginx:"]),
        ("rollover redeploy web --balancer-address ", ["auto", "published", "network:"]),
        ("rollover completion ", ["bash", "zsh", "fish"]),
        ("rollover plugin ", ["install", "uninstall"]),
    ],
    ids=["order", "on-failure", "output", "platform-prefix", "balancer-kinds", "balancer-address", "shells",
         "plugin"],
)
def test_fixed_values_are_offered(words: str, offered: list[str]) -> None:
    assert _complete(words) == offered


def test_service_names_come_from_the_compose_project_here(tmp_path: Path) -> None:
    (tmp_path / "compose.yaml").write_text(
        "name: rplug-complete\nservices:\n  web: {image: x}\n  worker: {image: x}\n  db: {image: x}\n")
    assert _complete("rollover redeploy ", cwd=tmp_path) == ["db", "web", "worker"]
    assert _complete("rollover redeploy w", cwd=tmp_path) == ["web", "worker"]
    assert _complete("rollover redeploy ", cwd=tmp_path / ".." / "..") == [], "no project: nothing, no error"


def test_help_lists_the_choices() -> None:
    done = subprocess.run([ROLLOVER, "redeploy", "--help"], capture_output=True, text=True, check=True)
    flat = " ".join(done.stdout.split())
    assert "[auto|start-first|stop-first]" in flat and "[rollback|pause|continue]" in flat


def test_bash_runs_the_script_and_completes(tmp_path: Path) -> None:
    (tmp_path / "compose.yaml").write_text("name: rplug-complete\nservices:\n  api: {image: x}\n")
    script = (
        f'eval "$({ROLLOVER} completion bash)"; '
        f"PATH={Path(ROLLOVER).parent}:$PATH; "
        'COMP_WORDS=(rollover redeploy a); COMP_CWORD=2; _rollover_completion rollover; echo "${COMPREPLY[@]}"; '
        "COMPREPLY=(); COMP_WORDS=(rollover redeploy api --order s); COMP_CWORD=4; "
        '_rollover_completion rollover; echo "${COMPREPLY[@]}"'
    )
    done = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert done.stdout.splitlines() == ["api", "start-first stop-first"]


@pytest.mark.parametrize(("shell", "marker"), [("zsh", "#compdef rollover"), ("fish", "complete --no-files")])
def test_zsh_and_fish_scripts(shell: str, marker: str) -> None:
    done = subprocess.run([ROLLOVER, "completion", shell], capture_output=True, text=True, check=True)
    assert marker in done.stdout and "_ROLLOVER_COMPLETE" in done.stdout
