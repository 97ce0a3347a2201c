"""``rollover plugin install|uninstall`` and the plugin protocol, as the real docker CLI sees them, in a
docker config folder of the test's own (DOCKER_CONFIG): `docker --help` lists rollover once it is
installed and not after; a folder that cannot be written is one line, exit 2, nothing made."""

from __future__ import annotations

import json
from pathlib import Path

from rollover import __version__
from tests.support.docker_cli import DOCKER_ROLLOVER, cli_env, install_plugin, run_cli
from tests.support.faults import ROLLOVER


def _listed(env: dict[str, str]) -> list[str]:
    done = run_cli(["docker", "--help"], env)
    return [line.strip() for line in done.stdout.splitlines() if line.strip().startswith("rollover")]


def test_install_lists_the_plugin_and_uninstall_removes_it(tmp_path: Path) -> None:
    config = tmp_path / "docker-config"
    env = install_plugin(config)
    link = config / "cli-plugins" / "docker-rollover"
    assert link.is_symlink() and link.resolve() == Path(DOCKER_ROLLOVER).resolve()
    [line] = _listed(env)
    assert "Zero-downtime rolling redeploys" in line
    version = run_cli(["docker", "rollover", "--version"], env)
    assert version.returncode == 0 and version.stdout.strip() == f"rollover, version {__version__}"
    again = run_cli([ROLLOVER, "plugin", "install", "--user"], env)
    assert again.returncode == 0, "installing twice replaces our own link"

    done = run_cli([ROLLOVER, "plugin", "uninstall"], env)
    assert done.returncode == 0 and not link.exists() and not link.is_symlink()
    assert _listed(env) == []
    done = run_cli([ROLLOVER, "plugin", "uninstall"], env)
    assert done.returncode == 0 and "nothing to do" in done.stdout


def test_metadata_answers_the_protocol() -> None:
    done = run_cli([DOCKER_ROLLOVER, "docker-cli-plugin-metadata"], cli_env(Path("/nonexistent")))
    data = json.loads(done.stdout)
    assert data["SchemaVersion"] == "0.1.0" and data["Vendor"] == "rollover" and data["Version"]


def test_a_folder_that_cannot_be_written_is_bad_input(tmp_path: Path) -> None:
    blocker = tmp_path / "docker-config"
    blocker.write_text("a file where the config folder should be\n")  # root can write anywhere else
    done = run_cli([ROLLOVER, "plugin", "install"], cli_env(blocker))
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("error: PluginFolderError: cannot install the plugin into")
    assert len(done.stderr.splitlines()) == 1 and str(blocker) in done.stderr
    assert blocker.read_text().startswith("a file"), "nothing touched"


def test_a_file_that_is_not_ours_is_left_alone(tmp_path: Path) -> None:
    config = tmp_path / "docker-config"
    foreign = config / "cli-plugins" / "docker-rollover"
    foreign.parent.mkdir(parents=True)
    foreign.write_text("#!/bin/sh\necho someone else's\n")
    for command in ("install", "uninstall"):
        done = run_cli([ROLLOVER, "plugin", command], cli_env(config))
        assert done.returncode == 2 and "is not rollover's link" in done.stderr
        assert len(done.stderr.splitlines()) == 1
    assert foreign.read_text().endswith("someone else's\n")


def test_a_direct_run_says_how_to_run_it(tmp_path: Path) -> None:
    done = run_cli([DOCKER_ROLLOVER, "redeploy", "web"], cli_env(tmp_path))
    assert done.returncode == 2
    assert done.stderr.strip() == ("error: InvalidOption: unexpected 'redeploy' before the plugin name 'rollover'")
