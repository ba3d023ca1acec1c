"""Exporters (io/export.py, `servegen-fast export`): Mooncake JSONL round-trips through our own
Mooncake reader (lengths and block ids), vLLM prompts share text exactly where blocks are shared,
BurstGPT CSV reads back with our BurstGPT reader; streaming over partitions; bad input."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from servegen_fast.io.blocks import BlockSpec, hash_ids
from servegen_fast.io.export import export_trace
from servegen_fast.io.sources import read_log
from servegen_fast.io.trace import read_trace, trace_metadata
from servegen_fast.model.sessions import load_profiles
from servegen_fast.sample.job import Job, write
from servegen_fast.model import rates as R

sys.path.insert(0, str(Path(__file__).resolve().parent))
import test_sessions as TS  # noqa: E402


@pytest.fixture(scope="module")
def trace(tmp_path_factory):
    d = tmp_path_factory.mktemp("exp")
    pool = TS.pool(rate=2.0, windows=60, clients=3)
    job = Job(pool_name="synth", start=0, duration=3600, rate=R.as_rate_fn(None), seed=4,
              sessions=load_profiles(TS.PROFILE).to_dict(), block_size=64)
    out = d / "t.parquet"
    write(job, pool, out)
    return out


def test_mooncake_round_trip(trace, tmp_path):
    out = tmp_path / "t.jsonl"
    seen = []
    n = export_trace(trace, "mooncake", out, progress=lambda a, b: seen.append((a, b)))
    t = read_trace(trace)
    assert n == t.num_rows and seen[-1] == (n, n)
    log = read_log(out, "mooncake")
    assert len(log) == n
    assert np.array_equal(log.input_tokens, t.column("input_tokens").to_numpy())
    assert np.array_equal(log.output_tokens, t.column("output_tokens").to_numpy())
    expect = hash_ids(t, BlockSpec.from_metadata(trace_metadata(trace)))
    assert log.blocks.equals(expect)
    assert log.block_size == 64  # inferred from the id counts, not Mooncake's 512
    first = json.loads(out.read_text().splitlines()[0])
    assert set(first) == {"timestamp", "input_length", "output_length", "hash_ids", "session_id", "turn", "think_time"}
    # and fit reads it back
    r = subprocess.run([sys.executable, "-m", "servegen_fast.cli", "fit", str(out), "--format", "mooncake",
                        "-o", str(tmp_path / "p.parquet"), "-q"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_vllm_prompts_share_text_where_blocks_are_shared(trace, tmp_path):
    out = tmp_path / "v.jsonl"
    export_trace(trace, "vllm", out)
    t = read_trace(trace)
    lines = out.read_text().splitlines()
    assert len(lines) == t.num_rows
    rows = [json.loads(x) for x in lines[:300]]
    inp = t.column("input_tokens").to_numpy()
    assert all(len(r["prompt"].split()) == inp[i] for i, r in enumerate(rows))
    h = hash_ids(t.slice(0, 300), BlockSpec.from_metadata(trace_metadata(trace)))
    words = [r["prompt"].split() for r in rows]
    checked = 0
    for a in range(300):
        for b in range(a + 1, 300):
            ha, hb = h[a].as_py(), h[b].as_py()
            k = 0
            while k < min(len(ha), len(hb)) and ha[k] == hb[k] and (k + 1) * 64 <= min(inp[a], inp[b]):
                k += 1
            if k:
                assert words[a][:64 * k] == words[b][:64 * k]
                checked += 1
            if k < min(len(ha), len(hb)) and (k + 1) * 64 <= min(inp[a], inp[b]):
                assert words[a][64 * k:64 * (k + 1)] != words[b][64 * k:64 * (k + 1)]
    assert checked > 10


def test_burstgpt_csv_reads_back(trace, tmp_path):
    out = tmp_path / "b.csv"
    r = subprocess.run([sys.executable, "-m", "servegen_fast.cli", "export", str(trace), "--to", "burstgpt",
                        "-o", str(out), "-q"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    log = read_log(out)
    t = read_trace(trace)
    assert log.report.format == "burstgpt" and len(log) == t.num_rows
    assert np.array_equal(log.input_tokens, t.column("input_tokens").to_numpy())
    assert "Session ID" in log.columns


def test_export_errors(trace, tmp_path):
    with pytest.raises(ValueError, match="unknown export format"):
        export_trace(trace, "csv", tmp_path / "x")
    r = subprocess.run([sys.executable, "-m", "servegen_fast.cli", "export", str(tmp_path / "missing.parquet"),
                        "--to", "mooncake", "-o", str(tmp_path / "x.jsonl")], capture_output=True, text=True)
    assert r.returncode != 0 and "missing.parquet" in r.stderr
    assert not (tmp_path / "x.jsonl").exists()


def test_regenerate_from_metadata_with_sessions(trace, tmp_path):
    """The metadata carries the profile and block size: --from-trace-metadata gives the same trace."""
    from servegen_fast.sample.job import job_from_metadata

    job = job_from_metadata(trace_metadata(trace))
    assert job.sessions is not None and job.block_size == 64
    pool = TS.pool(rate=2.0, windows=60, clients=3)
    again = tmp_path / "again.parquet"
    write(job, pool, again)
    assert read_trace(again).equals(read_trace(trace))
    assert again.read_bytes() == trace.read_bytes()
