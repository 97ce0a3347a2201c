"""A real nginx (Debian's package's binary) in front of a service, for the tests and bench/: its own
prefix directory, pid file and a free 127.0.0.1 port; the upstream file rollover owns in a
directory of its own (``upstreams/web.conf``), which the configuration includes.

``NginxFront`` fits the zero-downtime proof's ``Front``: it reaches the replicas at their
published loopback ports, and its access log (``$status $upstream_addr $request_time $msec``) is its own account of
what every client got. ``proxy_next_upstream off``: nginx must not hide a failed request by
trying it again on another replica.

In a container (``NginxContainer``): an image FROM scratch that holds Debian's nginx binary, the
libraries ``ldd`` lists and the few files nginx opens (its mime types, a passwd line for the
``nobody`` user), built once and kept by name (``rngx/nginx:<nginx version>``); the upstream
file's directory is a bind mount (a directory: rollover renames a new file into it, and a file
mount would keep showing the old one).
"""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import socket
import subprocess
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import docker.errors

from rollover.balancers.nginx_conf import PLACEHOLDER, parse_upstream_file
from tests.support.fronts import wait_until
from tests.support.http_stubs import closed_port

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
UPSTREAM = "web"

CONFIG = """\
worker_processes 2;
pid {pid};
error_log {prefix}/error.log info;
daemon off;
events {{ worker_connections 2048; }}
http {{
    log_format rollover '$status $upstream_addr $request_time $msec';
    access_log {prefix}/access.log rollover;
{front}    include {upstreams}/web.conf;
    server {{
        listen {listen};
        location / {{
            proxy_pass http://web;
            proxy_next_upstream off;
{keepalive_proxy}        }}
    }}
}}
"""


def nginx_config(prefix: str, pid: str, upstreams: str, listen: str, keepalive: bool,
                 front: Sequence[str] = ()) -> str:
    """``front``: more directives of the ``http`` block (e.g. ``keepalive_timeout 0;``)."""
    proxy = '            proxy_http_version 1.1;\n            proxy_set_header Connection "";\n' if keepalive else ""
    return CONFIG.format(prefix=prefix, pid=pid, upstreams=upstreams, listen=listen, keepalive_proxy=proxy,
                         front="".join(f"    {directive}\n" for directive in front))


def upstream_block(servers: Sequence[str], keepalive: bool) -> str:
    lines = (["keepalive 16;"] if keepalive else []) + [f"server {server};" for server in servers]
    return f"upstream {UPSTREAM} {{\n" + "".join(f"    {line}\n" for line in lines) + "}\n"


