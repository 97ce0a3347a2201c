"""Every JSON event a test sees, checked against the schema rollover ships (report/events.schema.json).

The fault, zero-downtime, Swarm and ``rollover up`` helpers call ``assert_valid_events`` on each real rollout's
output, so every real rollout in the suite checks the contract CI consumers rely on.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

import jsonschema

from rollover.report.schema import event_schema


@functools.cache
def _validator() -> jsonschema.protocols.Validator:
    schema = event_schema()
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    return validator_class(schema)  # type: ignore[no-any-return]


def schema_errors(event: dict[str, Any]) -> list[str]:
    return [f"{'/'.join(str(part) for part in error.absolute_path) or '(event)'}: {error.message}"
            for error in _validator().iter_errors(event)]


def assert_valid_events(events: Iterable[dict[str, Any]]) -> None:
    """Each event valid; each plan with its schema version; the summary (rollover up: the project's) last."""
    events = list(events)
    for event in events:
        errors = schema_errors(event)
        assert not errors, f"{event.get('event')} breaks the event schema: {errors}\n{event}"
    kinds = [event["event"] for event in events]
    assert all(event["schema"] == 1 for event in events if event["event"] == "plan")
    last = "project_summary" if "project_plan" in kinds else "summary"  # rollover up: the project's comes last
    if last in kinds:
        assert kinds[-1] == last, kinds
