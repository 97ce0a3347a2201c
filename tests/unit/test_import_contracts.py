"""The rooms' import contracts (pyproject's [tool.importlinter]) hold, and they would catch a breach."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[2] / "src"
PROJECT = SOURCE.parent


def lint_imports(source_root: Path) -> subprocess.CompletedProcess[str]:
    command = Path(sys.executable).with_name("lint-imports")
    environment = {**os.environ, "PYTHONPATH": str(source_root)}
    return subprocess.run([str(command), "--no-cache"], cwd=PROJECT, env=environment,
                          capture_output=True, text=True, timeout=120, check=False)


def test_every_import_contract_is_kept() -> None:
    run = lint_imports(SOURCE)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "BROKEN" not in run.stdout


def test_an_io_import_in_a_core_module_breaks_the_build(tmp_path: Path) -> None:
    shutil.copytree(SOURCE / "rollover", tmp_path / "rollover")
    plan = tmp_path / "rollover" / "core" / "plan.py"
    plan.write_text(plan.read_text().replace("from dataclasses import dataclass",
                                             "import os\nfrom dataclasses import dataclass", 1))
    run = lint_imports(tmp_path)
    assert run.returncode != 0
    assert "rollover.core.plan -> os" in run.stdout


def test_a_core_module_importing_a_backend_breaks_the_build(tmp_path: Path) -> None:
    shutil.copytree(SOURCE / "rollover", tmp_path / "rollover")
    result = tmp_path / "rollover" / "core" / "result.py"
    result.write_text(result.read_text().replace("from dataclasses import dataclass",
                                                 "from dataclasses import dataclass\n\n"
                                                 "from rollover.backends.base import Backend", 1))
    run = lint_imports(tmp_path)
    assert run.returncode != 0
    assert "rollover.core.result -> rollover.backends.base" in run.stdout


def test_a_docker_sdk_import_outside_the_engine_breaks_the_build(tmp_path: Path) -> None:
    shutil.copytree(SOURCE / "rollover", tmp_path / "rollover")
    lock = tmp_path / "rollover" / "backends" / "swarm" / "lock.py"
    lock.write_text(lock.read_text().replace("from rollover.backends.lease import",
                                             "import docker.errors\n\nfrom rollover.backends.lease import", 1))
    run = lint_imports(tmp_path)
    assert run.returncode != 0
    assert "rollover.backends.swarm.lock -> docker" in run.stdout
