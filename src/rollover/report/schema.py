"""The JSON events' schema, shipped with the package: ``events.schema.json`` beside this module.

CI consumers of ``--output json`` can validate against it (``python -c 'from rollover.report.schema
import event_schema'`` or the file itself); the plan event's ``"schema"`` says which version a run
follows (``core.events.EVENT_SCHEMA_VERSION``).
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

SCHEMA_FILE = "events.schema.json"


def event_schema() -> dict[str, Any]:
    text = resources.files("rollover.report").joinpath(SCHEMA_FILE).read_text(encoding="utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded
