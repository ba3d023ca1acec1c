"""Replay of traces with sessions (issue 14): prompts keyed by block content ids (a turn's prompt
is the previous turn's prompt + its output as the trace counts it + new blocks), closed-loop
releases in both replayers (never before the previous turn's completion + think time),
cached prompt tokens reported by the test server and `servegen-fast serve` equal to the ones
expected from the trace's block ids, per-session results, and open loop unchanged.

The trace is written by hand so the reuse is known: client 0 has session A (three turns, no
shared prompt) and sessions B and C, which start from the same 64-token shared prompt."""
from __future__ import annotations

import json
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pytest

from servegen_fast.io.blocks import BlockSpec, content_ids, hash_ids
from servegen_fast.io.content import block_words
from servegen_fast.io.export import export_trace
from servegen_fast.io.trace import trace_schema, write_trace
from servegen_fast.replay import make_plan, read_requests, summarize
from servegen_fast.replay.api import replay_http
from servegen_fast.replay.local.loop import run
from servegen_fast.replay.prompts import text_prompt, token_prompt
from servegen_fast.replay.timing import Releases
from servegen_fast.testing.fake_server import FakeServer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_http_replay import model_server  # noqa: E402,F401 - the `servegen-fast serve` fixture

PROFILE = {"format": "servegen-fast-sessions", "version": 1, "source": "test",
           "default": {"session_share": 0.6, "turns": {"values": [2, 3], "probs": [0.5, 0.5]},
                       "think_time": {"values": [0.1], "probs": [1.0]},
                       "new_tokens": {"values": [30], "probs": [1.0]},
                       "prefix_share": 0.5, "prefixes": {"tokens": [700, 1500, 64, 2048], "zipf": 1.2},
                       "service": {"ttft": 0.01, "tpot": 0.001}}}
SEED, BS = 5, 16
# (timestamp, session, turn, think, prefix, input, output): input of turn k+1 = input k + output k + new
ROWS = [(0.00, 100, 0, 0.0, None, 40, 10),
        (0.05, 200, 0, 0.0, 2, 100, 7),
        (0.30, 300, 0, 0.0, 2, 90, 5),
        (0.40, 100, 1, 0.12, None, 80, 6),  # 40 + 10 + 30
        (0.45, 200, 1, 0.08, 2, 127, 3),  # 100 + 7 + 20
        (0.75, 100, 2, 0.15, None, 99, 4)]  # 80 + 6 + 13


def session_trace() -> pa.Table:
    meta = {"seed": SEED, "sessions": {"profiles": PROFILE, "block_size": BS}}
    schema = trace_schema("language", ("input_tokens", "output_tokens"), metadata=meta, sessions=True)
    c = list(zip(*ROWS))
    return pa.table({"timestamp": np.array(c[0]), "client_id": np.zeros(len(ROWS), np.uint32),
                     "input_tokens": np.array(c[5], np.uint32), "output_tokens": np.array(c[6], np.uint32),
                     "session_id": np.array(c[1], np.uint64), "turn": np.array(c[2], np.uint16),
                     "think_time": np.array(c[3], np.float32), "prefix_id": pa.array(c[4], pa.uint32())},
                    schema=schema)


def by_session(table) -> dict:
    """{session: [plan positions in turn order]}."""
    sid, turn = np.asarray(table["session_id"]), np.asarray(table["turn"])
    return {int(s): [int(i) for i in np.flatnonzero(sid == s)[np.argsort(turn[sid == s])]] for s in np.unique(sid)}


