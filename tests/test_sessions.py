"""Sessions in generated traces (model/sessions.py, sample/sessions.py, kernels/session_bodies.py,
io/blocks.py): the model's statistics, exact context growth, block-id structure, identity
across backends, chunk sizes and parts, rates kept, and bad input; for both session stream
versions (1: thinned slots, 2: starts drawn at rate / E[turns]) where the draws differ.

Statistical tests use fixed seeds; tolerances are stated where they are used."""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from servegen_fast.io.blocks import BlockSpec, hash_ids
from servegen_fast.model.sessions import ProfileError, SessionProfiles, load_profiles
from servegen_fast.sample.generate import generate_table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_kernels_cuda import HAVE_NUMBA_CUDA, _run_sim, synth_pool  # noqa: E402

PROFILE = {"format": "servegen-fast-sessions", "version": 1, "source": "test",
           "default": {"session_share": 0.6, "turns": {"values": [2, 3, 5, 9], "probs": [0.4, 0.3, 0.2, 0.1]},
                       "think_time": {"values": [2.0, 10.0, 40.0, 90.0], "probs": [0.2, 0.4, 0.3, 0.1]},
                       "new_tokens": {"values": [5, 40, 300, 1500], "probs": [0.3, 0.3, 0.3, 0.1]},
                       "prefix_share": 0.7, "prefixes": {"tokens": [700, 1500, 64, 2048], "zipf": 1.2},
                       "service": {"ttft": 0.3, "tpot": 0.01}}}


def pool(rate=3.0, windows=12, clients=6, seed=0):
    r = np.full((clients, windows), rate) * (1 + np.arange(clients))[:, None] / clients
    r[0, 3] = 0.0  # an idle window
    return synth_pool(r, window_size=60, length_window_size=240, seed=seed)


def table(p=None, **kw):
    kw.setdefault("sessions", PROFILE)
    return generate_table(p if p is not None else pool(), seed=kw.pop("seed", 7), **kw)


def sessions_of(t: pa.Table) -> dict:
    d = {c: t.column(c).to_numpy(zero_copy_only=False) for c in
         ("timestamp", "session_id", "turn", "input_tokens", "output_tokens", "think_time", "client_id")}
    d["prefix_id"] = t.column("prefix_id").cast(pa.int64()).fill_null(-1).to_numpy(zero_copy_only=False)
    order = np.lexsort((d["turn"], d["session_id"]))
    return {k: v[order] for k, v in d.items()}


STREAMS = [1, 2]


# --------------------------------------------------------------------------- identity
@pytest.mark.parametrize("stream", STREAMS)
@pytest.mark.parametrize("mode", ["servegen", "renewal"])
def test_numpy_reference_equals_cpu(mode, stream):
    a = table(backend="numpy", mode=mode, session_stream=stream)
    b = table(backend="cpu", mode=mode, session_stream=stream)
    assert a.num_rows > 1000
    assert a.equals(b)
    spec = BlockSpec(7, 16, PROFILE)
    assert hash_ids(a, spec, "numpy").equals(hash_ids(a, spec, "cpu"))


@pytest.mark.parametrize("stream", STREAMS)
def test_chunk_sizes_and_parts_are_identical(stream):
    p = pool()
    whole = table(p, chunk_bytes=1 << 30, session_stream=stream)
    small = table(p, chunk_bytes=4000, session_stream=stream)  # a few windows per chunk: sessions cross many edges
    assert whole.equals(small)
    parts = [table(p, only=(a, b), chunk_bytes=6000, session_stream=stream) for a, b in ((0, 180), (180, 420),
                                                                                          (420, 720))]
    assert pa.concat_tables(parts).equals(whole)
    # later turns from earlier parts reach into the later ones (the look-back is exercised)
    assert (parts[2].column("turn").to_numpy() > 0).sum() > 0


def test_without_sessions_the_trace_is_unchanged():
    p = pool()
    plain = generate_table(p, seed=7)
    assert "session_id" not in plain.schema.names
    assert plain.equals(generate_table(p, seed=7, sessions=None))