class NginxFront:
    """nginx on the host, in the foreground (``daemon off``): the process is the master."""

    balancer_address = "published"

    def __init__(self, workdir: Path, servers: Sequence[str], *, keepalive: bool = False,
                 front: Sequence[str] = ()) -> None:
        self.workdir = workdir
        self.front = tuple(front)
        self.host = "127.0.0.1"
        self.port = closed_port()
        self.servers = list(servers)
        self.keepalive = keepalive
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def upstream_file(self) -> Path:
        return self.workdir / "upstreams" / "web.conf"

    @property
    def pid_file(self) -> Path:
        return self.workdir / "nginx.pid"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/version.txt"

    @property
    def spec(self) -> str:
        return f"nginx:{self.upstream_file}:{UPSTREAM}"

    @property
    def master(self) -> str:
        return f"pid:{self.pid_file}"

    @property
    def access_log(self) -> Path:
        return self.workdir / "access.log"

    def write_files(self, prefix: str, pid: str, upstreams: str) -> Path:
        self.upstream_file.parent.mkdir(parents=True, exist_ok=True)
        self.upstream_file.write_text(upstream_block(self.servers, self.keepalive))
        config = self.workdir / "nginx.conf"
        config.write_text(nginx_config(prefix, pid, upstreams, f"{self.host}:{self.port}", self.keepalive,
                                       self.front))
        return config

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.write_files(str(self.workdir), str(self.pid_file), str(self.upstream_file.parent))
        with (self.workdir / "stderr.log").open("wb") as sink:
            self.process = subprocess.Popen([NGINX, "-c", str(config), "-p", f"{self.workdir}/"],
                                            stdout=sink, stderr=subprocess.STDOUT)
        wait_until(self._answering, 15, f"nginx to answer at {self.url}")

    def _answering(self) -> bool:
        assert self.process is not None and self.process.poll() is None, self.error_log()[-3000:]
        with contextlib.suppress(OSError):
            return self.pid_file.exists() and self.access_log.exists() and _get_ok(self.host, self.port)
        return False

    def error_log(self) -> str:
        path = self.workdir / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def routed(self) -> list[str]:
        """The servers of the upstream nginx runs, sorted (the file is what the last reload read)."""
        parsed = parse_upstream_file(self.upstream_file.read_text(), UPSTREAM)
        return sorted(s.address for s in parsed.servers if s.line() != PLACEHOLDER)

    def log_lines(self) -> list[list[str]]:
        text = self.access_log.read_text(errors="replace") if self.access_log.exists() else ""
        return [line.split() for line in text.splitlines() if line.strip()]

    def statuses(self) -> Counter[int]:
        return Counter(int(fields[0]) for fields in self.log_lines() if fields[0].isdigit())

    def describe(self) -> str:
        bad = [" ".join(fields) for fields in self.log_lines() if fields[0] != "200"]
        return f"nginx access log: statuses {dict(self.statuses())}; not 200: {bad[:20]}"

    def assert_clean(self) -> None:
        statuses = self.statuses()
        assert statuses and not any(status >= 500 for status in statuses), self.describe()

    def answered(self) -> int:
        """Requests in the access log so far (a line each; cheap enough to poll)."""
        return self.access_log.read_bytes().count(b"\n") if self.access_log.exists() else 0

    def reloads(self) -> int:
        """How many reloads the master was told to do (its error log notes each SIGHUP)."""
        return self.error_log().count("(SIGHUP) received")

    def bare_reloads(self, count: int, answered_between: int = 200) -> None:
        """``nginx -s reload`` ``count`` times, changing nothing: the control of what nginx's reload
        alone costs its clients. Each reload waits until the one before it is over (its old
        workers have exited, as a rollover drain waits for them) and ``answered_between`` more
        requests were answered (the clients are back to steady state)."""
        for _ in range(count):
            self._bare_reload(answered_between)

    def _bare_reload(self, answered_between: int) -> None:
        previous, done, answered = set(self.workers()), self.reloads(), self.answered()
        subprocess.run([NGINX, "-c", str(self.workdir / "nginx.conf"), "-p", f"{self.workdir}/", "-s", "reload"],
                       check=True, capture_output=True)
        wait_until(lambda: self.reloads() > done and not previous & set(self.workers()), 30,
                   "nginx's old workers to exit after a reload")
        wait_until(lambda: self.answered() >= answered + answered_between, 30,
                   f"{answered_between} requests answered after a reload")

    def workers(self) -> list[int]:
        assert self.process is not None
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(self.process.pid)], capture_output=True,
                             text=True, check=False).stdout
        return [int(word) for word in out.split()]

    def stop(self) -> None:
        """TERM: the master stops its workers, then itself (KILL after 10 s)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def _get_ok(host: str, port: int) -> bool:
    """nginx accepts connections (what answers behind it may be a stub on the test's own loop)."""
    with socket.create_connection((host, port), timeout=1):
        return True


# --- nginx in a container ---------------------------------------------------------------------------

IMAGE_FILES = ("/etc/nginx/mime.types",)


def nginx_version() -> str:
    output = subprocess.run([NGINX, "-v"], capture_output=True, text=True, check=True).stderr
    match = re.search(r"nginx/([\w.]+)", output)
    assert match, output
    return match.group(1)


def nginx_image(client: Any, context: Path, prefix: str = "rngx") -> str:
    """``<prefix>/nginx:<version>`` FROM scratch: Debian's nginx binary and what it loads; built once."""
    tag = f"{prefix}/nginx:{nginx_version()}"
    with contextlib.suppress(docker.errors.ImageNotFound):
        client.images.get(tag)
        return tag
    root = context / "root"
    libraries = re.findall(r"(/\S+\.so[.\d]*)", subprocess.run(["ldd", NGINX], capture_output=True, text=True,
                                                               check=True).stdout)
    for source in [NGINX, *libraries, *IMAGE_FILES]:
        target = root / source.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(Path(source).resolve(), target)
    (root / "etc" / "passwd").write_text("root:x:0:0::/:/bin/false\nnobody:x:65534:65534::/:/bin/false\n")
    (root / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
    for directory in ("tmp", "var/log/nginx", "var/lib/nginx", "run", "srv"):  # Debian builds its temp paths in
        (root / directory).mkdir(parents=True, exist_ok=True)
    (context / "Dockerfile").write_text(
        "FROM scratch\nCOPY root/ /\nSTOPSIGNAL SIGQUIT\n"
        'ENTRYPOINT ["/usr/sbin/nginx", "-c", "/srv/nginx.conf", "-p", "/srv/"]\n'
    )
    subprocess.run(["docker", "build", "-q", "-t", tag, str(context)], check=True, capture_output=True,
                   env={"DOCKER_BUILDKIT": "0", "PATH": "/usr/local/bin:/usr/bin:/bin"})
    return tag


class NginxContainer(NginxFront):
    """The same nginx, in a container on the host's network (it reaches the published loopback
    ports); its /srv is the front's work directory, a bind mount, and the upstream file lives in
    /srv/upstreams."""

    def __init__(self, client: Any, image: str, name: str, workdir: Path, servers: Sequence[str], *,
                 keepalive: bool = False) -> None:
        super().__init__(workdir, servers, keepalive=keepalive)
        self.client = client
        self.image = image
        self.name = name

    @property
    def master(self) -> str:
        return f"container:{self.name}"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.write_files("/srv", "/srv/nginx.pid", "/srv/upstreams")
        self.client.containers.run(self.image, name=self.name, detach=True, network_mode="host",
                                   volumes={str(self.workdir): {"bind": "/srv", "mode": "rw"}})
        wait_until(self._answering, 15, f"nginx in {self.name} to answer at {self.url}")

    def _answering(self) -> bool:
        container = self.client.containers.get(self.name)
        assert container.status in ("created", "running"), container.logs()[-3000:]
        with contextlib.suppress(OSError):
            return self.access_log.exists() and _get_ok(self.host, self.port)
        return False

    def workers(self) -> list[int]:
        top = self.client.api.top(self.name)
        titles = top["Titles"]
        return [int(row[titles.index("PID")]) for row in top["Processes"]
                if "worker process" in row[titles.index("CMD")]]

    def stop(self) -> None:
        with contextlib.suppress(docker.errors.NotFound):
            self.client.api.remove_container(self.name, force=True)
