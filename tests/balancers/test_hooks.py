"""CommandHooks runs real processes (never through a shell); BalancerChain fans calls out in order."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from rollover.balancers.base import DrainResult
from rollover.balancers.chain import BalancerChain
from rollover.balancers.hooks import CommandHooks, parse_hook
from rollover.core.model import Replica
from rollover.errors import InvalidOption, PlatformError

HOSTILE = Replica(
    id="0123456789abcdef" * 4,
    name="web;rm -rf {victim}",  # filled in per test: a shell would run the rm
    details=(
        ("ip.shop", "172.18.0.5"),
        ("ip.backoffice", "172.19.0.7"),
        ("published.8080/tcp", "127.0.0.1:32768"),
    ),
)

# Writes its arguments and the ROLLOVER_* environment to the file named by its first argument.
RECORDER = (
    "import json, os, sys; "
    "json.dump({'argv': sys.argv[2:], 'env': {k: v for k, v in os.environ.items() if k.startswith('ROLLOVER_')}},"
    " open(sys.argv[1], 'w'))"
)


def _hostile(tmp_path: Path) -> tuple[Replica, Path]:
    victim = tmp_path / "victim"
    victim.write_text("still here")
    return Replica(id=HOSTILE.id, name=HOSTILE.name.format(victim=victim), details=HOSTILE.details), victim


def test_post_start_gets_the_replica_in_its_environment_and_no_shell_ever_runs(
    loop: asyncio.AbstractEventLoop, tmp_path: Path
) -> None:
    replica, victim = _hostile(tmp_path)
    record = tmp_path / "record.json"
    hooks = CommandHooks(None, [sys.executable, "-c", RECORDER, str(record), "$HOME", "a;touch pwned", "`id`"])

    loop.run_until_complete(hooks.admit(replica))

    seen = json.loads(record.read_text())
    assert seen["argv"] == ["$HOME", "a;touch pwned", "`id`"]  # not expanded, not split, not run
    assert seen["env"] == {
        "ROLLOVER_HOOK": "post-start",
        "ROLLOVER_REPLICA_NAME": replica.name,
        "ROLLOVER_REPLICA_ID": replica.id,
        "ROLLOVER_REPLICA_ADDRESS": "172.18.0.5",
        "ROLLOVER_REPLICA_PORTS": "8080/tcp=127.0.0.1:32768",
    }
    assert victim.read_text() == "still here"
    assert not (tmp_path / "pwned").exists()


def test_a_shell_the_user_asks_for_still_sees_the_name_as_one_literal_value(
    loop: asyncio.AbstractEventLoop, tmp_path: Path
) -> None:
    replica, victim = _hostile(tmp_path)
    out = tmp_path / "name.txt"
    hooks = CommandHooks(["sh", "-c", f'printf %s "$ROLLOVER_REPLICA_NAME" > {out}'], None)

    result = loop.run_until_complete(hooks.drain(replica, timeout=5))

    assert out.read_text() == replica.name
    assert victim.read_text() == "still here"
    assert result.sessions_left == 0 and result.complete and 0 <= result.waited_s < 5


def test_a_replica_without_address_or_ports_gets_empty_values(loop: asyncio.AbstractEventLoop, tmp_path: Path) -> None:
    record = tmp_path / "record.json"
    hooks = CommandHooks([sys.executable, "-c", RECORDER, str(record)], None)

    loop.run_until_complete(hooks.drain(Replica(id="abc", name="bare"), timeout=1))

    env = json.loads(record.read_text())["env"]
    assert env["ROLLOVER_HOOK"] == "pre-stop"
    assert (env["ROLLOVER_REPLICA_ADDRESS"], env["ROLLOVER_REPLICA_PORTS"]) == ("", "")


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (["sh", "-c", "echo starting; echo first >&2; echo 'disk full' >&2; exit 3"],
         "post-start hook `sh -c 'echo starting; echo first >&2; echo '\"'\"'disk full'\"'\"' >&2; exit 3'` "
         "exited 3: disk full"),
        (["sh", "-c", "echo only stdout; exit 1"], "exited 1: only stdout"),
        (["sh", "-c", "kill -TERM $$"], "was killed by signal 15: no output"),
        (["/nonexistent/rollover-hook"], "could not start: No such file or directory"),
    ],
    ids=["exit-code-and-last-stderr-line", "stdout-when-stderr-is-silent", "killed", "not-found"],
)
def test_a_failing_hook_raises_with_what_went_wrong(
    loop: asyncio.AbstractEventLoop, command: list[str], message: str
) -> None:
    with pytest.raises(PlatformError) as failure:
        loop.run_until_complete(CommandHooks(None, command).admit(Replica(id="abc", name="web-1")))
    assert message in str(failure.value)


def test_a_hook_that_outlives_its_timeout_is_killed_with_its_children(
    loop: asyncio.AbstractEventLoop, tmp_path: Path
) -> None:
    child_pid = tmp_path / "child.pid"
    hooks = CommandHooks(["sh", "-c", f"sleep 60 & echo $! > {child_pid}; wait"], None, timeout_s=0.3)

    async def scenario() -> float:
        started = loop.time()
        with pytest.raises(PlatformError, match=r"pre-stop hook `sh -c .*` for web-1 timed out after 0.3s"):
            await hooks.drain(Replica(id="abc", name="web-1"), timeout=30)
        return loop.time() - started

    assert loop.run_until_complete(scenario()) < 5  # the 60 s sleep did not hold the pipes open
    assert not _alive(int(child_pid.read_text()))


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for init to reap it counts as gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def test_no_hooks_means_nothing_runs(loop: asyncio.AbstractEventLoop) -> None:
    hooks = CommandHooks(None, None)
    replica = Replica(id="abc", name="web-1")

    async def scenario() -> DrainResult:
        await hooks.attach([replica])
        await hooks.admit(replica)
        result = await hooks.drain(replica, timeout=1)
        await hooks.forget(replica)
        await hooks.close()
        return result

    assert loop.run_until_complete(scenario()).complete


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("curl -fsS http://lb/disable", ["curl", "-fsS", "http://lb/disable"]),
        ("sh -c 'echo \"$ROLLOVER_REPLICA_NAME\"; exit 0'", ["sh", "-c", 'echo "$ROLLOVER_REPLICA_NAME"; exit 0']),
        ("notify a\\ b", ["notify", "a b"]),
    ],
    ids=["plain", "quoted-shell", "escaped-space"],
)
def test_parse_hook_splits_like_a_shell_without_running_one(text: str, words: list[str]) -> None:
    assert parse_hook(text) == words


@pytest.mark.parametrize(
    "text", ["", "   ", "sh -c 'unclosed", "trailing\\"], ids=["empty", "blank", "quote", "escape"]
)
def test_parse_hook_refuses_what_cannot_be_a_command(text: str) -> None:
    with pytest.raises(InvalidOption, match="hook command"):
        parse_hook(text)


def test_command_hooks_refuse_an_empty_command_or_timeout() -> None:
    with pytest.raises(InvalidOption, match="pre-stop"):
        CommandHooks([], None)
    with pytest.raises(InvalidOption, match="timeout"):
        CommandHooks(None, ["true"], timeout_s=0)


class _Recording:
    """A balancer that records its calls into a shared journal and can be told to fail."""

    def __init__(self, name: str, journal: list[str], fail_on: Sequence[str] = (), sessions: int = 0) -> None:
        self.name, self.journal, self.fail_on, self.sessions = name, journal, fail_on, sessions

    def _note(self, call: str) -> None:
        self.journal.append(f"{self.name}.{call}")
        if call in self.fail_on:
            raise PlatformError(f"{self.name} refused {call}")

    async def attach(self, replicas: Sequence[Replica]) -> None:
        self._note("attach")

    async def admit(self, replica: Replica) -> None:
        self._note("admit")

    async def drain(self, replica: Replica, timeout: float) -> DrainResult:
        self._note(f"drain({timeout:.0f})")  # what the parts before it left, rounded
        return DrainResult(sessions_left=self.sessions, waited_s=0.0)

    async def forget(self, replica: Replica) -> None:
        self._note("forget")

    async def close(self) -> None:
        self._note("close")


def test_the_chain_calls_every_part_in_order(loop: asyncio.AbstractEventLoop) -> None:
    journal: list[str] = []
    chain = BalancerChain([_Recording("lb", journal, sessions=1), _Recording("hooks", journal, sessions=2)])
    replica = Replica(id="abc", name="web-1")

    async def scenario() -> DrainResult:
        await chain.attach([replica])
        await chain.admit(replica)
        result = await chain.drain(replica, timeout=5)
        await chain.forget(replica)
        await chain.close()
        return result

    result = loop.run_until_complete(scenario())
    assert journal == [
        "lb.attach", "hooks.attach", "lb.admit", "hooks.admit",
        "lb.drain(5)", "hooks.drain(5)", "lb.forget", "hooks.forget", "lb.close", "hooks.close",
    ]
    assert result.sessions_left == 3


def test_the_chain_stops_admitting_at_the_first_refusal_but_forgets_and_closes_everywhere(
    loop: asyncio.AbstractEventLoop,
) -> None:
    journal: list[str] = []
    chain = BalancerChain([
        _Recording("first", journal, fail_on=("admit", "forget", "close")),
        _Recording("second", journal, fail_on=("forget",)),
        _Recording("third", journal),
    ])
    replica = Replica(id="abc", name="web-1")

    async def scenario() -> None:
        with pytest.raises(PlatformError, match="first refused admit"):
            await chain.admit(replica)
        with pytest.raises(PlatformError, match="first refused forget"):  # the first error wins
            await chain.forget(replica)
        with pytest.raises(PlatformError, match="first refused close"):
            await chain.close()

    loop.run_until_complete(scenario())
    assert journal == [
        "first.admit",
        "first.forget", "second.forget", "third.forget",
        "first.close", "second.close", "third.close",
    ]


def test_the_chain_shares_the_drain_budget_and_hooks_chain_with_balancers(
    loop: asyncio.AbstractEventLoop, tmp_path: Path
) -> None:
    journal: list[str] = []
    marker = tmp_path / "pre-stop-ran"
    chain = BalancerChain([_Recording("lb", journal), CommandHooks(["touch", str(marker)], None)])

    result = loop.run_until_complete(chain.drain(Replica(id="abc", name="web-1"), timeout=2))

    assert journal == ["lb.drain(2)"] and marker.exists()
    assert result.complete and result.waited_s < 2
    assert os.environ.get("ROLLOVER_HOOK") is None  # the hook's environment never leaks into ours