# --------------------------------------------------------------------------- prompts
@pytest.mark.parametrize("vocab", [1024, 128256])
def test_next_turn_prompt_is_previous_prompt_then_output_then_new(vocab):
    plan = make_plan(session_trace())
    assert plan.closed_loop and plan.block_ids is not None
    for kind in ("tokens", "text"):
        def prompt(k):
            n = int(plan.input_tokens[k])
            if kind == "tokens":
                return token_prompt(SEED, plan.prompt(k), n, vocab).tolist()
            return text_prompt(SEED, plan.prompt(k), n).split()
        for turns in by_session({"session_id": plan.session_id, "turn": plan.turn}).values():
            for a, b in zip(turns, turns[1:]):
                pa_, pb = prompt(a), prompt(b)
                assert len(pa_) == plan.input_tokens[a] and len(pb) == plan.input_tokens[b]
                assert pb[:len(pa_)] == pa_  # exactly the previous prompt ...
                assert len(pb) >= len(pa_) + plan.output_tokens[a]  # ... then its output, then new blocks
        # the shared 64-token prompt: equal blocks, equal content; then the sessions differ
        b0, c0 = prompt(1), prompt(2)
        assert b0[:64] == c0[:64] and b0[64:80] != c0[64:80]
        assert prompt(0)[:16] != b0[:16]


def test_equal_block_ids_give_equal_tokens_and_export_uses_the_same_words(tmp_path):
    t = session_trace()
    spec = BlockSpec.from_metadata(json.loads(t.schema.metadata[b"servegen_fast"]))
    ids = content_ids(t, spec)
    plain = hash_ids(t, spec)
    # content ids are the block ids with the last block taken as full: equal on every full block
    for r in range(t.num_rows):
        a, b = ids[r].values.to_numpy(), plain[r].values.to_numpy()
        full = int(t["input_tokens"][r].as_py()) // BS
        assert len(a) == len(b) and np.array_equal(a[:full], b[:full])
    # the vLLM export's words are text replay's words (one implementation: io/content.py)
    path = tmp_path / "t.arrow"
    write_trace(t.to_batches(), path, t.schema)
    export_trace(path, "vllm", tmp_path / "v.jsonl")
    rows = [json.loads(x) for x in (tmp_path / "v.jsonl").read_text().splitlines()]
    plan = make_plan(t)
    for r, row in enumerate(rows):
        n = int(t["input_tokens"][r].as_py())
        assert row["prompt"] == block_words(ids[r].values.to_numpy(), BS, n) == text_prompt(0, plan.prompt(r), n)


# --------------------------------------------------------------------------- release order
def test_releases_closed_loop_unit():
    t = session_trace()
    plan = make_plan(t)
    rel = Releases(plan.scheduled, closed=True, session_id=plan.session_id, turn=plan.turn,
                   think_time=plan.think_time, think_scale=0.5)
    assert [rel.next()] == [0]
    order = []
    for _ in range(3):  # the three first turns, in trace order
        i = rel.next()
        order.append(i)
        rel.take(i)
    assert order == [0, 1, 2] and rel.next() is None  # later turns wait on their previous turn
    assert rel.ended(0, 1.0) == pytest.approx(1.0 + 0.5 * 0.12)
    assert rel.next() == 3 and rel.scheduled[3] == pytest.approx(1.06)
    assert rel.ended(2, 0.5) is None  # a single-turn session: nothing follows
    assert rel.ended(1, 0.2) == pytest.approx(0.2 + 0.04)
    assert rel.next() == 4  # due first
    open_ = Releases(plan.scheduled)
    assert [open_.next() for _ in range(1)] == [0] and np.array_equal(open_.scheduled, plan.scheduled)


def check_closed_loop(tab: pa.Table, time_scale: float = 1.0) -> None:
    col = {n: tab.column(n).to_numpy(zero_copy_only=False) for n in
           ("session_id", "turn", "released", "completed", "scheduled", "status", "arrival")}
    think = dict(((s, k), th) for _, s, k, th, *_ in ROWS)
    assert list(col["status"]) == ["completed"] * tab.num_rows
    for turns in by_session(col).values():
        assert col["scheduled"][turns[0]] == pytest.approx(col["arrival"][turns[0]] * time_scale)
        for a, b in zip(turns, turns[1:]):
            due = col["completed"][a] + think[(int(col["session_id"][b]), int(col["turn"][b]))] * time_scale
            assert col["scheduled"][b] == pytest.approx(due, abs=1e-5)
            assert col["released"][b] >= col["completed"][a] + think[(int(col["session_id"][b]),
                                                                      int(col["turn"][b]))] * time_scale - 1e-5
    assert np.all(col["released"] >= col["scheduled"] - 1e-9)


