"""The SIGKILL campaign: N random rounds of a rollout killed mid-flight (once or twice), taken over,
and checked for what a user would check (see tests/support/campaign.py for a round and its checks).

    .venv/bin/python -m bench.kill_campaign --rounds 24            # seeds 1..24, platforms by seed
    .venv/bin/python -m bench.kill_campaign --seed 17              # replay round 17 exactly
    .venv/bin/python -m bench.kill_campaign --rounds 12 --platform selector
    .venv/bin/python -m bench.kill_campaign --rounds 8 --platform swarm    # on a swarm of its own

Prints one line per round (its seed first) and, per platform, rounds run and rounds converged.
Exit status 1 when a round did not converge. Needs the Docker Engine, Compose v2 and HAProxy that
scripts/setup installs; makes only ``rtest-fault-...`` containers, projects and tags, removed after.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import docker

from tests.support.campaign import PLATFORMS, Round, Verdict, play
from tests.support.engine import app_image_context, build_app_images
from tests.support.faults import Faults
from tests.support.swarm import ServiceFactory, SwarmCluster, running_cluster


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=12, help="rounds to play, seeds FIRST.. (default 12)")
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument("--seed", type=int, help="replay this one round")
    parser.add_argument("--platform", choices=(*PLATFORMS, "swarm"), help="every round on this platform")
    options = parser.parse_args(argv)
    seeds = [options.seed] if options.seed is not None else range(options.first_seed,
                                                                   options.first_seed + options.rounds)
    client = docker.from_env()
    verdicts: list[Verdict] = []
    with tempfile.TemporaryDirectory(prefix="rtest-fault-campaign-") as workdir:
        build_app_images(client, Path(workdir) / "image")
        with swarm_if(options.platform == "swarm", Path(workdir)) as swarm:
            for seed in seeds:
                directory = Path(workdir) / f"round-{seed}"
                directory.mkdir()
                faults = Faults(client, directory)
                try:
                    verdict = play(faults, Round.from_seed(seed, options.platform), swarm)
                finally:
                    faults.tear_down()
                    if swarm is not None:
                        swarm[1].remove_all()
                verdicts.append(verdict)
                print(verdict.line(), flush=True)
    played = Counter(v.round.platform for v in verdicts)
    converged = Counter(v.round.platform for v in verdicts if v.converged)
    for platform in sorted(played):
        print(f"{platform}: {converged[platform]} of {played[platform]} rounds converged with nothing lost")
    return 0 if all(v.converged for v in verdicts) else 1


@contextlib.contextmanager
def swarm_if(wanted: bool, workdir: Path) -> Iterator[tuple[SwarmCluster, ServiceFactory] | None]:
    """A single-node swarm of the suite's own (scripts/swarm-cluster.sh), down again afterwards."""
    if not wanted:
        yield None
        return
    context = workdir / "swarm-image"
    context.mkdir()
    with running_cluster(1, app_image_context(context)) as cluster:
        yield cluster, ServiceFactory(cluster)


if __name__ == "__main__":
    sys.exit(main())
