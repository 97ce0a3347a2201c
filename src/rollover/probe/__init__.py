"""The open-loop traffic probe and its HTTP transport."""

from rollover.core.probe_report import ProbeReport, ProbeSample
from rollover.probe.open_loop import Probe

__all__ = ["Probe", "ProbeReport", "ProbeSample"]
