"""Scale-out on Ray (the `distributed` extra): partitions as tasks, HTTP senders as actors.

Nothing outside this package imports ray; the CLI reaches it only with ``--ray``.

- `generate_on_ray(job, output, partition=...)`: one task per partition, each written with
  the package's own writer (byte-identical to a single-machine run); the driver owns the
  manifest (`generate.py`, storage through `pyarrow.fs` in `storage.py`).
- `RaySend`: N sender actors for `replay_http(..., send=RaySend(...))` (`replay.py`, `senders.py`).
- `connect(address)`: join a cluster, with one-line errors (`cluster.py`).
"""
from .cluster import connect
from .generate import generate_on_ray


from .replay import RaySend, client_shares

__all__ = ["connect", "generate_on_ray", "RaySend", "client_shares"]
