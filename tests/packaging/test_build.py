"""`python -m build` makes an sdist, then a wheel from that sdist (so the sdist is complete); the
wheel installs into a fresh virtualenv (its dependencies from the package index, as a user's would)
and both of its commands run there: `rollover` and the docker CLI plugin `docker-rollover`."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str | Path, cwd: Path | None = None) -> str:
    done = subprocess.run([str(arg) for arg in args], cwd=cwd, capture_output=True, text=True, timeout=600,
                          check=False, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_the_sdist_and_wheel_install_into_a_fresh_venv_and_run(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    # No isolation: hatchling comes from the dev tools already installed, nothing is downloaded per run.
    _run(sys.executable, "-m", "build", "--no-isolation", "--outdir", dist, ROOT)
    [sdist] = dist.glob("rollover-*.tar.gz")
    [wheel] = dist.glob("rollover-*.whl")
    with tarfile.open(sdist) as archive:
        names = archive.getnames()
    for needed in ("src/rollover/cli.py", "src/rollover/docker_cli/plugin.py", "pyproject.toml", "README.md"):
        assert any(name.endswith(needed) for name in names), needed

    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", venv)
    _run(venv / "bin" / "python", "-m", "pip", "install", "-q", wheel)
    assert _run(venv / "bin" / "rollover", "--version").strip() == f"rollover, version {_version()}"
    summary = _run(venv / "bin" / "rollover", "simulate", "--replicas", "4", "--request-time", "1",
                   "--redeploy-time", "10", "--step", "2", "--output", "json").splitlines()[-1]
    assert json.loads(summary)["result"] == "completed"
    metadata = json.loads(_run(venv / "bin" / "docker-rollover", "docker-cli-plugin-metadata"))
    assert metadata["SchemaVersion"] == "0.1.0" and metadata["Version"] == _version()
    assert "_rollover_completion" in _run(venv / "bin" / "rollover", "completion", "bash")


def _version() -> str:
    from rollover import __version__

    return __version__