@pytest.mark.skipif(not HAVE_NUMBA_CUDA, reason="numba-cuda is not installed")
def test_cuda_simulator_equals_cpu():
    # The simulator runs every CUDA thread as a Python thread, so the block-id check covers 64-token
    # blocks of 200 rows (ids are row-local): minutes on a loaded host otherwise.
    code = ("import numpy as np, test_sessions as S\n"
            "from servegen_fast.io.blocks import BlockSpec, hash_ids, block_offsets, _columns\n"
            "from servegen_fast.kernels import cuda_sessions as cs\n"
            "p = S.pool(rate=1.0, windows=6, clients=3)\n"
            "a = S.table(p, backend='cuda', session_stream=1); b = S.table(p, backend='cpu', session_stream=1)\n"
            "assert a.num_rows > 50 and a.equals(b), 'tables differ (stream 1)'\n"
            "a = S.table(p, backend='cuda'); b = S.table(p, backend='cpu')\n"
            "assert a.num_rows > 50 and a.equals(b), 'tables differ'\n"
            "sp = BlockSpec(7, 64, S.PROFILE); part = b.slice(b.num_rows - 200); h = hash_ids(part, sp)\n"
            "sid, cl, pid, inp = _columns(part)\n"
            "assert (np.asarray(S.sessions_of(part)['turn']) > 0).sum() > 20, 'too few later turns'\n"
            "g = cs.fill_block_ids(np.uint64(7), sid, cl, pid, sp.prefix_tokens(cl, pid), inp, np.int64(64),\n"
            "                      block_offsets(inp, 64))\n"
            "assert len(g) > 1000 and np.array_equal(g, h.values.to_numpy()), 'block ids differ'\n"
            "print('rows', a.num_rows)")
    p = _run_sim(code, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    assert int(p.stdout.split("rows")[-1]) > 50


def test_guided_table_search_equals_a_bisection():
    """The compiled kernels' guided search (kernels/session_bodies.py tab_index) gives the first
    entry whose cdf reaches u, capped at the table's last, as np.searchsorted does: on random
    tables with ties and zero-probability entries, at bucket edges, 1 and the smallest u."""
    from servegen_fast.kernels import cpu
    from servegen_fast.model.sessions import GUIDE_STEPS

    rng = np.random.default_rng(5)
    for n in (1, 2, 3, 7, 20, 256, 737):
        p = rng.random(n) * (rng.random(n) < 0.7)  # zero-probability entries: cdf ties
        p[rng.integers(n)] += 0.1
        cdf = np.cumsum(p) / p.sum()
        cdf[-1] = 1.0
        lo = 3  # a table inside a longer array, as SessionTables lays them out
        full = np.concatenate([np.zeros(lo), cdf])
        guide = np.zeros(GUIDE_STEPS * len(full), np.int32)
        guide[GUIDE_STEPS * lo:] = np.searchsorted(cdf, np.arange(GUIDE_STEPS * n) / (GUIDE_STEPS * n), side="left")
        m = GUIDE_STEPS * n
        us = np.concatenate([rng.random(2000), np.arange(1, m + 1) / m, np.nextafter(np.arange(1, m + 1) / m, 0),
                             cdf, np.nextafter(cdf, 0), [2.0 ** -32, 1.0]])
        us = us[(us > 0) & (us <= 1)]
        want = lo + np.minimum(np.searchsorted(cdf, us, side="left"), n - 1)
        got = np.array([cpu._S.tab_index(full, guide, lo, lo + n, u) for u in us])
        assert np.array_equal(got, want), n


# --------------------------------------------------------------------------- model
@pytest.mark.parametrize("stream", STREAMS)
def test_context_growth_timing_and_blocks_are_exact(stream):
    t = table(session_stream=stream)
    s = sessions_of(t)
    prof = load_profiles(PROFILE).default
    same = s["session_id"][1:] == s["session_id"][:-1]
    i = np.flatnonzero(same)  # i -> i + 1 is turn t -> t + 1 of one session
    assert len(i) > 500
    assert np.array_equal(s["turn"][i + 1], s["turn"][i] + 1)
    new = s["input_tokens"][i + 1].astype(np.int64) - s["input_tokens"][i] - s["output_tokens"][i]
    assert set(np.unique(new)) <= set(prof.new_tokens[0].astype(int))
    think = s["think_time"][i + 1].astype(np.float64)
    assert set(np.unique(think)) <= set(prof.think_time[0])
    gap = s["timestamp"][i + 1] - s["timestamp"][i]
    np.testing.assert_allclose(gap, 0.3 + 0.01 * s["output_tokens"][i] + think, rtol=0, atol=1e-6)
    assert (s["prefix_id"][i + 1] == s["prefix_id"][i]).all()
    assert (s["think_time"][s["turn"] == 0] == 0).all()
    # block ids: a turn's leading blocks are the previous turn's full input blocks
    for bs in (16, 512):
        order = np.lexsort((t.column("turn").to_numpy(), t.column("session_id").to_numpy()))
        h = hash_ids(t.take(order), BlockSpec(7, bs, PROFILE))
        off, ids = h.offsets.to_numpy(), h.values.to_numpy()
        for j in i[:400]:
            full = int(s["input_tokens"][j]) // bs
            nxt = ids[off[j + 1]:off[j + 2]]
            assert np.array_equal(nxt[:full], ids[off[j]:off[j] + full])
            assert len(nxt) == math.ceil(s["input_tokens"][j + 1] / bs)
            assert not np.isin(nxt[full + 1:], ids[off[j]:off[j + 1]]).any()


@pytest.mark.parametrize("stream", STREAMS)
def test_shared_prompts_share_blocks_within_a_client_only(stream):
    t = table(session_stream=stream)
    s = sessions_of(t)
    spec = BlockSpec(7, 64, PROFILE)
    order = np.lexsort((t.column("turn").to_numpy(), t.column("session_id").to_numpy()))
    h = hash_ids(t.take(order), spec)
    first = s["turn"] == 0
    tokens = np.array([700, 1500, 64, 2048])
    checked = 0
    for c in np.unique(s["client_id"])[:3]:
        for pid in range(4):
            rows = np.flatnonzero(first & (s["client_id"] == c) & (s["prefix_id"] == pid))
            rows = rows[s["input_tokens"][rows] >= tokens[pid]][:2]
            if len(rows) < 2:
                continue
            nb = tokens[pid] // 64
            a, b = (h[int(r)].values.to_numpy() for r in rows)
            assert np.array_equal(a[:nb], b[:nb])
            assert len(a) == nb or len(b) == nb or a[nb] != b[nb]
            checked += 1
    assert checked >= 6
    with_prompt = first & (s["prefix_id"] >= 0)
    assert (s["input_tokens"][with_prompt] >= tokens[s["prefix_id"][with_prompt]]).all()
    # different clients never share a block
    by_client = {}
    for c in np.unique(s["client_id"]):
        rows = np.flatnonzero(s["client_id"] == c)
        by_client[c] = set(np.concatenate([h[int(r)].values.to_numpy() for r in rows[:200]]).tolist())
    cs = list(by_client)
    assert all(not (by_client[a] & by_client[b]) for a in cs for b in cs if a < b)


@pytest.mark.parametrize("stream", STREAMS)
def test_turns_think_times_and_prefix_popularity_follow_the_profile(stream):
    p = pool(rate=20.0, windows=60, clients=2)
    t = table(p, session_stream=stream)
    s = sessions_of(t)
    prof = load_profiles(PROFILE).default
    # sessions that start in the first half are complete (max session span < 8 * (0.3 + 0.01*5000 + 90) s)
    starts = (s["turn"] == 0) & (s["timestamp"] < 1800 - 8 * 141)
    in_first = np.isin(s["session_id"], s["session_id"][starts])
    _, n_turns = np.unique(s["session_id"][in_first], return_counts=True)
    v, pr = prof.all_turns()
    exp = np.array([pr[v == k].sum() for k in (1, 2, 3, 5, 9)])
    got = np.array([(n_turns == k).mean() for k in (1, 2, 3, 5, 9)])
    assert (n_turns != 1).sum() > 1000 and np.isin(n_turns, [1, 2, 3, 5, 9]).all()
    n = len(n_turns)
    assert np.all(np.abs(got - exp) < 5 * np.sqrt(exp * (1 - exp) / n) + 1e-9)  # 5-sigma binomial bands
    think = s["think_time"][s["turn"] > 0]
    tv, tp = prof.think_time
    got = np.array([(think == x).mean() for x in tv])
    assert np.all(np.abs(got - tp) < 5 * np.sqrt(tp * (1 - tp) / len(think)))
    # prefixes: share 0.7 of sessions, Zipf(1.2) over the four prompts
    pid = s["prefix_id"][s["turn"] == 0]
    m = len(pid)
    assert abs((pid >= 0).mean() - 0.7) < 5 * math.sqrt(0.21 / m)
    w = 1 / np.arange(1, 5) ** 1.2
    w /= w.sum()
    got = np.bincount(pid[pid >= 0], minlength=4) / (pid >= 0).sum()
    assert np.all(np.abs(got - w) < 5 * np.sqrt(w * (1 - w) / (pid >= 0).sum()))
    # the share of requests in multi-turn sessions
    share = 1 - (n_turns == 1).sum() / n_turns.sum()
    assert abs(share - 0.6) < 0.03


def test_stream_2_prehistory_has_the_sessions_in_progress_of_stream_1():
    """Stream 2's pre-history draws only multi-turn sessions (turns conditioned on > 1, at
    rate x P(turns > 1) / E[turns]); the sessions in progress at time 0 (later turns whose
    first is before the trace) must come as often as stream 1's thinned slots give them."""
    p = pool(rate=20.0, windows=60, clients=2)
    got = {}
    for stream in STREAMS:
        s = sessions_of(table(p, session_stream=stream))
        orphan = ~np.isin(s["session_id"], s["session_id"][s["turn"] == 0])
        got[stream] = (len(np.unique(s["session_id"][orphan])), int(orphan.sum()))
    (n1, r1), (n2, r2) = got[1], got[2]
    assert n1 > 500 and abs(n2 - n1) < 5 * math.sqrt(n1 + n2)  # about 640 each: Poisson, 5 sigma
    assert abs(r2 - r1) < 0.15 * r1  # their rows (about 1,700): sessions clump turns


@pytest.mark.parametrize("stream", STREAMS)
def test_rates_keep_their_meaning(stream):
    p = pool(rate=20.0, windows=60, clients=2)
    plain = generate_table(p, seed=3)
    with_s = table(p, seed=3, session_stream=stream)
    # turns of sessions started near the end fall past it: about rate x the mean session span short
    assert 0.93 * plain.num_rows < with_s.num_rows <= 1.01 * plain.num_rows
    # per client too (about 36,000 and 72,000 requests; a count's sd is about 1%, sessions clump turns)
    ca, a = np.unique(plain.column("client_id").to_numpy(), return_counts=True)
    cb, b = np.unique(with_s.column("client_id").to_numpy(), return_counts=True)
    assert np.array_equal(ca, cb) and len(a) == 2 and a.min() > 30000
    assert np.all((0.93 * a < b) & (b <= 1.03 * a))


# --------------------------------------------------------------------------- bad input
def test_bad_input_errors():
    p = pool()
    with pytest.raises(ValueError, match="block_size"):
        table(p, block_size=0)
    bad = dict(PROFILE, clients={"99999": PROFILE["default"]})
    with pytest.raises(ProfileError, match=r"does not match the pool: clients \[99999\]"):
        table(p, sessions=bad)
    broken = {**PROFILE, "default": {**PROFILE["default"], "turns": {"values": [1, 2], "probs": [0.5, 0.5]}}}
    with pytest.raises(ProfileError, match="turns values must be >= 2"):
        table(p, sessions=broken)
    with pytest.raises(ProfileError, match="no such file"):
        table(p, sessions="/nonexistent/profile.json")
    with pytest.raises(ProfileError, match="not a session profile"):
        SessionProfiles.from_dict({"default": {}})
    with pytest.raises(ValueError, match=r"session_stream \(--session-stream\) must be one of \[1, 2\]"):
        table(p, session_stream=3)


def test_cli_generate_with_sessions(tmp_path):
    prof = tmp_path / "p.json"
    import json
    prof.write_text(json.dumps(PROFILE))
    out = tmp_path / "t.parquet"
    cmd = [sys.executable, "-m", "servegen_fast.cli", "generate", "--duration", "1200", "--rate", "5", "-o", str(out),
           "--sessions", str(prof), "--block-size", "16", "-q"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    from servegen_fast.io.trace import read_trace, trace_metadata
    t = read_trace(out)
    meta = trace_metadata(out)
    assert meta["sessions"]["block_size"] == 16 and (t.column("turn").to_numpy() > 0).any()
    assert meta["session_stream"] == 2  # the default; stream 1 traces carry no such key
    r = subprocess.run(cmd[:-5] + ["--block-size", "0"], capture_output=True, text=True)
    assert r.returncode != 0 and "--block-size" in r.stderr


def test_memory_stays_bounded_by_the_max_span(monkeypatch):
    """The carry of later turns never holds more than max_span seconds of requests, and no turn
    lands more than max_span after its session's first."""
    from servegen_fast.sample import sessions as SS

    prof = {**PROFILE, "default": {**PROFILE["default"], "max_span": 90.0}}
    seen = []
    orig = SS.SessionExpander.process

    def spy(self, *a, **kw):
        out = orig(self, *a, **kw)
        seen.append(0 if self.carry is None else len(self.carry["timestamp"]))
        return out

    monkeypatch.setattr(SS.SessionExpander, "process", spy)
    p = pool(rate=20.0, windows=60, clients=2)
    t = table(p, sessions=prof, chunk_bytes=20000)
    rate = t.num_rows / 3600
    assert len(seen) > 20 and max(seen) < rate * 90
    s = sessions_of(t)
    first = {sid: ts for sid, ts, turn in zip(s["session_id"], s["timestamp"], s["turn"]) if turn == 0}
    lag = [ts - first[sid] for sid, ts, turn in zip(s["session_id"], s["timestamp"], s["turn"]) if sid in first]
    assert max(lag) <= 90.0 + 1e-9