class _DelayEngine:
    """A stand-in engine (for the release loop only): each request ends 30 ms after it is added."""

    def __new__(cls, vocab=1024):
        from servegen_fast.replay.local.engine import Completion, Engine, EngineInfo
        from servegen_fast.replay.timing import CLOCK

        class E(Engine):
            def __init__(self):
                self.info = EngineInfo("delay", "-", "cpu", "-", {"vocab_size": vocab})
                self.prompts, self.live = {}, []

            def start(self):
                pass

            def add(self, rid, prompt_ids, output_tokens):
                self.prompts[rid] = list(prompt_ids)
                self.live.append((CLOCK() + 0.03, rid, output_tokens))

            def poll(self, timeout):
                import time

                if not self.live:
                    time.sleep(min(timeout, 0.005))
                    return []
                wait = max(0.0, min(self.live)[0] - CLOCK())
                if wait > timeout:
                    time.sleep(timeout)
                    return []
                time.sleep(wait)
                now = CLOCK()
                done = [x for x in self.live if x[0] <= now]
                self.live = [x for x in self.live if x[0] > now]
                return [Completion(rid, n, first_token=t, completed=t) for t, rid, n in done]

            def stop(self, abandon=False):
                return []
        return E()


def test_on_device_loop_closed_loop_and_prompts():
    plan = make_plan(session_trace())
    eng = _DelayEngine()
    rec = run(eng, plan, seed=SEED)
    from servegen_fast.replay.results import request_table

    check_closed_loop(request_table(rec, {}))
    for turns in by_session({"session_id": plan.session_id, "turn": plan.turn}).values():
        for a, b in zip(turns, turns[1:]):
            pa_, pb = eng.prompts[int(plan.row[a])], eng.prompts[int(plan.row[b])]
            assert pb[:len(pa_)] == pa_ and len(pb) == plan.input_tokens[b]


# --------------------------------------------------------------------------- HTTP, the test server
EXPECTED_CACHED = {0: 0, 1: 0, 2: 64, 3: 32, 4: 96, 5: 80}  # by trace row, block size 16, unbounded cache


@pytest.mark.parametrize("api", ["completions", "chat"])
def test_http_closed_loop_cached_tokens_equal_expected(tmp_path, api):
    with FakeServer("ok", cache_tokens=1 << 20, cache_block_size=BS) as url:
        s = replay_http(session_trace(), tmp_path / "out", target=url, api=api, seed=SEED, slo_ttft=5.0)
    tab = read_requests(tmp_path / "out")
    check_closed_loop(tab)
    rows = tab.column("request").to_pylist()
    cached = tab.column("cached_tokens").to_pylist()
    expected = tab.column("expected_cached_tokens").to_pylist()
    assert cached == expected == [EXPECTED_CACHED[r] for r in rows]
    pc = s["prefix_cache"]
    assert pc["reported"]["hit_ratio"] == pc["expected"]["hit_ratio"] == pytest.approx(272 / 536)
    ss = s["sessions"]
    assert (ss["sessions"], ss["completed"], ss["unfinished"], ss["multi_turn"]) == (3, 3, 0, 2)
    assert ss["ttlt"]["count"] == 3 and ss["goodput"]["sessions"] == 3
    with ipc.open_file(tmp_path / "out" / "sessions.arrow") as f:
        st = f.read_all()
    assert st.column("turns").to_pylist() == [3, 2, 1] and st.column("status").to_pylist() == ["completed"] * 3
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["sessions"] == \
        summarize(tab, slo_ttft=5.0)["sessions"]


