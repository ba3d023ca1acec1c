"""Fuzz every reader with damaged copies of real files (issue 19): ServeGen model directories,
pool files, Azure / BurstGPT / Mooncake logs and traces (Parquet and Arrow, whole and
partitioned). Each case truncates a file, flips bytes in it, or puts a value of the wrong type
into a field; the reader must either read it (returning something of the right kind) or raise a
clear error (ValueError or OSError naming the file), never another exception, a crash or a hang.

CI runs a fixed seed and a small budget. By hand, a longer run:

    SERVEGEN_FAST_FUZZ_CASES=500 SERVEGEN_FAST_FUZZ_SEED=1 pytest tests/test_fuzz_readers.py -s

(cases per reader; the counts tried are printed, and recorded in docs/robustness.md).
"""
from __future__ import annotations

import faulthandler
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from servegen_fast.io.pool_file import load_pool_file, open_pool, save_pool
from servegen_fast.io.servegen_format import read_servegen
from servegen_fast.io.sources import read_log
from servegen_fast.io.trace import read_trace, trace_schema, write_trace
from servegen_fast.model.pool import ClientPool

CASES = int(os.environ.get("SERVEGEN_FAST_FUZZ_CASES", "12"))
SEED = int(os.environ.get("SERVEGEN_FAST_FUZZ_SEED", "0"))
CASE_TIMEOUT = 60.0  # seconds: a case that takes longer is a hang (every thread's stack is dumped)
WRONG = [b"abc", b"-1", b"-7.5", b"1e309", b"nan", b"inf", b"", b"\"x\"", b"{}", b"[]", b"null", b"1" * 30,
         b"\xff\xfe", b"0x10", b"True"]
TALLY: dict[str, dict[str, int]] = {}


def mutate(data: bytes, rng: np.random.Generator, text: bool) -> tuple[str, bytes]:
    """A damaged copy of `data`: truncated, bytes flipped, or (text) a field replaced by junk."""
    kinds = ["truncate", "flip"] + (["wrong_type", "wrong_type"] if text else [])
    kind = kinds[int(rng.integers(len(kinds)))]
    if kind == "truncate" or not data:
        return "truncate", data[:int(rng.integers(0, max(len(data), 1)))]
    buf = bytearray(data)
    if kind == "flip":
        for _ in range(int(rng.integers(1, 9))):
            i = int(rng.integers(len(buf)))
            buf[i] ^= 1 << int(rng.integers(8))
        return "flip", bytes(buf)
    # wrong type: a number-like or string token replaced with another kind of value
    tokens = [m for m in _tokens(data)]
    if not tokens:
        return "wrong_type", data
    a, b = tokens[int(rng.integers(len(tokens)))]
    return "wrong_type", data[:a] + WRONG[int(rng.integers(len(WRONG)))] + data[b:]


def _tokens(data: bytes, limit: int = 20000):
    """(start, end) of up to `limit` fields between separators (, : newline braces quotes)."""
    seps = set(b",:\n{}[]\"' \t")
    out, start = [], None
    for i, c in enumerate(data[:200_000]):
        if c in seps:
            if start is not None:
                out.append((start, i))
                start = None
                if len(out) >= limit:
                    break
        elif start is None:
            start = i
    return out


def check(name: str, read, path: Path, kind: str, ok_type) -> None:
    """`read(path)` returns an `ok_type` or raises a ValueError / OSError that names the file."""
    tally = TALLY.setdefault(name, {"cases": 0, "read": 0, "clear_error": 0})
    tally["cases"] += 1
    faulthandler.dump_traceback_later(CASE_TIMEOUT, exit=True)
    try:
        got = read(path)
    except (ValueError, OSError) as e:
        msg = str(e)
        assert path.name in msg or str(path.parent.name) in msg, f"{name} ({kind}): error names no file: {msg!r}"
        assert "\n" not in msg.strip() or len(msg) < 2000, f"{name} ({kind}): not a one-line error: {msg[:300]!r}"
        tally["clear_error"] += 1
        return
    except Exception as e:  # noqa: BLE001 - anything else is a crash of the reader
        raise AssertionError(f"{name} ({kind}): {type(e).__name__}: {e}") from e
    finally:
        faulthandler.cancel_dump_traceback_later()
    assert isinstance(got, ok_type), f"{name} ({kind}): returned {type(got).__name__}"
    tally["read"] += 1


def fuzz_file(name: str, original: Path, read, ok_type, tmp_path: Path, text: bool, seed_offset: int,
              target: Path | None = None) -> None:
    """CASES damaged copies of `original` at `target` (default: a copy beside it), each read once."""
    rng = np.random.default_rng([SEED, seed_offset])
    data = original.read_bytes()
    target = target or tmp_path / original.name
    for _ in range(CASES):
        kind, bad = mutate(data, rng, text)
        target.write_bytes(bad)
        check(name, read, target if target.parent != tmp_path or target.name == original.name else target,
              kind, ok_type)
    target.write_bytes(data)


