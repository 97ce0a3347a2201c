"""`rollover up` end to end: the console script against the real engine and real Compose v2, on
the issue's four-service project (db, api, web, worker). Each test checks what a user would:
the exit code, the JSON plan and summary, which container ids changed, what `docker compose`
says afterwards."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker.errors
import pytest

from tests.support.engine import APP_BROKEN, APP_V1, APP_V2
from tests.support.http_stubs import closed_port
from tests.support.project_up import (
    PATIENT_HEALTHCHECK,
    cli_env,
    four_services,
    max_in_flight,
    project_name,
    up_project,
)

pytestmark = pytest.mark.engine


def _healthy(container: Any) -> bool:
    container.reload()
    health = container.attrs["State"].get("Health")
    return container.status == "running" and (health is None or health["Status"] == "healthy")


def test_first_up_then_a_change_rolls_exactly_the_changed_services(
        docker_client: Any, app_images: dict[str, str], tmp_path: Path) -> None:
    with up_project(docker_client, tmp_path / "p", four_services(closed_port()), {"data": {}}) as project:
        first = project.up()
        assert first.code == 0, first
        # Dependencies first: db before api before web; worker depends on nothing.
        order = first.done_order()
        assert order.index("db") < order.index("api") < order.index("web"), order
        assert set(first.results().values()) == {"completed"}, first.summary
        assert {service: len(ids) for service, ids in project.all_ids().items()} == {
            "api": 3, "db": 1, "web": 2, "worker": 2}
        assert all(_healthy(container) for container in project.containers())

        before = project.all_ids()
        project.services["api"]["image"] = APP_V2
        project.services["worker"]["environment"] = {"MODE": "b"}
        project.write()
        objects = project.engine_objects()
        dry = project.up("--dry-run")
        assert dry.code == 0, dry
        assert {service: item["action"] for service, item in dry.plan.items()} == {
            "db": "untouched", "api": "roll", "web": "untouched", "worker": "roll"}
        assert dry.plan["api"]["step"] == "2" and dry.plan["api"]["order"] == "start-first"
        assert dry.plan["api"]["sources"] == {"step": "update_config.parallelism", "order": "update_config.order"}
        assert dry.plan["api"]["prediction"]["duration_s"] > 0, dry.plan["api"]
        assert project.engine_objects() == objects  # --dry-run touched nothing

        rolled = project.up()
        assert rolled.code == 0, rolled
        assert rolled.plan_order() == dry.plan_order()
        assert rolled.results() == {"db": "untouched", "worker": "completed", "api": "completed",
                                    "web": "untouched"}
        after = project.all_ids()
        assert after["db"] == before["db"] and after["web"] == before["web"]
        assert not after["api"] & before["api"] and not after["worker"] & before["worker"]
        assert len(after["api"]) == 3 and len(after["worker"]) == 2
        assert max_in_flight(rolled.service_events("api")) == 2
        assert {container.attrs["Image"] for container in project.containers("api")} == {app_images[APP_V2]}

        # Compose agrees: nothing left to recreate, and it lists every container.
        project.compose("up", "-d", "--wait", "--wait-timeout", "60")
        assert project.all_ids() == after
        listed = json.loads("[" + ",".join(project.compose("ps", "--format", "json").split("\n")[:-1]) + "]")
        assert sorted(item["ID"] for item in listed) == sorted(
            container.id[:12] for container in project.containers())


@pytest.fixture
def moving_tag(docker_client: Any, app_images: dict[str, str]) -> Iterator[str]:
    """A tag of the test's own on app:v1, for the test to move as a pull would; removed after."""
    tag = f"{project_name()}/app:live"
    docker_client.images.get(APP_V1).tag(tag)
    yield tag
    with contextlib.suppress(docker.errors.NotFound):
        docker_client.images.remove(tag, force=True)


