"""Benchmark: how ``rollover simulate`` scales with the number of replicas.

    .venv/bin/python -m bench.simulate_scale [--runs 3]

Runs ``rollover simulate --replicas N --request-time 1 --redeploy-time 10 --step 5% -q`` for
N = 1,000 and 10,000 (and 10,000 printing every text line, the issue's own command), each in
its own process, ``--runs`` times alternately, and reports the best
wall and CPU time of each (the best, because this machine is shared: the others measure the load).
The controls, measured in the same run: a process that only imports rollover's CLI (the fixed
cost of starting), and the 1,000-replica row as the unit. The ratio is (10,000 - start) /
(1,000 - start): 10 means linear, 100 quadratic (the simulator before its state was indexed).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

PYTHON = Path(__file__).resolve().parent.parent / ".venv" / "bin" / "python"
SIMULATE = ["-c", "from rollover.cli import main; main()", "simulate", "--request-time", "1",
            "--redeploy-time", "10", "--step", "5%", "-q", "--replicas"]
START_ONLY = ["-c", "import rollover.cli"]


def timed(args: list[str]) -> tuple[float, float]:
    """(wall, CPU) seconds of one process running ``python args``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run([str(PYTHON), *args], check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    runs = parser.parse_args().runs
    rows = {"start only": START_ONLY, "1,000 replicas": [*SIMULATE, "1000"], "10,000 replicas": [*SIMULATE, "10000"],
            # The issue's own command: every event printed as a text line (to /dev/null here).
            "10,000, text": [arg for arg in SIMULATE if arg != "-q"] + ["10000"]}
    best: dict[str, tuple[float, float]] = {}
    for _ in range(runs):
        for label, args in rows.items():
            wall, cpu = timed(args)
            old = best.get(label, (float("inf"), float("inf")))
            best[label] = (min(old[0], wall), min(old[1], cpu))
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; best of {runs} runs")
    for label, (wall, cpu) in best.items():
        print(f"{label:>16}: wall {wall:6.2f} s  CPU {cpu:6.2f} s")
    start_wall, start_cpu = best["start only"]
    unit, large = best["1,000 replicas"], best["10,000 replicas"]
    wall_ratio = (large[0] - start_wall) / max(unit[0] - start_wall, 1e-9)
    cpu_ratio = (large[1] - start_cpu) / max(unit[1] - start_cpu, 1e-9)
    print(f"10,000 / 1,000 replicas, start subtracted: wall x{wall_ratio:.1f}, CPU x{cpu_ratio:.1f} "
          "(10 = linear, 100 = quadratic)")
    per_replica_us = (large[1] - start_cpu) / 10_000 * 1e6
    print(f"10,000 replicas: CPU per simulated replica {per_replica_us:.0f} µs (start subtracted); "
          f"wall {large[0]:.2f} s -q, {best['10,000, text'][0]:.2f} s with text lines (target: under 2 s)")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
