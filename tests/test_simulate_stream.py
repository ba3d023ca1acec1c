"""The simulator over a trace in chunks (a partitioned trace's record batches), its state carried
between them: exactly the results of one run over the whole trace."""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pytest

from servegen_fast.replay.plan import make_plan
from servegen_fast.replay.results import META_KEY, read_requests, request_table
from servegen_fast.simulate.cluster import run_chunks, run_plan, simulate_trace
from test_filesummary import _dicts_equal
from test_simulate import SPREAD, profile, trace

FIELDS = ("instance", "released", "started", "first_token", "completed", "generated", "preempted", "status",
          "stats_time", "kv_used_fraction", "running", "waiting")


def _chunks(table, cuts):
    def gen():
        for lo, hi in zip([0, *cuts], [*cuts, len(table)]):
            p = make_plan(table.slice(lo, hi - lo))
            p.row = p.row + lo
            yield p
    return gen


@pytest.mark.parametrize("spread", [[], SPREAD])
@pytest.mark.parametrize("router", ["round-robin", "least-loaded"])
@pytest.mark.parametrize("kv_blocks,instances", [(2048, 2), (64, 1), (200, 3)])
def test_chunked_run_equals_the_whole_run(router, kv_blocks, instances, spread):
    t = trace(n=600, span=20.0, seed=4)
    prof = profile(kv_blocks=kv_blocks, spread=spread)
    whole = run_plan(make_plan(t), prof, instances, router, seed=3)
    plan, res = run_chunks(_chunks(t, [1, 150, 151, 400]), prof, instances, router, seed=3)
    assert np.array_equal(plan.row, np.arange(len(t)))
    for name in FIELDS:
        np.testing.assert_array_equal(getattr(res, name), getattr(whole, name), err_msg=name)
    assert res.end == whole.end
    if kv_blocks < 2048:  # small caches: requests preempted and queued across the cuts
        assert res.preempted.any()


def test_chunks_out_of_time_order_are_an_error():
    t = trace(n=100, seed=2)
    later, earlier = t.slice(50), t.slice(0, 50)
    with pytest.raises(ValueError, match=r"rows 50\.\.99: .*time order"):
        run_chunks(_chunks(pa.concat_tables([later, earlier]), [50]), profile(), 2)


@pytest.mark.parametrize("select", [{}, {"start": 2000.0, "end": 6000.0, "max_requests": 300},
                                    {"clients": [1, 2, 5], "time_scale": 0.5}])
def test_partitioned_trace_streams_with_the_results_of_the_whole_table(tmp_path, select):
    from servegen_fast.io.trace import read_trace, write_partitions

    t = trace(n=800, span=7200.0, seed=3, max_in=4000)  # two hourly partitions, several batches each
    schema = t.schema

    def batches(lo, hi):  # the rows of [lo, hi) seconds, in record batches of 64
        ts = t.column("timestamp").to_numpy()
        part = t.filter(pa.array((ts >= lo) & (ts < hi)))
        return part.to_batches(max_chunksize=64)

    d = tmp_path / "parts"
    write_partitions(batches, d, schema, fmt="parquet", partition="hour", duration=7200.0)
    assert read_trace(d).num_rows == 800
    a = simulate_trace(d, tmp_path / "streamed", profile=profile(kv_blocks=120), instances=2, router="least-loaded",
                       **select)
    b = simulate_trace(read_trace(d), tmp_path / "whole", profile=profile(kv_blocks=120), instances=2,
                       router="least-loaded", **select)
    assert a["engine"]["streamed"] and not b["engine"]["streamed"]
    ra, rb = read_requests(tmp_path / "streamed"), read_requests(tmp_path / "whole")
    assert ra.column_names == rb.column_names and ra.num_rows == rb.num_rows == a["counts"]["selected"]
    n = ra.num_rows
    assert n == 800 if not select else n == 300 if "max_requests" in select else 0 < n < 800
    arrival = ra.column("arrival").to_numpy()
    assert arrival.min() < 3600 <= arrival.max()  # both partitions
    for name in ra.column_names:  # NaN-aware: dropped requests have no times
        np.testing.assert_array_equal(ra.column(name).to_numpy(zero_copy_only=False),
                                      rb.column(name).to_numpy(zero_copy_only=False), err_msg=name)
    assert (ra.column("status").to_numpy(zero_copy_only=False) != "completed").any()  # drops across partitions
    # written as the trace's batches finished (one record batch each), not gathered: same content
    with ipc.open_file(tmp_path / "streamed" / "requests.arrow") as f:
        assert f.num_record_batches > 1
    assert ra.schema.remove_metadata().equals(rb.schema.remove_metadata())
    meta = [json.loads(r.schema.metadata[META_KEY]) for r in (ra, rb)]
    for m in (*meta, a, b):  # the trace: a directory vs "<table>"
        del m["engine"]["streamed"], m["trace"]
    assert meta[0] == meta[1]
    _dicts_equal(a, b)  # the streamed summary is read back batch by batch: means within 1e-12


def test_a_failed_stream_leaves_no_results_file(tmp_path, monkeypatch):
    from servegen_fast.replay import results
    from servegen_fast.simulate.cluster import _write_streamed

    t = trace(n=300, span=7200.0, seed=5)  # two batches of the last hour, then the earlier rows: an error
    chunks = _chunks(pa.concat_tables([t.slice(200), t.slice(0, 200)]), [50, 100])
    written = []
    monkeypatch.setattr(results, "request_table", lambda rec, meta: written.append(len(rec.plan)) or
                        request_table(rec, meta))
    with pytest.raises(ValueError, match=r"rows 100\.\.299: .*time order"):
        _write_streamed(tmp_path, chunks, profile(), 1, "round-robin", lambda options: {}, None, None)
    assert written == [50]  # the first batch was written, then the run failed
    assert list(tmp_path.iterdir()) == []  # no requests.arrow, no temporary file
