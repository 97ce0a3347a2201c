"""The SIGKILL campaign, short: four seeded rounds that cover what the long one found (bench/kill_campaign.py
runs N random rounds). Each round's verdict lists every check a user would make that failed."""

from __future__ import annotations

import pytest

from tests.support.campaign import Round, play
from tests.support.faults import Faults

pytestmark = pytest.mark.engine

# Seeds chosen for what they cover (see Round.from_seed; `python -m bench.kill_campaign --seed N`
# replays one): 4 compose start-first, killed during a rollback; 8 compose stop-first, killed
# during a rollback; 10 compose stop-first, the takeover killed too; 7 selector stop-first, the
# takeover killed too.
SEEDS = [4, 8, 10, 7]


@pytest.mark.parametrize("seed", SEEDS)
def test_a_killed_rollout_and_its_takeover_lose_nothing(faults: Faults, images: dict[str, str], seed: int) -> None:
    verdict = play(faults, Round.from_seed(seed))
    print(verdict.line())  # the figures docs/faults.md quotes (-s)
    assert verdict.converged, verdict.line() + (f"\n{verdict.final.text()}" if verdict.final else "")
