"""The one async controller: the loop (messages -> state -> decision) and what applies decisions."""

from rollover.controller.loop import Controller, Reporter

__all__ = ["Controller", "Reporter"]