def test_new_services_are_created_orphans_removed_only_when_asked_and_a_moved_tag_rolls(
        docker_client: Any, app_images: dict[str, str], moving_tag: str, tmp_path: Path) -> None:
    quick = {"init": True, "healthcheck": PATIENT_HEALTHCHECK}
    services = {"web": {"image": moving_tag, **quick, "deploy": {"replicas": 2}},
                "worker": {"image": APP_V1, **quick}}
    with up_project(docker_client, tmp_path / "p", services) as project:
        assert (first := project.up()).code == 0, first
        web, worker = project.ids("web"), project.ids("worker")
        del project.services["worker"]
        project.services["cache"] = {"image": APP_V1, **quick}
        project.write()

        added = project.up()
        assert added.code == 0, added
        assert added.plan["cache"]["action"] == "create" and added.plan["worker"]["action"] == "orphan"
        assert len(project.ids("cache")) == 1 and project.ids("web") == web and project.ids("worker") == worker

        removed = project.up("--remove-orphans")
        assert removed.code == 0, removed
        assert removed.plan["worker"]["action"] == "remove"
        assert project.containers("worker", running_only=False) == [] and project.ids("web") == web

        # Same file, same config hash; the tag now names another image: web rolls onto it.
        docker_client.images.get(APP_V2).tag(moving_tag)
        moved = project.up()
        assert moved.code == 0, moved
        assert moved.plan["web"]["action"] == "roll" and "now points to another image" in moved.plan["web"]["why"]
        assert moved.plan["cache"]["action"] == "untouched"
        assert not project.ids("web") & web
        assert {container.attrs["Image"] for container in project.containers("web")} == {app_images[APP_V2]}


def test_a_failing_image_is_rolled_back_and_its_dependents_are_not_touched(
        docker_client: Any, app_images: dict[str, str], tmp_path: Path) -> None:
    services = four_services(closed_port())
    del services["worker"]  # independent of api: it adds nothing here
    with up_project(docker_client, tmp_path / "p", services, {"data": {}}) as project:
        assert (first := project.up()).code == 0, first
        before = project.all_ids()
        project.services["api"]["image"] = APP_BROKEN
        project.services["api"]["deploy"]["update_config"]["failure_action"] = "rollback"
        project.services["web"]["environment"] = {"CHANGED": "yes"}  # web would roll too
        project.write()

        failed = project.up()
        assert failed.code == 1, failed
        results = failed.results()
        assert results["api"] == "rolled-back" and results["web"] == "blocked", failed.summary
        [web] = [item for item in failed.summary["services"] if item["service"] == "web"]
        assert web["reason"] == "it depends on api, which failed", web
        after = project.all_ids()
        assert after["web"] == before["web"] and after["db"] == before["db"]
        assert {container.attrs["Image"] for container in project.containers("api")} == {app_images[APP_V1]}
        assert len(after["api"]) == 3 and all(_healthy(container) for container in project.containers("api"))


@pytest.mark.parametrize(("edit", "args", "named"), [
    pytest.param("broken-file", (), "yaml", id="broken-file"),
    pytest.param("unknown-service", ("nosuch",), "nosuch", id="unknown-service"),
    pytest.param("unknown-profile", ("--profile", "nosuch"), "nosuch", id="unknown-profile"),
    pytest.param("bad-update-config", (), "failure_action", id="invalid-update-config"),
    pytest.param("unknown-x-rollover-key", (), "probe_url", id="unknown-x-rollover-key"),
])
def test_bad_input_is_one_line_exit_2_and_touches_nothing(
        docker_client: Any, app_images: dict[str, str], tmp_path: Path, edit: str, args: tuple[str, ...],
        named: str) -> None:
    services = {"web": {"image": APP_V1, "init": True, "healthcheck": PATIENT_HEALTHCHECK}}
    with up_project(docker_client, tmp_path / "p", services) as project:
        if edit == "bad-update-config":
            services["web"]["deploy"] = {"update_config": {"failure_action": "explode"}}
        if edit == "unknown-x-rollover-key":
            services["web"]["x-rollover"] = {"probe_url": "http://127.0.0.1:1/"}
        project.write()
        if edit == "broken-file":
            project.file.write_text(project.file.read_text() + "\n  oops: [\n")
        outcome = project.up(*args)
        assert outcome.code == 2, outcome
        [line] = outcome.stderr.strip().splitlines()
        assert line.startswith("error: ") and named in line.lower(), line
        assert project.engine_objects() == (set(), set(), set())


