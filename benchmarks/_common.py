"""Helpers shared by the benchmarks: data location, machine description, peak RSS."""
from __future__ import annotations

import os
import platform
import resource
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def servegen_root() -> Path:
    cache = Path(os.environ.get("SERVEGEN_FAST_DATA") or ROOT / ".cache")
    if not (cache / "servegen" / "language").is_dir():
        reference = Path(os.environ.get("SERVEGEN_FAST_REFERENCE") or ROOT.parent / "shared" / "data")
        tarball = reference / "servegen-data.tar.gz"
        if not tarball.is_file():
            raise SystemExit(f"ServeGen data not found: unpack it into $SERVEGEN_FAST_DATA/servegen or put "
                             f"servegen-data.tar.gz in {reference} (see docs/data.md)")
        cache.mkdir(parents=True, exist_ok=True)
        with tarfile.open(tarball) as tf:
            tf.extractall(cache, filter="data")
    return cache / "servegen"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB, Python {platform.python_version()}"


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
