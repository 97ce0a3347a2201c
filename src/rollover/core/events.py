"""PURE: every kind of progress event the user can be told about, in one place.

The JSON output's ``"event"`` field is the kind's value, so the values are the output's contract:
renaming one breaks every script that reads the JSON lines. ``tests/unit/test_event_kinds.py``
checks that a simulated rollout emits only these and that every one has an emitter.
"""

from __future__ import annotations

from enum import StrEnum

# The plan event's "schema": the version of report/events.schema.json the events follow. A change a
# reader could trip on (a field renamed, removed or retyped, a kind gone) bumps it.
EVENT_SCHEMA_VERSION = 1


class EventKind(StrEnum):
    # Before any replica is touched.
    PLAN = "plan"  # the rollout's plan: targets, step and batch, order, timeouts, failure policy
    LOCK_WAIT = "lock_wait"  # --lock-wait: another live rollout holds the lock; waiting for it to end
    TOOK_OVER_LOCK = "took_over_lock"  # the lock was a dead rollout's; this one recovers its work
    DISCARDED = "discarded"  # a failed replacement (or a dead rollout's half-made one) was removed
    ADOPTED = "adopted"  # a dead rollout's finished replacement counts as this target's
    REFILLING = "refilling"  # the dead rollout left replicas missing: they are made again first
    SHORT = "short"  # the dead rollout left replicas missing, and the platform refills them itself

    # One replica's steps (core.steps.replica_steps).
    REQUEST_SENT = "request_sent"  # a redeploy, restore or refill was asked of the platform
    ACKNOWLEDGED = "acknowledged"  # the platform made the replacement
    UP = "up"  # the replacement is up (healthy, or running without a healthcheck)
    ADMITTED = "admitted"  # the balancer (or a post-start hook) put the replacement into rotation
    SETTLED = "settled"  # the grace period is over: the target is replaced
    FAILED = "failed"  # the replacement failed (timeout, exit, unhealthy, refused)
    SKIPPED = "skipped"  # the target vanished before its turn (someone else removed it)
    DRAINING = "draining"  # the balancer stopped sending a replica new requests; again as its open ones end
    DRAINED = "drained"  # the balancer stopped sending the old replica requests (with a balancer)
    RETIRED = "retired"  # the old replica was stopped and removed
    CLEANUP_FAILED = "cleanup_failed"  # a platform call owed after the replica's outcome failed

    # The rollout as a whole.
    STOP_ISSUING = "stop_issuing"  # a replacement failed: the failure policy stops new redeploys
    INTERRUPTED = "interrupted"  # the first SIGINT/SIGTERM: in-flight replacements are finished
    INTERRUPTED_AGAIN = "interrupted_again"  # a second signal: stop at once
    ROLLBACK = "rollback"  # the replaced replicas are put back on their previous definition
    STREAM_LOST = "stream_lost"  # the platform's event stream broke (a daemon restart, a blip)
    STREAM_RESTORED = "stream_restored"  # the event stream is open again; what it missed is looked up
    LOCK_NOT_RELEASED = "lock_not_released"  # the lock could not be released: the next rollout finds it stale
    SUMMARY = "summary"  # the last event: the outcome and its figures

    # `rollover up`: a whole project (each rolled service's own events carry "service" too).
    PROJECT_PLAN = "project_plan"  # every selected service: action, why, settings and where they came from
    SERVICE_DONE = "service_done"  # one service's action finished (created, rolled, blocked, removed...)
    PROJECT_SUMMARY = "project_summary"  # the last line: per service what happened, and the totals