def test_http_prompts_at_the_server_extend_the_previous_turn(tmp_path):
    srv = FakeServer("ok", cache_tokens=1 << 20)
    with srv as url:
        replay_http(session_trace(), tmp_path / "out", target=url, seed=SEED, vocab=1024)
    t = session_trace()
    for turns in by_session({"session_id": np.asarray(t["session_id"]), "turn": np.asarray(t["turn"])}).values():
        for a, b in zip(turns, turns[1:]):
            pa_, pb = srv.prompts[a], srv.prompts[b]
            assert pb[:len(pa_)] == pa_ and len(pb) == len(pa_) + ROWS[a][6] + (ROWS[b][5] - ROWS[a][5] - ROWS[a][6])


def test_open_loop_unchanged(tmp_path):
    with FakeServer("ok", cache_tokens=1 << 20) as url:
        replay_http(session_trace(), tmp_path / "open", target=url, release="open", time_scale=0.5)
    tab = read_requests(tmp_path / "open")
    assert np.array_equal(tab.column("scheduled").to_numpy(), tab.column("arrival").to_numpy() * 0.5)
    assert np.all(tab.column("lateness").to_numpy() >= 0)
    meta = json.loads(tab.schema.metadata[b"servegen_fast_replay"])
    assert meta["options"]["release"] == "open"
    # a trace without sessions: open loop, no session columns
    plain = session_trace().drop(["session_id", "turn", "think_time", "prefix_id"])
    plan = make_plan(plain, time_scale=2.0)
    assert not plan.closed_loop and plan.session_id is None
    assert np.array_equal(plan.scheduled, plain.column("timestamp").to_numpy() * 2.0)
    with pytest.raises(ValueError, match="closed-loop release needs sessions"):
        make_plan(plain, release="closed")


def test_failed_turns_leave_sessions_unfinished_and_keep_completed_ones(tmp_path):
    # mixed: request ids (trace rows) 1, 2 fail (500, closed), 3 stalls until the timeout
    with FakeServer("mixed") as url:
        s = replay_http(session_trace(), tmp_path / "out", target=url, timeout=1.0)
    tab = read_requests(tmp_path / "out")
    status = dict(zip(tab.column("request").to_pylist(), tab.column("status").to_pylist()))
    assert status[0] == status[4] == status[5] == "completed"
    assert status[1] == status[2] == status[3] == "failed"
    with ipc.open_file(tmp_path / "out" / "sessions.arrow") as f:
        st = f.read_all().to_pydict()
    assert st["status"] == ["unfinished"] * 3 and st["turns_completed"] == [2, 1, 0]
    assert s["sessions"]["unfinished"] == 3 and s["sessions"]["completed"] == 0


# --------------------------------------------------------------------------- the tiny-model server
def test_serve_reports_cached_tokens_equal_expected(model_server, tmp_path):
    s = replay_http(session_trace(), tmp_path / "out", target=model_server, seed=SEED, timeout=120.0)
    with urllib.request.urlopen(model_server + "/v1/models", timeout=30) as r:
        info = json.loads(r.read())["data"][0]
    tab = read_requests(tmp_path / "out")
    check_closed_loop(tab)
    assert info["cache_block_size"] == 16 and info["kv_cache_tokens"] > 1000
    rows = tab.column("request").to_pylist()
    assert tab.column("cached_tokens").to_pylist() == tab.column("expected_cached_tokens").to_pylist() == \
        [EXPECTED_CACHED[r] for r in rows]
    assert s["counts"]["wrong_length"] == 0 and s["sessions"]["completed"] == 3


def test_prefix_cache_is_an_lru_of_blocks():
    from servegen_fast.kernels.cache import lru_hits_reference
    from servegen_fast.replay.cache import PrefixCache

    ids = np.random.default_rng(3).zipf(1.3, 4000) % 500
    for cap in (8, 64, 1000):
        c = PrefixCache(16, cap)
        hits = sum(c.admit([int(x)], 17) for x in ids) // 16  # one full block per request (+1 token)
        assert hits == lru_hits_reference(ids, cap)
    c = PrefixCache(16, None)
    assert c.admit([1, 2, 3], 48) == 0 and c.admit([1, 2, 3], 48) == 32  # the last token is always computed
    assert c.admit([1, 9, 3], 64) == 16  # a prefix: stops at the first miss


