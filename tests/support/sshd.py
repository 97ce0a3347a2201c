"""A real OpenSSH server on 127.0.0.1 (Debian's openssh-server), with a host key and a client key
made for the test, for ``ssh://`` engines: the remote end is this machine's own docker.

The client side is the system's ``ssh``, as the docker CLI and rollover use it. ssh reads its
config from the user's home of the password database, not from $HOME, so the test puts a one-line
``ssh`` wrapper first on PATH that adds ``-F <the test's config>``: the stand-in for a user's
~/.ssh/config (identity, known host key, port), which this test must not touch.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SSHD = "/usr/sbin/sshd"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


@dataclass
class Sshd:
    directory: Path
    port: int
    process: subprocess.Popen[bytes]

    @property
    def address(self) -> str:
        return f"ssh://root@127.0.0.1:{self.port}"

    def client_env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """The environment of a client that uses this server's key and known host key."""
        env = dict(os.environ if base is None else base)
        env["PATH"] = f"{self.directory / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
        return env

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()  # our own child, by its pid
            self.process.wait(timeout=30)


def start_sshd(directory: Path) -> Sshd:
    """sshd -D on a free loopback port: key login for root only, nothing else, its log in the folder."""
    directory.mkdir(parents=True, exist_ok=True)
    Path("/run/sshd").mkdir(exist_ok=True)  # privilege separation needs it; no init made it here
    keygen(directory / "host_key")
    keygen(directory / "client_key")
    (directory / "authorized_keys").write_text((directory / "client_key.pub").read_text())
    port = free_port()
    (directory / "sshd_config").write_text("\n".join([
        f"ListenAddress 127.0.0.1:{port}",
        f"HostKey {directory / 'host_key'}",
        f"AuthorizedKeysFile {directory / 'authorized_keys'}",
        f"PidFile {directory / 'sshd.pid'}",
        "PermitRootLogin prohibit-password", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
        "UsePAM no", "StrictModes no",  # the keys live under /tmp, which is world-writable
        "AllowTcpForwarding no", "X11Forwarding no", "",
    ]))
    host_key = (directory / "host_key.pub").read_text().split()
    (directory / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")
    (directory / "ssh_config").write_text("\n".join([
        "Host 127.0.0.1",
        f"  IdentityFile {directory / 'client_key'}", "  IdentitiesOnly yes",
        f"  UserKnownHostsFile {directory / 'known_hosts'}", "  StrictHostKeyChecking yes", "",
    ]))
    wrapper = directory / "bin" / "ssh"
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/sh\nexec /usr/bin/ssh -F {directory / "ssh_config"} "$@"\n')
    wrapper.chmod(0o755)
    log = (directory / "sshd.log").open("wb")
    process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(directory / "sshd_config")], stdout=log, stderr=log)
    server = Sshd(directory, port, process)
    _wait_listening(server)
    return server


def _wait_listening(server: Sshd, deadline_s: float = 30) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise AssertionError(f"sshd exited: {(server.directory / 'sshd.log').read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", server.port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)  # the port opens within milliseconds of the bind
    server.stop()
    raise AssertionError(f"sshd never listened: {(server.directory / 'sshd.log').read_text()}")
