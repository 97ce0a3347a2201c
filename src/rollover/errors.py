"""The one error hierarchy of rollover.

Platform errors (docker SDK, subprocess, sockets) are translated into these at the boundary that
meets them (``raise EngineUnavailable(...) from exc``); nothing above a backend sees a foreign
exception. The CLI maps each class to an exit code and prints ``error: Class: message``.

    RolloverError                     exit 1 unless a subclass says otherwise
    ├── BadInput                      exit 2: the request cannot be carried out; nothing was touched
    │   ├── InvalidOption             a flag or variable has a malformed value
    │   ├── ServiceNotFound           no such project/service/selector, or no running replica
    │   ├── EngineUnavailable         the Docker daemon cannot be reached (socket, TLS, permission,
    │   │                             a Swarm manager answering 503 while it restarts) before
    │   │                             anything was touched; mid-rollout it is retried, then EngineLost
    │   ├── ImageNotFound             the image to roll to does not exist and cannot be pulled
    │   ├── BalancerUnavailable       the load balancer cannot be reached or does not front the service
    │   ├── Unsupported               the service's shape rules the rollout out (e.g. container_name)
    │   └── PluginFolderError         the docker CLI plugin folder cannot be written, or holds a
    │                                 docker-rollover that is not rollover's link
    ├── Locked                        exit 3: another rollout of the service holds the lock
    ├── StoppedBySignal               exit 130: a signal ended the run before anything was touched
    └── PlatformError                 exit 1: the engine refused an operation mid-rollout
        ├── EngineLost                the engine stayed out of reach mid-rollout, after the lock was
        │                             taken: the rollout fails with the summary of where it stopped
        ├── TargetRemoved             nothing left to replace after a scale-down: the target is skipped
        └── NameTaken                 a container name to create is held by another container
"""

from __future__ import annotations


class RolloverError(Exception):
    """Base of every error rollover raises on purpose."""

    exit_code = 1


class BadInput(RolloverError):
    """The request cannot be carried out as given; raised before anything is changed."""

    exit_code = 2


class InvalidOption(BadInput):
    """A flag or environment variable holds a value rollover cannot use."""


class ServiceNotFound(BadInput):
    """The project, service or selector names nothing that can be rolled."""


class EngineUnavailable(BadInput):
    """The Docker daemon cannot be reached or refuses us (socket, TLS, permissions).

    A bad input only before the rollout touched anything: mid-rollout the call is retried, and
    when the daemon stays away the rollout has changed replicas already, so it is ``EngineLost``."""


class ImageNotFound(BadInput):
    """The image the service should roll to is neither local nor pullable."""


class BalancerUnavailable(BadInput):
    """The load balancer cannot be reached, or its backend does not front the service's replicas."""


class Unsupported(BadInput):
    """The service is shaped in a way rollover cannot roll without breaking it."""


class PluginFolderError(BadInput):
    """``rollover plugin install|uninstall``: the folder cannot be made or written, or holds a
    docker-rollover that is not a link to rollover's script."""


class Locked(RolloverError):
    """Another rollout of the same service is running; the message names its holder."""

    exit_code = 3


class StoppedBySignal(RolloverError):
    """SIGINT/SIGTERM (or the docker CLI closing its plugin socket) before anything was touched,
    e.g. while waiting for the lock."""

    exit_code = 130


class PlatformError(RolloverError):
    """The platform refused or failed an operation in the middle of a rollout."""


class EngineLost(PlatformError):
    """The platform stayed out of reach mid-rollout (retries and reconnects ran out): the rollout
    took the lock and may have changed replicas, so it fails (exit 1) and says how far it got."""


class TargetRemoved(PlatformError):
    """No replica is left to replace for a target: someone scaled the service down meanwhile
    (its place in the service is gone, so the target is skipped, not failed)."""


class NameTaken(PlatformError):
    """The engine refused a create because another container holds the name."""
