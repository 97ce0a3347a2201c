"""Load balancers rollover steers during a rollout (see ``base`` for the protocol)."""

from rollover.balancers.base import Balancer, DrainResult, NoBalancer

__all__ = ["Balancer", "DrainResult", "NoBalancer"]
