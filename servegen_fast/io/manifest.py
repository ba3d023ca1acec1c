"""The manifest of a partitioned trace directory.

It is a zero-row file of the trace's own format and schema, ``_manifest.parquet`` (or
``_manifest.arrow``), whose schema metadata (key ``servegen_fast.manifest``) holds the
manifest as JSON: ``partition``, ``format``, ``complete``, ``parts`` (index, file, rows,
bytes), ``metadata`` and ``expected_parts``. Being a file of the same extension and schema
with no rows, it lets pyarrow, DuckDB, Polars and pandas read the directory as a dataset as
it is (Polars refuses a directory holding files of another extension; pyarrow and pandas skip
names starting with ``_``). Directories written before this (``_manifest.json``) are read too.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from .atomic import atomic_path

MANIFEST_KEY = b"servegen_fast.manifest"
LEGACY = "_manifest.json"


def manifest_name(fmt: str) -> str:
    return f"_manifest.{'parquet' if fmt == 'parquet' else 'arrow'}"


def manifest_files(directory: Path) -> list[Path]:
    """The manifest files present in `directory` (normally one)."""
    return [directory / n for n in (manifest_name("parquet"), manifest_name("arrow"), LEGACY)
            if (directory / n).is_file()]


def read_manifest(directory: str | os.PathLike) -> dict | None:
    """The manifest of a partitioned trace directory, or None if it has none; a ValueError
    naming the file if it is unreadable."""
    directory = Path(directory)
    for path in manifest_files(directory):
        try:
            if path.name == LEGACY:
                return json.loads(path.read_text())
            if path.suffix == ".parquet":
                schema = pq.read_schema(path)
            else:
                with ipc.open_file(path) as r:
                    schema = r.schema
            raw = (schema.metadata or {}).get(MANIFEST_KEY)
            if raw is None:
                raise ValueError("no manifest in its metadata")
            manifest = json.loads(raw)
            if not isinstance(manifest, dict) or not isinstance(manifest.get("parts"), list):
                raise ValueError("not a manifest")
            return manifest
        except (ValueError, OSError, pa.ArrowInvalid) as e:
            raise ValueError(f"{path}: unreadable manifest ({e}); remove it to start over") from None
    return None


def write_manifest(directory: Path, manifest: dict, schema: pa.Schema, fmt: str) -> None:
    """Write `manifest` as the zero-row `fmt` file of `schema` (temporary name, then rename);
    the JSON text is the one `_manifest.json` held before."""
    text = json.dumps(manifest, indent=1)
    schema = schema.with_metadata({**(schema.metadata or {}), MANIFEST_KEY: text.encode()})
    path = directory / manifest_name(fmt)
    with atomic_path(path) as tmp:
        if fmt == "parquet":  # the parts' writer options, so the schemas agree exactly
            with pq.ParquetWriter(tmp, schema, compression="zstd", use_dictionary=False,
                                  use_compliant_nested_type=False) as w:
                w.write_table(schema.empty_table())
        else:
            with ipc.new_file(str(tmp), schema) as w:
                w.write_table(schema.empty_table())
    for old in manifest_files(directory):
        if old != path:
            old.unlink(missing_ok=True)


def remove_manifest(directory: Path) -> None:
    for path in manifest_files(directory):
        path.unlink(missing_ok=True)