@pytest.fixture(scope="module", autouse=True)
def report():
    yield
    if TALLY:
        total = sum(t["cases"] for t in TALLY.values())
        print(f"\nfuzz (seed {SEED}, {CASES} cases per reader): {total} cases, 0 crashes")
        for name, t in sorted(TALLY.items()):
            print(f"  {name:28s} {t['cases']:6d} cases  {t['read']:6d} read  {t['clear_error']:6d} clear errors")


# --------------------------------------------------------------------------- logs
@pytest.mark.parametrize("name, fmt, suffix", [("azure-llm-2023-conv.csv", "azure", ".csv"),
                                               ("mooncake-conversation.jsonl", "mooncake", ".jsonl")])
def test_fuzz_request_logs(tmp_path, shared_data, name, fmt, suffix):
    src = shared_data / name
    if not src.is_file():
        pytest.skip(f"{src} absent (docs/data.md)")
    small = tmp_path / f"orig{suffix}"
    with src.open("rb") as f:
        small.write_bytes(b"".join(f.readline() for _ in range(300)))
    for mode in ("raise", "drop"):
        fuzz_file(f"log {fmt} ({mode})", small, lambda p, m=mode: read_log(p, fmt, on_error=m), object,
                  tmp_path / "case", text=True, seed_offset=hash(fmt) % 1000 + (mode == "drop"),
                  target=tmp_path / f"case{suffix}")


BURST = ("Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n" +
         "".join(f"{0.5 * i:.1f},{'ChatGPT' if i % 3 else 'GPT-4'},{50 + 7 * i},{i % 40},{50 + 7 * i + i % 40},"
                 f"{'Conversation log' if i % 2 else 'API log'}\n" for i in range(200)))


def test_fuzz_burstgpt(tmp_path):
    src = tmp_path / "orig.csv"
    src.write_text(BURST)  # made-up rows in BurstGPT v1's layout (no real BurstGPT data here)
    fuzz_file("log burstgpt", src, lambda p: read_log(p, "burstgpt"), object, tmp_path, text=True,
              seed_offset=3, target=tmp_path / "case.csv")


# --------------------------------------------------------------------------- traces
def _trace_table(n=3000):
    rng = np.random.default_rng(1)
    cols = {"timestamp": np.sort(rng.uniform(0, 7200, n)), "client_id": rng.integers(0, 9, n).astype(np.uint32),
            "input_tokens": rng.integers(1, 4000, n).astype(np.uint32),
            "output_tokens": rng.integers(1, 500, n).astype(np.uint32)}
    return pa.table(cols, schema=trace_schema("language", ("input_tokens", "output_tokens"), metadata={"duration": 7200}))


@pytest.mark.parametrize("fmt", ["parquet", "arrow"])
def test_fuzz_trace_files(tmp_path, fmt):
    t = _trace_table()
    src = write_trace(t.to_batches(max_chunksize=500), tmp_path / f"orig.{fmt}", t.schema)
    fuzz_file(f"trace {fmt}", src, read_trace, pa.Table, tmp_path, text=False, seed_offset=10 + len(fmt),
              target=tmp_path / f"case.{fmt}")
    fuzz_file(f"trace log {fmt}", src, lambda p: read_log(p, "trace"), object, tmp_path, text=False,
              seed_offset=20 + len(fmt), target=tmp_path / f"case2.{fmt}")


def test_fuzz_partitioned_trace(tmp_path):
    t = _trace_table()
    out = write_trace(t.to_batches(max_chunksize=500), tmp_path / "parts", t.schema, partition="hour")
    files = sorted(out.iterdir())  # the manifest and each part
    for k, f in enumerate(files):
        fuzz_file(f"partitioned ({'manifest' if f.name.startswith('_') else 'part'})", f, lambda p: read_trace(out),
                  pa.Table, out, text=False, seed_offset=30 + k, target=f)


# --------------------------------------------------------------------------- pools
def test_fuzz_pool_file(tmp_path):
    src = save_pool(open_pool("builtin"), tmp_path / "orig.pool.parquet")
    fuzz_file("pool file", src, load_pool_file, ClientPool, tmp_path, text=False, seed_offset=40,
              target=tmp_path / "case.pool.parquet")


def test_fuzz_servegen_directory(tmp_path, servegen_root):
    src = servegen_root / "language" / "m-small"
    model = tmp_path / "language" / "m-small"
    model.mkdir(parents=True)
    ids = sorted(int(p.name.split("-")[1]) for p in src.glob("chunk-*-dataset.json"))[:4]
    for i in ids:  # a few clients keep each case fast
        for kind in ("trace.csv", "dataset.json"):
            shutil.copy(src / f"chunk-{i}-{kind}", model / f"chunk-{i}-{kind}")
    assert read_servegen(model).n_clients == len(ids)
    for k, f in enumerate(sorted(model.iterdir())[:4]):
        fuzz_file("servegen directory", f, lambda p: read_servegen(model), ClientPool, model, text=True,
                  seed_offset=50 + k, target=f)
