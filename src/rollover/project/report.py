"""The project plan and summary as figures (the JSON events' fields) and as text lines."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from rollover.core.policy import batch_size
from rollover.core.project import ProjectPlan, ServicePlan

if TYPE_CHECKING:
    from rollover.project.up import ServiceOutcome, UpRequest


def plan_figures(plan: ProjectPlan, request: UpRequest, predictions: Mapping[str, dict[str, object]]) -> dict[
        str, object]:
    return {
        "project": plan.project,
        "dry_run": request.dry_run,
        "services": [_service_figures(item, predictions.get(item.service)) for item in plan.services],
    }


def _service_figures(item: ServicePlan, prediction: dict[str, object] | None) -> dict[str, object]:
    figures: dict[str, object] = {"service": item.service, "action": item.action, "why": item.why,
                                  "running": item.running, "wanted": item.wanted}
    settings = item.settings
    if settings is not None and item.action == "roll":
        policy = settings.policy
        figures.update({
            "step": str(policy.step), "batch": batch_size(policy.step, item.running), "grace_s": policy.grace_s,
            "order": policy.order.value, "order_why": settings.order_why, "on_failure": policy.on_failure.value,
            "max_failure_ratio": policy.max_failure_ratio, "timeout_s": policy.timeout_s,
            "balancers": list(settings.traffic.balancers), "probe": settings.traffic.probe,
            "sources": dict(settings.sources),
        })
    if prediction is not None:
        figures["prediction"] = prediction
    return figures


def project_summary(plan: ProjectPlan, outcomes: Sequence[ServiceOutcome], duration_s: float,
                    exit_code: int) -> dict[str, object]:
    services = [{"service": item.service, "action": item.action, "result": item.result, "replaced": item.replaced,
                 "failed": item.failed, "duration_s": item.duration_s, "reason": item.reason} for item in outcomes]
    totals = {
        "services": len(outcomes),
        "acted": sum(1 for item in outcomes if item.result not in ("untouched", "skipped", "left")),
        "replaced": sum(item.replaced for item in outcomes),
        "failed": sum(item.failed for item in outcomes),
        "not_converged": sorted(item.service for item in outcomes
                                if item.result not in ("completed", "untouched", "skipped", "left")),
    }
    return {"project": plan.project, "result": "completed" if exit_code == 0 else "failed", "exit_code": exit_code,
            "duration_s": duration_s, "services": services, "totals": totals}


def plan_lines(figures: Mapping[str, object]) -> list[str]:
    services = figures["services"]
    assert isinstance(services, list)
    head = "rollover up (dry run): " if figures.get("dry_run") else "rollover up: "
    lines = [f"{head}compose project {figures['project']}, {len(services)} service(s), in this order:"]
    for item in services:
        lines.append(f"  {item['service']:<12} {item['action']:<10} {item['why']}")
        if "step" in item:
            sources = item["sources"]
            lines.append(f"  {'':<12} {'':<10} step {item['step']} ({sources.get('step', 'default')}) -> "
                         f"{item['batch']} at a time, grace {item['grace_s']:g}s "
                         f"({sources.get('grace', 'default')}), order {item['order']} ({item['order_why']}), "
                         f"on failure {item['on_failure']} ({sources.get('on_failure', 'default')})"
                         + (f", balancer {' '.join(item['balancers'])}" if item["balancers"] else ""))
        if "prediction" in item:
            prediction = item["prediction"]
            lines.append(f"  {'':<12} {'':<10} predicted {prediction['duration_s']:.1f}s "
                         f"({prediction['basis']})")
    return lines


def summary_lines(figures: Mapping[str, object]) -> list[str]:
    services = figures["services"]
    assert isinstance(services, list)
    lines = [f"{figures['result']}: compose project {figures['project']} in {figures['duration_s']:.1f}s"]
    for item in services:
        line = (f"  {item['service']:<12} {item['action']:<10} {item['result']:<12} {item['replaced']} replaced,"
                f" {item['failed']} failed, {item['duration_s']:.1f}s")
        if item.get("reason"):
            line += f" ({item['reason']})"
        lines.append(line)
    return lines
