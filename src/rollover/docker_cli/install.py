"""``rollover plugin install|uninstall``: link ``docker-rollover`` where the docker CLI looks for plugins.

The docker CLI looks in ``$DOCKER_CONFIG/cli-plugins`` (``~/.docker/cli-plugins``) for the user,
then in system folders, ``/usr/local/lib/docker/cli-plugins`` first. The link points at the
``docker-rollover`` script this installation of rollover made, so upgrading rollover upgrades the
plugin and uninstalling it leaves a dangling link that ``rollover plugin uninstall`` (or the CLI,
which skips it) deals with.
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
from collections.abc import Mapping
from pathlib import Path

from rollover.docker_cli.endpoint import config_dir
from rollover.errors import PluginFolderError

SYSTEM_PLUGIN_DIR = Path("/usr/local/lib/docker/cli-plugins")
PLUGIN_FILE = "docker-rollover"


def plugin_dir(system: bool, environ: Mapping[str, str]) -> Path:
    return SYSTEM_PLUGIN_DIR if system else config_dir(environ) / "cli-plugins"


def plugin_executable() -> Path:
    """The ``docker-rollover`` console script of this installation (beside the running ``rollover``)."""
    candidates = [Path(sys.argv[0]).resolve().parent / PLUGIN_FILE,
                  Path(sysconfig.get_path("scripts")) / PLUGIN_FILE]
    found = shutil.which(PLUGIN_FILE)
    if found:
        candidates.append(Path(found))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise PluginFolderError(f"no {PLUGIN_FILE} script beside {sys.argv[0]}: reinstall rollover (pip install rollover)")


def install(folder: Path, executable: Path) -> str:
    """Link ``folder/docker-rollover`` to ``executable``; what was done, in words."""
    link = folder / PLUGIN_FILE
    _refuse_foreign(link)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not os.access(folder, os.W_OK):
            raise PermissionError(f"{folder} is not writable")
        temporary = folder / f".{PLUGIN_FILE}.{os.getpid()}"
        temporary.unlink(missing_ok=True)
        temporary.symlink_to(executable)
        temporary.replace(link)  # atomic: a concurrent `docker rollover` sees the old or the new link
    except OSError as exc:
        raise PluginFolderError(f"cannot install the plugin into {folder}: {exc.strerror or exc}") from None
    return f"installed {link} -> {executable}: run `docker rollover --help`"


def uninstall(folder: Path) -> str:
    link = folder / PLUGIN_FILE
    if not link.is_symlink() and not link.exists():
        return f"nothing to do: no {link}"
    _refuse_foreign(link)
    try:
        link.unlink()
    except OSError as exc:
        raise PluginFolderError(f"cannot remove {link}: {exc.strerror or exc}") from None
    return f"removed {link}"


def _refuse_foreign(link: Path) -> None:
    """Only a link to a docker-rollover script (ours, or a dangling one from an old install) is replaced."""
    if link.is_symlink() and Path(os.readlink(link)).name == PLUGIN_FILE:
        return
    if link.exists() or link.is_symlink():
        raise PluginFolderError(f"{link} exists and is not rollover's link: remove it yourself if it should go")