def test_files_env_files_profiles_and_compose_variables_select_what_compose_would(
        docker_client: Any, app_images: dict[str, str], tmp_path: Path) -> None:
    quick = {"init": True, "healthcheck": PATIENT_HEALTHCHECK}
    services = {"web": {"image": "${WEB_IMAGE:-" + APP_V1 + "}", **quick},
                "tools": {"image": APP_V1, **quick, "profiles": ["tools"]}}
    with up_project(docker_client, tmp_path / "p", services) as project:
        override = project.directory / "override.yaml"
        override.write_text(json.dumps({"services": {"web": {"deploy": {"replicas": 2}}}}))
        env_file = project.directory / "v2.env"
        env_file.write_text(f"WEB_IMAGE={APP_V2}\n")

        plain = project.up("--dry-run")
        assert plain.code == 0 and set(plain.plan) == {"web"}, plain
        assert plain.plan["web"]["wanted"] == 1

        chosen = project.up("-f", "compose.yaml", "-f", "override.yaml", "--env-file", "v2.env",
                            "--profile", "tools")
        assert chosen.code == 0, chosen
        assert set(chosen.plan) == {"web", "tools"} and chosen.plan["web"]["wanted"] == 2
        assert {container.attrs["Image"] for container in project.containers("web")} == {app_images[APP_V2]}
        assert len(project.ids("web")) == 2 and len(project.ids("tools")) == 1

        # The same selection through Compose's own variables, from another directory: unchanged.
        variables = cli_env(COMPOSE_FILE=f"{project.file}:{override}", COMPOSE_PROFILES="tools",
                            COMPOSE_PROJECT_NAME=project.name)
        again = project.up("--env-file", str(env_file), env=variables, cwd=tmp_path)
        assert again.code == 0, again
        assert {service: item["action"] for service, item in again.plan.items()} == {
            "web": "untouched", "tools": "untouched"}


def test_a_killed_up_is_finished_by_the_next_one(
        docker_client: Any, app_images: dict[str, str], tmp_path: Path) -> None:
    services = {"api": four_services(closed_port())["api"]}
    del services["api"]["depends_on"]
    with up_project(docker_client, tmp_path / "p", services) as project:
        assert (first := project.up()).code == 0, first
        project.services["api"]["image"] = APP_V2
        project.write()
        # SIGKILL once api's first replacement exists: the lock and a half-done rollout stay behind.
        killed = project.up_killed_after('"event": "acknowledged"')
        assert killed != 0
        assert docker_client.containers.list(all=True, filters={"name": f"rollover-lock-{project.name}-api"})

        finished = project.up()
        assert finished.code == 0, finished
        assert [event["service"] for event in finished.events if event["event"] == "took_over_lock"] == ["api"]
        assert {container.attrs["Image"] for container in project.containers("api")} == {app_images[APP_V2]}
        assert len(project.ids("api")) == 3
        assert not docker_client.containers.list(all=True, filters={"name": f"rollover-lock-{project.name}-api"})
        assert project.up("--dry-run").plan["api"]["action"] == "untouched"


def test_services_that_cannot_run_twice_are_replaced_stop_first_with_their_data(
        docker_client: Any, app_images: dict[str, str], tmp_path: Path) -> None:
    port = closed_port()
    services = {
        "db": {"image": APP_V1, "init": True, "stop_grace_period": "5s", "volumes": ["data:/data"],
               "ports": [f"127.0.0.1:{port}:8080"], "healthcheck": PATIENT_HEALTHCHECK},
        "single": {"image": APP_V1, "init": True, "stop_grace_period": "5s",
                   "healthcheck": PATIENT_HEALTHCHECK},
    }
    with up_project(docker_client, tmp_path / "p", services, {"data": {}}) as project:
        services["single"]["container_name"] = f"{project.name}-the-single"
        project.write()
        assert (first := project.up()).code == 0, first
        [db] = project.containers("db")
        assert db.exec_run(["sh", "-c", "echo kept > /data/mark"]).exit_code == 0
        for name in services:
            services[name]["image"] = APP_V2
        project.write()

        rolled = project.up()
        assert rolled.code == 0, rolled
        assert rolled.plan["db"]["action"] == "roll" and rolled.plan["db"]["order"] == "stop-first"
        assert f"fixed host port 127.0.0.1:{port}" in rolled.plan["db"]["order_why"]
        assert rolled.plan["single"]["action"] == "recreate" and "container_name" in rolled.plan["single"]["why"]
        [new_db] = project.containers("db")
        assert new_db.id != db.id and new_db.attrs["Image"] == app_images[APP_V2]
        assert new_db.exec_run(["cat", "/data/mark"]).output == b"kept\n"
        [single] = project.containers("single")
        assert single.name == f"{project.name}-the-single" and single.attrs["Image"] == app_images[APP_V2]
