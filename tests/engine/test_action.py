"""The GitHub action's roll step, run the way a runner runs a composite action's step: action.yml
read, ``${{ inputs.X }}`` filled in from the inputs given and the defaults, the step's env set,
its ``run`` written to a script and run with ``bash --noprofile --norc -eo pipefail`` in the
step's working directory, GITHUB_OUTPUT a file read back afterwards. The install step (pip into
a venv under RUNNER_TEMP) is what tests/packaging proves; here rollover comes from this checkout."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.docker_cli import image_id, rplug_name, service_images
from tests.support.engine import APP_V1, APP_V2, ComposeProject
from tests.support.faults import ROLLOVER

pytestmark = pytest.mark.engine

ROOT = Path(__file__).resolve().parents[2]


def _fill(text: str, inputs: dict[str, str]) -> str:
    return re.sub(r"\$\{\{\s*inputs\.([\w-]+)\s*\}\}", lambda match: inputs[match.group(1)], text)


def run_step(step_id: str, given: dict[str, str], tmp_path: Path) -> tuple[int, dict[str, str]]:
    action: dict[str, Any] = yaml.safe_load((ROOT / "action.yml").read_text())
    inputs = {name: str(spec.get("default", "")) for name, spec in action["inputs"].items()} | given
    [step] = [step for step in action["runs"]["steps"] if step.get("id") == step_id]
    script = tmp_path / f"{step_id}.sh"
    script.write_text(step["run"])
    outputs = tmp_path / "github_output"
    outputs.write_text("")
    env = {**os.environ, **{key: _fill(str(value), inputs) for key, value in step.get("env", {}).items()},
           "GITHUB_ACTION_PATH": str(ROOT), "RUNNER_TEMP": str(tmp_path), "GITHUB_OUTPUT": str(outputs),
           "GITHUB_PATH": str(tmp_path / "github_path"), "PATH": f"{Path(ROLLOVER).parent}:{os.environ['PATH']}"}
    cwd = tmp_path / _fill(step.get("working-directory", "."), inputs)
    done = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    written = dict(line.split("=", 1) for line in outputs.read_text().splitlines() if "=" in line)
    return done.returncode, written


def test_the_roll_step_rolls_and_outputs_the_summary(
    compose_project: Callable[..., ComposeProject], tmp_path: Path
) -> None:
    project = compose_project(APP_V1, name=rplug_name("proj"), replicas=2)
    project.write(APP_V2, replicas=2)
    code, outputs = run_step("roll", {"service": "web", "project": project.name, "step": "2",
                                      "working-directory": str(project.directory)}, tmp_path)
    assert code == 0, outputs
    assert outputs["exit-code"] == "0" and outputs["result"] == "completed"
    summary = json.loads(outputs["summary"])
    assert summary["event"] == "summary" and summary["replaced"] == 2
    assert service_images(project) == [image_id(project, APP_V2)] * 2


def test_bad_input_fails_the_step_with_exit_2(tmp_path: Path) -> None:
    code, outputs = run_step("roll", {"service": "web", "step": "zero", "docker-host": "unix:///nonexistent.sock"},
                             tmp_path)
    assert code == 2 and outputs == {"summary": "{}", "result": "error", "exit-code": "2"}


def test_the_install_step_is_valid_bash() -> None:
    subprocess.run(["bash", "-n", str(ROOT / "scripts" / "action-install")], check=True)
