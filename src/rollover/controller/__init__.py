"""The one async controller: the loop (messages -> state -> decision) and the executor of a decision's effects."""

from rollover.controller.loop import Controller, Reporter

__all__ = ["Controller", "Reporter"]