@pytest.mark.parametrize("api", ["completions", "chat"])
def test_sender_bodies_built_from_the_previous_turn_equal_full_builds(api):
    """The HTTP sender encodes a later turn as the previous turn's prompt + the rest: same bytes."""
    from servegen_fast.replay.http.options import HttpOptions
    from servegen_fast.replay.http.sender import Sender
    from servegen_fast.replay.plan import part_prompt

    plan = make_plan(session_trace())
    o = HttpOptions(target="http://127.0.0.1:9", api=api, vocab=1024)
    o.validate()
    s = Sender(plan.part(np.arange(len(plan))), o, {"model": "m"}, 4, lambda: False)
    for i in (0, 1, 2, 3, 4, 5):  # release order of each session's turns
        body = s.build(part_prompt(s.part, i), int(s.inp[i]), int(s.out_tokens[i]))
        assert s._data(i).endswith(body)
    assert not s._prompts.kept  # every session's last turn built: nothing kept


def test_cli_closed_loop_with_a_small_server_cache(tmp_path):
    """The CLI path; a server cache of 4 blocks evicts, and the expectation (its capacity taken from
    /v1/models) evicts the same blocks: equal counts, fewer hits than unbounded."""
    from servegen_fast import cli

    trace = tmp_path / "t.parquet"
    t = session_trace()
    write_trace(t.to_batches(), trace, t.schema)
    with FakeServer("ok", cache_tokens=64, cache_block_size=BS) as url:
        rc = cli.main(["replay", str(trace), "--target", url, "--output", str(tmp_path / "out"), "--quiet",
                       "--release", "closed", "--seed", str(SEED)])
    assert rc == 0
    tab = read_requests(tmp_path / "out")
    check_closed_loop(tab)
    cached, expected = tab.column("cached_tokens").to_pylist(), tab.column("expected_cached_tokens").to_pylist()
    assert cached == expected
    assert sum(expected) < sum(EXPECTED_CACHED.values())
    meta = json.loads(tab.schema.metadata[b"servegen_fast_replay"])
    assert meta["prefix_cache_model"] == {"block_size": BS, "kv_cache_tokens": 64}


def test_ctrl_c_keeps_completed_turns_and_marks_unfinished_sessions(tmp_path):
    import os
    import signal
    import threading

    timer = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT))
    with FakeServer("ok") as url:
        timer.start()
        try:
            s = replay_http(session_trace(), tmp_path / "out", target=url, time_scale=2.0)
        finally:
            timer.cancel()
    assert s["complete"] is False
    tab = read_requests(tmp_path / "out")
    status = np.asarray(tab.column("status").to_pylist())
    assert (status == "completed").sum() >= 1 and (status != "completed").sum() >= 1
    assert np.all(np.isfinite(tab.column("completed").to_numpy()[status == "completed"]))
    with ipc.open_file(tmp_path / "out" / "sessions.arrow") as f:
        st = f.read_all().to_pydict()
    sid = np.asarray(tab.column("session_id").to_pylist())
    for k, sess in enumerate(st["session_id"]):
        done = bool(np.all(status[sid == sess] == "completed"))
        assert st["status"][k] == ("completed" if done else "unfinished")
        assert st["turns_completed"][k] == int((status[sid == sess] == "completed").sum())
    assert s["sessions"]["unfinished"] >= 1


def test_usage_cached_tokens_parsed_vllm_and_sglang_style():
    from servegen_fast.replay.http.stream import _Req

    for usage, want in (({"prompt_tokens": 40, "completion_tokens": 2, "prompt_tokens_details": {"cached_tokens": 32}},
                         32), ({"prompt_tokens": 40, "completion_tokens": 2, "cached_tokens": 16}, 16),
                        ({"prompt_tokens": 40, "completion_tokens": 2}, None)):
        r = _Req(0, False)
        r.on_head(200, b"text/event-stream")
        r.feed(b'data: {"choices":[],"usage":' + json.dumps(usage).encode() + b"}\n\ndata: [DONE]\n\n", 1.0)
        assert r.usage_cached == want and r.usage_in == 40
