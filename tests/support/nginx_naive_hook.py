"""The control's hook: what a script around ``nginx -s reload`` does, and nothing more.

    nginx_naive_hook.py UPSTREAM_FILE PID_FILE     (as rollover's --post-start and --pre-stop)

post-start adds ``server 127.0.0.1:PORT;`` (the replica's published port, from
ROLLOVER_REPLICA_PORTS) to the upstream, pre-stop takes it out; then SIGHUP to the master, and
exit at once: nothing waits for the new workers, nor for the old ones to finish their requests.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path


def main(upstream_file: str, pid_file: str) -> None:
    port = os.environ["ROLLOVER_REPLICA_PORTS"].split()[0].rsplit(":", 1)[1]
    line = f"    server 127.0.0.1:{port};\n"
    path = Path(upstream_file)
    lines = [text for text in path.read_text().splitlines(keepends=True) if text != line]
    if os.environ["ROLLOVER_HOOK"] == "post-start":
        lines.insert(len(lines) - 1, line)  # before the block's closing brace
    path.write_text("".join(lines))
    os.kill(int(Path(pid_file).read_text()), signal.SIGHUP)


if __name__ == "__main__":
    main(*sys.argv[1:3])
