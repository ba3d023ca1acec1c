"""A whole generation job, as the CLI runs it and a Python user can: choose what to generate
from (the pool, a synthesized fleet, or the pool repeated past its end), describe the job in the
trace's metadata (so a trace says how to regenerate itself), and write it whole or partitioned."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import pyarrow as pa

from ..version import __version__
from ..io.sink import FILE_ENCODING
from ..kernels.codes import ARRIVAL_STREAM
from ..io.trace import PARTITIONS, trace_schema, write_partitions, write_trace
from ..model import population as P
from ..model import rates as R
from ..model.pool import ClientPool
from ..model.resample import resample_windows
from ..model.sessions import DEFAULT_BLOCK_SIZE
from .generate import DEFAULT_CHUNK_BYTES, default_mode, effective_correlation, generate
from .sessions import SESSION_STREAM


@dataclass(frozen=True)
class FleetOptions:
    """A synthesized fleet (`clients` set), or a horizon extension (see docs/fleet-scale.md)."""
    clients: int | None = None
    mean_rate: float | None = None
    rate_sigma: float = 0.25
    cv_sigma: float = 0.1
    max_shift: int = 3600
    day_sigma: float = 0.0
    growth: float = 0.0
    horizon: int | None = None                 # fixed when regenerating from metadata
    mean_over: tuple[int, int] | None = None   # likewise


@dataclass(frozen=True)
class Job:
    pool_name: str
    start: int
    duration: int
    rate: R.RateFn
    seed: int = 0
    mode: str | None = None
    correlation: object = None                 # None: the pool's own (fitted pools), else comonotone
    include_reason_ratio: bool = False
    fleet: FleetOptions = FleetOptions()
    sessions: dict | None = None               # a session profile (model/sessions.py), as its dict
    block_size: int = DEFAULT_BLOCK_SIZE
    file_encoding: int = FILE_ENCODING         # Parquet encoding version (io/sink.py); 1 for older traces
    arrival_stream: int = ARRIVAL_STREAM       # inter-arrival random stream (kernels/codes.py); 1 for older traces
    session_stream: int = SESSION_STREAM       # sessions' random stream version (sample/sessions.py); 1: older


def source_for(pool, job: Job):
    """What `job` generates from: `pool` itself, a synthesized population (fleet.clients), the
    pool repeated past its end (a span beyond it, day variation or growth), or, for a pool
    shorter than a day, its windows resampled past its end (model/resample.py)."""
    end = job.start + job.duration
    f = job.fleet
    horizon = f.horizon or max(end, pool.duration)
    if f.clients:
        # the mean rate holds over the generated span, not the whole horizon
        return P.synthesize(pool, f.clients, mean_rate=f.mean_rate, duration=horizon, seed=job.seed,
                            rate_sigma=f.rate_sigma, cv_sigma=f.cv_sigma, max_shift=f.max_shift,
                            day_sigma=f.day_sigma, growth=f.growth, mean_over=f.mean_over or (job.start, end))
    short = isinstance(pool, ClientPool) and pool.duration < P.DAY
    if end > pool.duration and short and not (f.day_sigma or f.growth):
        return resample_windows(pool, end, seed=job.seed)  # too short to repeat: whole windows resampled
    if end > pool.duration or f.day_sigma or f.growth:
        return P.extend_horizon(pool, horizon, day_sigma=f.day_sigma, growth=f.growth, seed=job.seed)
    return pool


def metadata(job: Job, source) -> dict:
    """The generation parameters stored in the trace's schema (`job_from_metadata` reads them back)."""
    meta = {"generator": "servegen-fast", "version": __version__, "pool": job.pool_name,
            "pool_category": source.category, "pool_model": source.model, "seed": job.seed,
            "mode": job.mode or default_mode(source), "correlation": effective_correlation(source, job.correlation), "rate": job.rate.describe(),
            "start": job.start, "duration": job.duration, "include_reason_ratio": job.include_reason_ratio}
    if getattr(source, "params", None):
        meta["population"] = source.params
    if job.sessions is not None:
        meta["sessions"] = {"profiles": job.sessions, "block_size": job.block_size}
        if job.session_stream != 1:  # absent: version 1, so older session traces regenerate with their own draws
            meta["session_stream"] = job.session_stream
    if job.file_encoding != 1:  # absent: version 1, so older traces regenerate with their own bytes
        meta["file_encoding"] = job.file_encoding
    if job.arrival_stream != 1:  # absent: stream 1, as for file_encoding
        meta["arrival_stream"] = job.arrival_stream
    return meta


