"""Joining a Ray cluster or starting a local one, the same way for every entry point."""

from __future__ import annotations

import os
import socket
from typing import Any

from abcmusic.errors import UserError, first_line


def check_reachable(address: str) -> None:
    """Fail at once on a host:port nobody listens on (ray.init would retry for minutes)."""
    host, _, port = address.rpartition(":")
    if "://" in address or not host or not port.isdigit():
        return  # "auto", "ray://...": let Ray resolve them
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as error:
        raise UserError(f"cannot connect to the Ray cluster at {address}: {error.strerror or error}") from None


def start_ray(address: str | None, *, local_resources: dict[str, float] | None = None,
              env_vars: dict[str, str] | None = None, include_dashboard: bool = False) -> bool:
    """Join the cluster at `address` (or RAY_ADDRESS), else start a local Ray; True when this call started it.

    `local_resources` (custom resources) only apply to a local Ray: a cluster declares its own."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    if ray.is_initialized():
        return False
    options: dict[str, Any] = {"logging_level": "WARNING"}
    if env_vars:
        options["runtime_env"] = {"env_vars": env_vars}
    target = address or os.environ.get("RAY_ADDRESS")
    if target:
        check_reachable(target)
        try:
            ray.init(address=address, **options)
        except (ConnectionError, RuntimeError, ValueError) as error:
            raise UserError(f"cannot connect to the Ray cluster at {target}: {first_line(error)}") from None
    else:
        ray.init(resources=local_resources, include_dashboard=include_dashboard, **options)
    return True
