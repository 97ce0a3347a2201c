"""The README's two pictures, made from real rollouts: the live view and the HTML report.

    .venv/bin/python -m bench.screenshots [--replicas 12] [--out docs/images]

live-view.png: a --replicas Compose rollout behind HAProxy with rollover's probe, on a 110x30 tmux
terminal, its screen taken (with colours) once a third of the replicas are replaced, drawn by rich
as SVG and photographed by headless Chromium. report.png: the --report page of a 4-replica rollout
whose second replacement's healthcheck fails (rolled back), in Chromium. Everything is named rrep-*
and removed at the end.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import tempfile
import time
from pathlib import Path

import docker
from rich.console import Console
from rich.text import Text

from tests.support.browser import CHROMIUM
from tests.support.see_a_rollout import Terminal, roll


def photograph(page: Path, png: Path, size: str) -> None:
    subprocess.run([CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", f"--window-size={size}",
                    f"--screenshot={png}", page.as_uri()], capture_output=True, check=True, timeout=120)


def live_screen(replicas: int) -> str:
    """The terminal's screen (ANSI colours kept) once a third of the targets are replaced."""
    shot: list[str] = []

    def run(command: list[str], cwd: Path) -> tuple[int, str, str]:
        terminal = Terminal(110, 30)
        try:
            terminal.start(command, cwd)
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline and not shot:
                screen = terminal.tmux("capture-pane", "-p", "-e")
                found = re.search(r"replaced (\d+)/", re.sub(r"\x1b\[[0-9;]*m", "", screen))
                if found and int(found.group(1)) >= replicas // 3 and "left" in screen:
                    shot.append(screen)
                time.sleep(0.2)
            while time.monotonic() < deadline and "rrep-exit=" not in terminal.screen():
                time.sleep(0.5)
        finally:
            terminal.close()
        return 0, "", ""

    with tempfile.TemporaryDirectory(prefix="rrep-shot-") as folder:
        rolled = roll(docker.from_env(), Path(folder) / "project", replicas, 999, "--step", "2", fronted=True,
                      run=run)
        rolled.project.tear_down()
    return shot[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicas", type=int, default=12)
    parser.add_argument("--out", type=Path, default=Path("docs/images"))
    options = parser.parse_args()
    options.out.mkdir(parents=True, exist_ok=True)
    console = Console(record=True, width=110, file=open("/dev/null", "w"))  # noqa: SIM115 - only recorded
    console.print(Text.from_ansi(live_screen(options.replicas).rstrip()))
    with tempfile.TemporaryDirectory(prefix="rrep-shot-") as folder:
        svg = Path(folder) / "live.svg"
        svg.write_text(console.export_svg(title="rollover redeploy web --step 2 --balancer ... --probe ..."))
        photograph(svg, options.out / "live-view.png", "1100,620")
        rolled = roll(docker.from_env(), Path(folder) / "project", 4, 1, "--output", "json", "--report",
                      str(Path(folder) / "report.html"), fronted=True)
        rolled.project.tear_down()
        photograph(Path(folder) / "report.html", options.out / "report.png", "1200,640")
    print(f"wrote {options.out / 'live-view.png'} and {options.out / 'report.png'}")


if __name__ == "__main__":
    main()