def job_from_metadata(meta: dict, origin: str = "the trace") -> Job:
    """The job that made a trace, from its metadata (see `metadata`)."""
    if meta.get("generator") != "servegen-fast":
        raise ValueError(f"{origin} has no servegen-fast generation metadata")
    fleet = FleetOptions()
    pop = meta.get("population")
    if pop:
        keys = ("rate_sigma", "cv_sigma", "max_shift", "day_sigma", "growth")
        mean_over = pop.get("mean_over")
        fleet = FleetOptions(clients=pop.get("n_clients"), mean_rate=pop.get("mean_rate"), horizon=pop["duration"],
                             mean_over=tuple(mean_over) if mean_over else None,
                             **{k: pop[k] for k in keys if k in pop})
    return Job(pool_name=meta["pool"], start=meta["start"], duration=meta["duration"],
               rate=R.from_description(meta["rate"]), seed=meta["seed"], mode=meta["mode"],
               correlation=meta["correlation"], include_reason_ratio=meta.get("include_reason_ratio", False),
               fleet=fleet, sessions=(meta.get("sessions") or {}).get("profiles"),
               block_size=(meta.get("sessions") or {}).get("block_size", DEFAULT_BLOCK_SIZE),
               file_encoding=meta.get("file_encoding", 1), arrival_stream=meta.get("arrival_stream", 1),
               session_stream=meta.get("session_stream", 1))


@dataclass
class Written:
    path: str
    rows: int                    # written by this run
    total_rows: int              # in the trace (with partitions kept from an earlier run)
    reused_partitions: int = 0
    manifest: dict | None = None


def trace_schema_of(job: Job, source) -> pa.Schema:
    """The schema (with the generation metadata) of `job`'s trace from `source`."""
    view = source.span(job.start, job.start + job.duration)
    return trace_schema(view.category, view.fields, job.include_reason_ratio, metadata(job, source),
                        sessions=job.sessions is not None)


def job_batches(job: Job, source, *, span: tuple[int, int] | None = None, backend: str = "cpu",
                chunk_bytes: int = DEFAULT_CHUNK_BYTES, progress: Callable[..., None] | None = None):
    """The record batches of `job` (or of the trace times [span[0], span[1]) only)."""
    meta = metadata(job, source)
    return generate(source, job.rate, job.duration, start=job.start, seed=job.seed, mode=meta["mode"],
                    correlation=meta["correlation"], backend=backend, chunk_bytes=chunk_bytes,
                    include_reason_ratio=job.include_reason_ratio, metadata=meta, progress=progress,
                    only=span, sessions=job.sessions, block_size=job.block_size,
                    arrival_stream=job.arrival_stream, session_stream=job.session_stream)


def check_partition(job: Job, source, partition: str) -> None:
    """Partitions must fall on the pool's window boundaries (so each generates alone)."""
    span = PARTITIONS.get(partition)
    if span is not None and (job.start % source.window_size or span % source.window_size):
        raise ValueError(f"--partition needs --start on a {source.window_size}-s window boundary")


def write(job: Job, source, output: str | os.PathLike, *, fmt: str | None = None, partition: str | None = None,
          only: list[int] | None = None, backend: str = "cpu", chunk_bytes: int = DEFAULT_CHUNK_BYTES,
          progress: Callable[..., None] | None = None) -> Written:
    """Generate `job` from `source` into `output` (a file, or a directory of partitions).

    `progress(rows, seconds_done)` follows the whole job; `only` limits a partitioned run to
    those partitions, each byte-identical to the same partition of the whole run."""
    schema = trace_schema_of(job, source)
    rows = 0

    def count(batch: pa.RecordBatch) -> None:
        nonlocal rows
        rows += batch.num_rows

    def batches(only_span=None, report=progress):
        return job_batches(job, source, span=only_span, backend=backend, chunk_bytes=chunk_bytes, progress=report)

    if only is not None and not partition:
        raise ValueError("only= (--only) needs a partition (--partition hour|day)")
    if not partition:
        path = write_trace(batches(), output, schema, fmt=fmt, on_batch=count)
        return Written(str(path), rows, rows)
    check_partition(job, source, partition)
    done = {"rows": 0, "reused": 0}

    def part_progress(r, sec):  # sec: seconds from the trace start, as generate() reports them
        if progress is not None:
            progress(done["rows"] + r, sec)

    def on_partition(entry, reused):
        done["rows"] += entry["rows"]
        done["reused"] += reused

    manifest = write_partitions(lambda a, b: batches((a, b), part_progress), output, schema,
                                duration=job.duration, fmt=fmt or "parquet", partition=partition,
                                only=only, on_batch=count, on_partition=on_partition)
    return Written(str(output), rows, done["rows"], done["reused"], manifest)
