"""Partitioned generation on Ray: one task per partition, the manifest kept by the driver.

Each task generates its partition alone (`sample.job.job_batches` over the partition's span)
and writes it with the package's writer, so every file is byte-identical to the same
partition of a single-machine run, and the finished manifest is the same too. The driver
writes the manifest after every partition it hears of (in any order), so a stopped run keeps
what is done and a re-run (same job, same output) generates only what is missing.
"""
from __future__ import annotations

import os
from typing import Callable

from ..io.trace import FORMATS, PARTITIONS, manifest_dict
from ..sample.generate import DEFAULT_CHUNK_BYTES
from ..sample.job import Job, Written, check_partition, job_batches, source_for, trace_schema_of
from .cluster import connect
from .storage import Output

TASK_RETRIES = 3  # a task whose worker or node dies is run again this many times


def _partition_task(source, job: Job, uri: str, index: int, span: tuple[int, int], fmt: str, backend: str,
                    chunk_bytes: int, threads: int, hook) -> dict:
    """In a Ray worker: partition `index` written to `uri`; returns its manifest entry."""
    if hook is not None:
        hook(index)
    if backend != "cuda":
        import numba

        from ..kernels import config
        config.start_threads()  # before set_num_threads starts the pool with spinning workers
        numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
    batches = job_batches(job, source, span=span, backend=backend, chunk_bytes=chunk_bytes)
    return Output(uri).write_partition(batches, index, trace_schema_of(job, source), fmt)


def _todo(n_parts: int, only, partition: str) -> list[int]:
    todo = list(range(n_parts)) if only is None else sorted(set(int(i) for i in only))
    bad = [i for i in todo if not 0 <= i < n_parts]
    if bad:
        raise ValueError(f"partition {bad[0]} is out of range: the trace has {n_parts} {partition} partitions "
                         f"(0 to {n_parts - 1})")
    return todo


def _kept(out: Output, schema, fmt: str, partition: str) -> dict[int, dict]:
    """Intact partitions of an earlier run of the same trace (resume), by index."""
    old = out.read_manifest()
    if old is None:
        return {}
    expected = manifest_dict(partition, fmt, schema, [], False)
    if any(old.get(k) != expected[k] for k in ("metadata", "format", "partition")):
        raise ValueError(f"{out.uri} holds a different trace (its manifest records other generation "
                         f"parameters, format or partitioning); choose another output or remove it")
    return {e["index"]: e for e in old.get("parts", []) if out.intact(e, fmt)}


def _one_line(ray, e: BaseException) -> str:
    cause = getattr(e, "cause", None) if isinstance(e, ray.exceptions.RayTaskError) else None
    err = cause if isinstance(cause, BaseException) else e
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}".rstrip(": ")


def generate_on_ray(job: Job, output: str | os.PathLike, *, partition: str = "day", fmt: str = "parquet",
                    only: list[int] | None = None, backend: str = "cpu", chunk_bytes: int = DEFAULT_CHUNK_BYTES,
                    address: str | None = None, source=None, data_dir: str | None = None,
                    retries: int = TASK_RETRIES, cpus_per_task: int = 1,
                    progress: Callable[..., None] | None = None, task_hook=None) -> Written:
    """Generate `job` into `output` (a path or pyarrow-filesystem URL) as one Ray task per partition.

    `source` is what `sample.job.source_for` gives (default: the job's pool, opened here and
    shipped to the workers once). `cpus_per_task` CPUs per task (numba threads), or one GPU per
    task with backend="cuda". A task whose worker dies is retried `retries` times; a partition
    that still fails is reported after the others finish (a one-line RuntimeError), with every
    completed partition kept and listed in the manifest. `progress(rows, seconds_done)` as
    `sample.job.write`. `task_hook(index)` runs in the task before it generates (tests: faults).
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown trace format {fmt!r}; expected one of {FORMATS}")
    if partition not in PARTITIONS:
        raise ValueError(f"unknown partition {partition!r}; expected one of {tuple(PARTITIONS)}")
    if source is None:
        from ..io.pool_file import open_pool

        source = source_for(open_pool(job.pool_name, data_dir), job)
    check_partition(job, source, partition)
    span, duration = PARTITIONS[partition], int(job.duration)
    n_parts = max(1, -(-duration // span))
    todo = _todo(n_parts, only, partition)
    schema = trace_schema_of(job, source)
    out = Output(output)
    out.prepare()
    parts = _kept(out, schema, fmt, partition)
    reused = [i for i in todo if i in parts]
    missing = [i for i in todo if i not in parts]
    ray = connect(address)
    task = ray.remote(_partition_task).options(
        max_retries=retries, retry_exceptions=False, num_cpus=0 if backend == "cuda" else cpus_per_task,
        num_gpus=1 if backend == "cuda" else 0)
    src_ref = ray.put(source)
    pending = {task.remote(src_ref, job, out.uri, i, (i * span, min((i + 1) * span, duration)), fmt, backend,
                           chunk_bytes, cpus_per_task, task_hook): i for i in missing}
    rows = {"new": 0, "total": sum(parts[i]["rows"] for i in reused)}
    seconds = sum(min(span, duration - i * span) for i in reused)
    failures: dict[int, str] = {}

    def save() -> dict:
        manifest = manifest_dict(partition, fmt, schema, list(parts.values()), len(parts) == n_parts, n_parts)
        out.write_manifest(manifest, schema, fmt)
        return manifest

    manifest = save()
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
            for ref in ready:
                i = pending.pop(ref)
                try:
                    entry = ray.get(ref)
                except ray.exceptions.RayError as e:
                    failures[i] = _one_line(ray, e)
                    continue
                parts[i] = entry
                rows["new"] += entry["rows"]
                rows["total"] += entry["rows"]
                seconds += min(span, duration - i * span)
                manifest = save()
            if progress is not None:
                progress(rows["total"], seconds)
    finally:
        for ref in pending:  # stopped (Ctrl-C, an error): what is done stays listed
            ray.cancel(ref, force=True)
    if failures:
        i = min(failures)
        raise RuntimeError(f"{len(failures)} partition(s) failed after {retries} retries; partition {i}: "
                           f"{failures[i]}; {len(parts)} of {n_parts} partitions kept in {out.uri} "
                           f"(re-run to finish)")
    return Written(out.uri, rows["new"], rows["total"], len(reused), manifest)

