"""Write files under a temporary name in the target folder, then rename: never a half file.

Output paths are checked before any work (`check_output`): a file output must not be a
directory or a special file (a rename would replace /dev/full with a Parquet file), and its
folder must be writable. Temporary names carry the writer's process id
(``.<name>.pid<N>.<random>.tmp``): they are removed on any exit Python sees, and those left by
a process that is gone (kill -9, power loss) are removed by the next write of the same output
(`clean_stale`).
"""
from __future__ import annotations

import contextlib
import os
import re
import stat
import tempfile
from pathlib import Path

_UMASK = os.umask(0o022)  # read once at import (os.umask can only be read by setting it)
os.umask(_UMASK)
_TMP = re.compile(r"(?:pid(\d+)\.)?[^.]*\.tmp")  # what follows ".<output name>."


class OutputError(ValueError):
    """An output path that cannot be written (named in the message)."""


def _label(path: Path, arg: str | None) -> str:
    return f"{arg} {path}" if arg else str(path)


def _nearest_existing(path: Path) -> Path:
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _probe_writable(folder: Path) -> str | None:
    """None if a file can be created in `folder` (tried for real: permissions, read-only
    mounts and root all answer the same way), else why not."""
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".servegen-fast-probe.", suffix=".tmp")
    except OSError as e:
        return e.strerror or type(e).__name__
    os.close(fd)
    os.unlink(tmp)
    return None


def check_output(path: str | os.PathLike, kind: str = "file", arg: str | None = None) -> Path:
    """Check that `path` can be written as a `kind` ("file" or "dir") before any work is done;
    raise OutputError naming it (and the argument `arg`, e.g. "--output") if not."""
    path = Path(path)
    name = _label(path, arg)
    if kind == "file":
        if path.is_dir():
            raise OutputError(f"{name}: is a directory; expected a file name")
        if path.exists() or path.is_symlink():
            mode = os.stat(path).st_mode if path.exists() else 0
            if not stat.S_ISREG(mode):
                raise OutputError(f"{name}: exists and is not a regular file (a device, pipe or broken link); "
                                  "expected a file name to write")
        folder = path.parent
        if not folder.is_dir():
            raise OutputError(f"{name}: its folder {folder} does not exist" if not folder.exists() else
                              f"{name}: {folder} is not a directory")
    elif kind == "dir":
        if path.exists() and not path.is_dir():
            raise OutputError(f"{name}: exists and is not a directory; expected a directory")
        folder = path if path.is_dir() else _nearest_existing(path)
        if not folder.is_dir():
            raise OutputError(f"{name}: {folder} is not a directory")
    else:
        raise ValueError(f"kind must be 'file' or 'dir', got {kind!r}")
    why = _probe_writable(folder)
    if why:
        raise OutputError(f"{name}: cannot write into {folder} ({why})")
    return path


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def clean_stale(folder: str | os.PathLike, name: str | None = None) -> int:
    """Remove the temporary files left in `folder` by writers that are gone (of output `name`,
    or of any output); returns how many were removed. Files of live writers are kept."""
    folder = Path(folder)
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for e in entries:
        if not (e.name.startswith(".") and e.name.endswith(".tmp")):
            continue
        if name is not None:
            if not e.name.startswith(f".{name}."):
                continue
            m = _TMP.fullmatch(e.name[len(name) + 2:])
        else:
            m = re.search(r"\.pid(\d+)\.[^.]*\.tmp$", e.name)
        if m is None or (m.group(1) is None and name is None):
            continue  # not ours, or an older writer's name without a pid (only cleaned for its own output)
        if m.group(1) is not None and _alive(int(m.group(1))):
            continue
        try:
            os.unlink(e.path)
            removed += 1
        except OSError:
            pass
    return removed


def temp_path(path: Path) -> Path:
    """A fresh temporary file beside `path`, with the permissions a plain open() would give
    (stale temporary files of the same output are removed first)."""
    clean_stale(path.parent, path.name)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.pid{os.getpid()}.", suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files
    return Path(tmp)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path to write; it is renamed to `path` on success and removed on error."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
