"""Where a distributed trace goes: any filesystem pyarrow knows (`pyarrow.fs`).

A plain path is the local filesystem (on a cluster: a shared mount every node sees); URLs
such as ``s3://bucket/prefix`` or ``gs://...`` go through the matching pyarrow filesystem.
Every file appears only when complete: on a filesystem with renames, written under a
temporary name and moved; on an object store, one upload that the store publishes whole.
"""
from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from ..io import manifest as M
from ..io.trace import partition_file, write_partition_file

OBJECT_STORES = ("s3", "gcs", "abfs")  # uploads are published whole; no rename


class Output:
    """A trace directory on a pyarrow filesystem; picklable as its `uri`."""

    def __init__(self, uri: str | os.PathLike):
        import pyarrow.fs as pafs

        text = str(uri)
        if "://" in text:
            try:
                self.fs, path = pafs.FileSystem.from_uri(text)
            except (pa.ArrowInvalid, ValueError, OSError) as e:
                raise ValueError(f"output {text}: not a filesystem pyarrow knows ({e})") from None
            self.uri = text
        else:
            self.fs, path = pafs.LocalFileSystem(), os.path.abspath(text)
            self.uri = path  # absolute: workers run in other directories
        self.path = path.rstrip("/") or "/"
        self.local = isinstance(self.fs, pafs.LocalFileSystem)
        self.object_store = self.fs.type_name in OBJECT_STORES

    def __reduce__(self):
        return (Output, (self.uri,))

    def file(self, name: str) -> str:
        return f"{self.path}/{name}"

    def prepare(self) -> None:
        """Create the directory and prove it writable (a probe file written and removed)."""
        import pyarrow.fs as pafs

        info = self.fs.get_file_info(self.path)
        if info.type == pafs.FileType.File:
            raise ValueError(f"output {self.uri} exists and is not a directory")
        probe = self.file(f".probe-{uuid.uuid4().hex}")
        try:
            self.fs.create_dir(self.path, recursive=True)
            with self.fs.open_output_stream(probe) as f:
                f.write(b"")
            self.fs.delete_file(probe)
        except (OSError, pa.ArrowException) as e:
            raise PermissionError(f"output {self.uri} is not writable ({_reason(e)})") from None

    def read_manifest(self) -> dict | None:
        """The directory's manifest (io/manifest.py's file), or None."""
        if self.local:
            return M.read_manifest(self.path)
        import pyarrow.fs as pafs

        with tempfile.TemporaryDirectory(prefix="servegen-manifest-") as tmp:
            for name in (M.manifest_name("parquet"), M.manifest_name("arrow"), M.LEGACY):
                if self.fs.get_file_info(self.file(name)).type == pafs.FileType.File:
                    pafs.copy_files(self.file(name), os.path.join(tmp, name), source_filesystem=self.fs,
                                    destination_filesystem=pafs.LocalFileSystem())
            try:
                return M.read_manifest(tmp)
            except ValueError as e:
                raise ValueError(f"{self.uri}: {e}") from None

    def write_manifest(self, manifest: dict, schema: pa.Schema, fmt: str) -> None:
        """The same manifest file a single-machine run writes (io/manifest.py)."""
        if self.local:
            M.write_manifest(Path(self.path), manifest, schema, fmt)
            return
        with tempfile.TemporaryDirectory(prefix="servegen-manifest-") as tmp:
            M.write_manifest(Path(tmp), manifest, schema, fmt)
            self._upload(os.path.join(tmp, M.manifest_name(fmt)), M.manifest_name(fmt))

    def intact(self, entry: dict, fmt: str) -> bool:
        """As io.trace: the recorded size, and a readable footer with the recorded row count."""
        import pyarrow.fs as pafs

        name = self.file(entry["file"])
        try:
            info = self.fs.get_file_info(name)
            if info.type != pafs.FileType.File or info.size != entry.get("bytes"):
                return False
            with self.fs.open_input_file(name) as f:
                if fmt == "parquet":
                    return pq.ParquetFile(f).metadata.num_rows == entry["rows"]
                with ipc.open_file(f) as r:
                    return r.schema is not None
        except (pa.ArrowInvalid, OSError):
            return False

    def write_partition(self, batches, index: int, schema: pa.Schema, fmt: str) -> dict:
        """Partition `index` with the package's writer; returns its manifest entry."""
        try:
            if self.local:
                return write_partition_file(batches, self.path, index, schema, fmt)
            with tempfile.TemporaryDirectory(prefix="servegen-part-") as tmp:
                entry = write_partition_file(batches, tmp, index, schema, fmt)
                self._upload(str(partition_file(Path(tmp), index, fmt)), entry["file"])
                return entry
        except OSError as e:
            raise OSError(f"cannot write partition {index} to {self.uri} ({_reason(e)})") from None

    def _upload(self, local: str, name: str) -> None:
        import pyarrow.fs as pafs

        final = self.file(name)
        target = final if self.object_store else self.file(f".{name}.tmp-{uuid.uuid4().hex}")
        pafs.copy_files(local, target, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=self.fs)
        if target != final:
            self.fs.move(target, final)


def _reason(e: BaseException) -> str:
    return getattr(e, "strerror", None) or str(e).strip().splitlines()[0]
