"""Joining a Ray cluster: the optional import and the address check, with one-line errors."""
from __future__ import annotations

import socket
import urllib.parse

CONNECT_TIMEOUT = 5.0  # seconds to open a TCP connection to the cluster's address


def require_ray():
    """The ray module, or a clear error naming the extra that installs it."""
    try:
        import ray
    except ImportError:
        raise RuntimeError("--ray needs Ray: pip install 'servegen-fast[distributed]'") from None
    return ray


def _host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of 'host:port' or 'ray://host:port'; None for 'auto' / 'local'."""
    if address in ("auto", "local"):
        return None
    u = urllib.parse.urlsplit(address if "://" in address else f"tcp://{address}")
    try:
        port = u.port
    except ValueError:
        port = None
    if not u.hostname or port is None:
        raise ValueError(f"--ray {address!r}: expected HOST:PORT, ray://HOST:PORT, auto or local")
    return u.hostname, port


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT) -> None:
    """Fail fast (a TCP connect) instead of waiting on Ray's own connection retries."""
    hp = _host_port(address)
    if hp is None:
        return
    try:
        socket.create_connection(hp, timeout=timeout).close()
    except OSError as e:
        raise ConnectionError(f"Ray cluster at {address} is unreachable ({e.strerror or e}); "
                              f"is `ray start --head` running there?") from None


def connect(address: str | None = None, *, num_cpus: int | None = None):
    """Join the cluster at `address` (host:port, ray://host:port, auto), or with None the one
    RAY_ADDRESS or a local `ray start` names, else a new local one (`num_cpus`). Returns ray."""
    ray = require_ray()
    if ray.is_initialized():
        return ray
    if address:
        check_reachable(address)
    kwargs = {"log_to_driver": False}
    if not address:
        kwargs["num_cpus"] = num_cpus
    try:
        ray.init(address=address or None, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConnectionError(f"cannot join the Ray cluster at {address or 'the default address'}: {first}") from None
    return ray
