"""HTTP replay (servegen_fast.replay.http) over loopback: against the real model server
(`servegen-fast serve`, the tiny random model through transformers' continuous batching) and
against the instant fake server with injected faults (500s, closed connections, stalls).
No tight timing assertions: releases never early, lateness recorded, client times ordered
against the server's own stamps (same machine, same monotonic clock), timeouts within a
generous bound."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from servegen_fast import cli
from servegen_fast.replay import read_requests, summarize
from servegen_fast.testing.fake_server import MIXED, FakeServer
from servegen_fast.replay.http.stream import HEAD, _Framing, _Req
from servegen_fast.replay.http.bodies import BodyBuilder, resolve_prompt_kind
from servegen_fast.replay.prompts import WORDS, text_prompt, token_prompt
from servegen_fast.replay.api import replay_http
from servegen_fast.replay.results import META_KEY
from servegen_fast.io.trace import trace_schema, write_trace

pytest.importorskip("aiohttp")
ROOT = Path(__file__).resolve().parent.parent


def make_trace(n=24, span=1.5, seed=5, max_in=60, max_out=10) -> pa.Table:
    rng = np.random.default_rng(seed)
    cols = {"timestamp": np.sort(rng.uniform(0, span, n)), "client_id": rng.integers(0, 3, n).astype(np.uint32),
            "input_tokens": rng.integers(1, max_in, n).astype(np.uint32),
            "output_tokens": rng.integers(1, max_out, n).astype(np.uint32)}
    return pa.table(cols, schema=trace_schema("language", ("input_tokens", "output_tokens")))


def write(table: pa.Table, path: Path) -> Path:
    write_trace(table.to_batches(), path, table.schema)
    return path


@pytest.fixture(scope="module")
def model_server():
    """`servegen-fast serve --model tiny --port 0` in a subprocess; yields its URL, then stops it."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "servegen_fast.cli", "serve", "--model", "tiny", "--device", "cpu",
                             "--port", "0"], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env,
                            cwd=ROOT)
    url, lines = None, []
    deadline = time.monotonic() + 180
    for line in proc.stderr:
        lines.append(line)
        if line.startswith("listening on "):
            url = line.split()[-1]
            break
        if time.monotonic() > deadline:
            break
    if url is None:
        proc.kill()
        pytest.fail("the model server did not start:\n" + "".join(lines))
    try:
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stderr.close()


def server_timings(url: str) -> dict:
    import urllib.request

    with urllib.request.urlopen(url + "/debug/requests", timeout=30) as r:
        return json.loads(r.read())


# --------------------------------------------------------------------------- real model server
@pytest.fixture(scope="module")
def completions_run(model_server, tmp_path_factory):
    d = tmp_path_factory.mktemp("http")
    trace = write(make_trace(), d / "trace.parquet")
    rc = cli.main(["replay", str(trace), "--target", model_server, "--output", str(d / "out"), "--slo-ttft", "5s",
                   "--timeout", "60s", "--quiet"])
    assert rc == 0
    return d / "out", server_timings(model_server)


def test_every_request_completes_with_its_lengths(completions_run):
    out, _ = completions_run
    t = read_requests(out).to_pydict()
    tr = make_trace()
    n = tr.num_rows
    assert t["request"] == list(range(n)) and t["status"] == ["completed"] * n
    assert t["generated_tokens"] == t["output_tokens"] == tr.column("output_tokens").to_pylist()
    # token-id prompts: the server counts exactly the trace's input lengths
    assert t["server_input_tokens"] == t["input_tokens"] == tr.column("input_tokens").to_pylist()
    assert t["http_status"] == [200] * n and t["error"] == [None] * n and t["attempts"] == [1] * n
    assert [len(g) for g in t["itl"]] == [k - 1 for k in t["output_tokens"]]  # one event per token


def test_releases_never_early_and_consistent_with_server_timings(completions_run):
    out, timings = completions_run
    t = read_requests(out)
    d = t.to_pydict()
    meta = json.loads(t.schema.metadata[META_KEY])
    t0 = meta["clock"]["run_start"]
    sched, rel = np.array(d["scheduled"]), np.array(d["released"])
    np.testing.assert_allclose(sched, make_trace().column("timestamp").to_numpy())
    assert np.all(rel >= sched) and np.array_equal(np.array(d["lateness"]), rel - sched)
    for k, row in enumerate(d["request"]):
        s = timings[str(row)]  # the server's own stamps, same clock (perf_counter is system-wide)
        rel_abs, first_abs, done_abs = t0 + d["released"][k], t0 + d["first_token"][k], t0 + d["completed"][k]
        assert rel_abs <= s["arrival"] <= s["first_sent"] <= first_abs and s["first_token"] <= first_abs, (
            row, rel_abs, first_abs, s)
        assert s["completed"] <= done_abs and s["completion_tokens"] == d["generated_tokens"][k]
        assert d["ttft"][k] >= s["first_token"] - s["arrival"] and d["e2e"][k] >= s["completed"] - s["arrival"]
        assert first_abs - s["first_sent"] < 2.0 and done_abs - s["sent_all"] < 2.0  # generous: loopback
        assert d["e2e"][k] >= d["ttft"][k] > 0


def test_summary_agrees_with_the_request_file(completions_run):
    out, _ = completions_run
    t = read_requests(out)
    s = json.loads((out / "summary.json").read_text())
    assert s["complete"] is True and s["engine"]["name"] == "http" and s["engine"]["model"] == "tiny"
    assert s["counts"]["completed"] == t.num_rows and s["counts"]["wrong_length"] == 0 and s["errors"] == {}
    assert s == {**s, **summarize(t, 5.0, None, pa.ipc.open_file(out / "engine_stats.arrow").read_all())}
    gaps = np.concatenate([np.asarray(g, np.float64) for g in t.column("itl").to_pylist()])
    assert s["latency"]["itl"]["count"] == len(gaps) and s["latency"]["itl"]["max"] == pytest.approx(gaps.max())
    assert "itl" in (out / "summary.txt").read_text()


def test_chat_with_text_prompts(model_server, tmp_path):
    tr = make_trace(n=8, span=0.5, seed=9)
    s = replay_http(tr, tmp_path / "o", target=model_server, api="chat", timeout=60)
    d = read_requests(tmp_path / "o").to_pydict()
    assert s["counts"]["completed"] == 8 and d["generated_tokens"] == d["output_tokens"]
    # one word per token with the local server's tokenizer: the text prompts hit the lengths exactly
    assert d["server_input_tokens"] == d["input_tokens"]


def test_server_errors_are_recorded_per_request(model_server, tmp_path):
    tr = make_trace(n=6, span=0.3)
    s = replay_http(tr, tmp_path / "o", target=model_server, model_name="no-such-model", timeout=30)
    d = read_requests(tmp_path / "o").to_pydict()
    assert d["status"] == ["failed"] * 6 and d["http_status"] == [404] * 6 and s["errors"] == {"http_404": 6}
    assert all("does not exist" in e for e in d["error"])


# --------------------------------------------------------------------------- faults (instant fake server)
LOOPS = ["asyncio", pytest.param("uvloop", marks=pytest.mark.skipif(
    __import__("importlib").util.find_spec("uvloop") is None, reason="uvloop not installed"))]


@pytest.mark.parametrize("loop", LOOPS)
def test_faults_give_recorded_errors_not_a_hang(tmp_path, loop):
    n = 20
    tr = make_trace(n=n, span=0.5)
    t_start = time.monotonic()
    with FakeServer("mixed") as url:
        s = replay_http(tr, tmp_path / "o", target=url, timeout=1.0, loop=loop)
    assert s["options"]["loop"] == loop
    assert time.monotonic() - t_start < 30  # stalls end at the 1 s timeout, not in a hang
    d = read_requests(tmp_path / "o").to_pydict()
    want = {"ok": None, "error500": "http_500", "close": "connection_closed", "stall": "timeout"}
    for row, st, kind, err, e2e in zip(d["request"], d["status"], d["error_kind"], d["error"], d["e2e"]):
        mode = MIXED[row % len(MIXED)]
        assert kind == want[mode], (row, mode, st, err)
        assert st == ("completed" if mode == "ok" else "failed") and (err is None) == (mode == "ok")
    assert s["counts"]["completed"] + s["counts"]["failed"] == n  # every request accounted for
    assert s["errors"] == {"http_500": 4, "connection_closed": 4, "timeout": 4}
    stalled = [k for k, r in enumerate(d["request"]) if MIXED[r % 5] == "stall"]
    assert all(d["generated_tokens"][k] == 1 and np.isfinite(d["ttft"][k]) for k in stalled)  # partial stream kept
    assert all(1.0 <= d["e2e"][k] < 10.0 for k in stalled)  # failed at the timeout, not before, not much after
    assert "injected failure" in d["error"][d["request"].index(1)]


def test_retries_off_by_default_and_counted_when_on(tmp_path):
    tr = make_trace(n=4, span=0.2)
    with FakeServer("error500") as url:
        replay_http(tr, tmp_path / "a", target=url, timeout=5)
        replay_http(tr, tmp_path / "b", target=url, timeout=5, retries=2)
    a, b = read_requests(tmp_path / "a").to_pydict(), read_requests(tmp_path / "b").to_pydict()
    assert a["attempts"] == [1] * 4 and b["attempts"] == [3] * 4
    assert set(a["error_kind"]) == set(b["error_kind"]) == {"http_500"}
    with FakeServer("close_before") as url:
        replay_http(tr, tmp_path / "c", target=url, timeout=5, retries=1)
    c = read_requests(tmp_path / "c").to_pydict()
    assert set(c["error_kind"]) == {"connection_closed"} and all(x >= 2 for x in c["attempts"])


def test_server_dropping_kept_alive_connections_loses_nothing(tmp_path):
    n = 40
    tr = make_trace(n=n, span=0.4)
    with FakeServer("oneshot") as url:
        s = replay_http(tr, tmp_path / "o", target=url, timeout=10)
    d = read_requests(tmp_path / "o").to_pydict()
    assert d["status"] == ["completed"] * n and s["counts"]["released"] == n
    assert set(d["attempts"]) == {1}  # a resend on a connection closed under it is not a retry


def test_streamed_token_times(tmp_path):
    tr = make_trace(n=3, span=0.2, max_out=5)
    delay = 0.05
    with FakeServer("slow", delay=delay) as url:
        replay_http(tr, tmp_path / "o", target=url, timeout=30)
    d = read_requests(tmp_path / "o").to_pydict()
    assert d["status"] == ["completed"] * 3 and d["generated_tokens"] == d["output_tokens"]
    for ttft, e2e, n, gaps in zip(d["ttft"], d["e2e"], d["output_tokens"], d["itl"]):
        assert ttft >= delay * 0.9 and e2e >= n * delay * 0.9  # tokens cannot arrive before they are sent
        assert len(gaps) == n - 1 and sum(gaps) == pytest.approx(e2e - ttft, abs=1e-5)


def test_connection_limit_holds_and_shows_as_lateness(tmp_path):
    tr = make_trace(n=6, span=0.01, max_out=4)
    srv = FakeServer("slow", delay=0.05)
    with srv as url:
        s = replay_http(tr, tmp_path / "o", target=url, concurrency=2, timeout=30)
    d = read_requests(tmp_path / "o").to_pydict()
    assert d["status"] == ["completed"] * 6 and s["counts"]["released"] == 6
    assert srv.requests == 7 and srv.peak_connections <= 3  # 6 + GET /v1/models; 2 + the probe's, closed early
    # 6 requests due within 10 ms, 2 connections, each response >= 50 ms: the last ones wait for a connection
    late = np.array(d["lateness"])
    assert np.all(late >= 0) and late.max() >= 0.05


def test_workers_partition_and_merge(tmp_path):
    n = 60
    tr = make_trace(n=n, span=1.0, max_out=30)
    with FakeServer("ok", max_events=8) as url:
        s = replay_http(tr, tmp_path / "o", target=url, workers=2, timeout=30)
    d = read_requests(tmp_path / "o").to_pydict()
    assert d["request"] == list(range(n)) and d["status"] == ["completed"] * n
    assert d["generated_tokens"] == [min(k, 8) for k in d["output_tokens"]]  # the fake server caps at 8
    rel, sched = np.array(d["released"]), np.array(d["scheduled"])
    assert np.all(rel >= sched) and s["options"]["workers"] == 2


def test_sigint_writes_results_so_far_marked_incomplete(tmp_path):
    trace = write(make_trace(n=30, span=60.0), tmp_path / "long.parquet")
    out = tmp_path / "out"
    with FakeServer("ok") as url:
        proc = subprocess.Popen([sys.executable, "-m", "servegen_fast.cli", "replay", str(trace), "--target", url,
                                 "-o", str(out)], stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                env=dict(os.environ, PYTHONUNBUFFERED="1"), cwd=ROOT)
        deadline = time.monotonic() + 60
        for line in proc.stderr:
            if line.startswith("replay started") or time.monotonic() > deadline:
                break
        time.sleep(3.0)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    s = json.loads((out / "summary.json").read_text())
    assert s["complete"] is False and "INCOMPLETE" in (out / "summary.txt").read_text()
    c = s["counts"]
    assert 0 < c["released"] < 30 and c["not_released"] == 30 - c["released"]
    assert c["completed"] + c["failed"] + c["abandoned"] == c["released"]


# --------------------------------------------------------------------------- edges
def test_clear_errors(tmp_path, capsys):
    trace = write(make_trace(), tmp_path / "t.parquet")
    rc = cli.main(["replay", str(trace), "--target", "http://127.0.0.1:9", "-o", str(tmp_path / "o"), "-q"])
    assert rc == 2 and "does not answer" in capsys.readouterr().err and not (tmp_path / "o").exists()
    rc = cli.main(["replay", str(trace), "--target", "ftp://x", "-o", str(tmp_path / "o"), "-q"])
    assert rc == 2 and "http:// or https://" in capsys.readouterr().err
    mm = make_trace()
    mm = mm.append_column("image_tokens", pa.array([[16]] + [[]] * (mm.num_rows - 1), pa.list_(pa.uint32())))
    with pytest.raises(ValueError, match="multimodal"):
        replay_http(mm, tmp_path / "o", target="http://127.0.0.1:9")
    with pytest.raises(ValueError, match="completions API"):
        replay_http(make_trace(), tmp_path / "o", target="http://127.0.0.1:9", api="chat", prompt="tokens")


def test_prompts_and_bodies():
    a = token_prompt(0, 7, 50, 32000)
    assert np.array_equal(a, token_prompt(0, 7, 50, 32000)) and not np.array_equal(a, token_prompt(0, 8, 50, 32000))
    assert len(a) == 50 and a.min() >= 1000 and a.max() < 32000
    small = token_prompt(0, 1, 300, 64)
    assert small.max() < 64 and small.min() >= 4 and len(set(small.tolist())) > 30  # small vocabularies stay in range
    body = json.loads(BodyBuilder(api="completions", model="m", prompt_kind="tokens", server_type="vllm")(11, 40, 1))
    assert body["prompt"] == token_prompt(0, 11, 40, 32000).tolist()  # the fast path sends what token_prompt says
    words = text_prompt(3, 4, 37).split(" ")
    assert len(words) == 37 and set(words) <= set(WORDS) and text_prompt(3, 4, 37) == text_prompt(3, 4, 37)
    assert resolve_prompt_kind("auto", "completions", "vllm") == "tokens"
    assert resolve_prompt_kind("auto", "completions", "tgi") == resolve_prompt_kind("auto", "chat", "vllm") == "text"
    b = json.loads(BodyBuilder(api="completions", model="m", prompt_kind="tokens", server_type="vllm")(3, 5, 7))
    assert b["max_tokens"] == b["min_tokens"] == 7 and b["ignore_eos"] is True and len(b["prompt"]) == 5
    assert b["stream"] is True and b["stream_options"] == {"include_usage": True}
    c = json.loads(BodyBuilder(api="chat", model="m", prompt_kind="text", server_type="openai")(3, 5, 7))
    assert c["max_tokens"] == 7 and "min_tokens" not in c and "ignore_eos" not in c
    assert len(c["messages"][0]["content"].split()) == 5


def test_event_stream_parsing_is_split_proof():
    stream = (b'data: {"choices":[{"delta":{"role":"assistant","content":""}}]}\r\n\r\n'
              b'data: {"choices":[{"delta":{"content":"a"}}]}\r\n\r\n'
              b': keep-alive comment\n\n'
              b'data: {"choices":[{"delta":{"content":"b"}}]}\n\n'
              b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}\n\n'
              b'data: [DONE]\n\n')
    whole, parts = _Req(0, chat=True), _Req(0, chat=True)
    for r in (whole, parts):
        r.on_head(200, b"text/event-stream")
    whole.feed(stream, 1.0)
    for k, byte in enumerate(stream):
        parts.feed(bytes([byte]), 1.0 + k)
    for r in (whole, parts):
        assert r.events == 2 and r.usage_out == 2 and r.usage_in == 3 and r.done_marker and r.stream_error is None
    assert len(parts.gaps) == 1 and parts.gaps[0] > 0 and parts.first > 1.0
    bad = _Req(0, chat=False)
    bad.on_head(200, b"text/event-stream")
    bad.feed(b'data: {"error":{"message":"boom"}}\n\n', 0.0)
    assert "boom" in bad.stream_error


def test_response_framing_is_split_proof():
    """An informational head, then a chunked event stream, fed whole and one byte at a time;
    a Content-Length error body; a bad chunk size."""
    body = b'data: {"choices":[{"text":"a"}]}\n\ndata: [DONE]\n\n'
    stream = (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
              b"transfer-encoding: chunked\r\n\r\n" + b"%x\r\n%s\r\n" % (len(body), body) + b"0\r\n\r\n")
    for pieces in ([stream], [stream[k:k + 1] for k in range(len(stream))]):
        framing, req = _Framing(), _Req(0, chat=False)
        framing.state = HEAD
        got = [framing.feed(p, req, 1.0) for p in pieces]
        assert got[-1] is True and all(g is None for g in got[:-1])
        assert req.status_code == 200 and req.events == 1 and req.done_marker and framing.keep_alive
    err = b'{"error":{"message":"no"}}'
    framing, req = _Framing(), _Req(0, chat=False)
    framing.state = HEAD
    head = b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % len(err)
    assert framing.feed(head + err, req, 0.0) is True
    assert req.status_code == 500 and req.error_message() == "no" and not framing.keep_alive
    framing, req = _Framing(), _Req(0, chat=False)
    framing.state = HEAD
    assert "bad chunk size" in framing.feed(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n", req, 0.0)


def test_serve_and_http_client_import_lazily():
    code = ("import sys, servegen_fast.cli, servegen_fast.replay.http.workers; servegen_fast.cli.build_parser(); "
            "assert not {'aiohttp', 'torch', 'transformers'} & set(sys.modules), sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_token_events_classified_like_json():
    """The byte-level fast path agrees with json.loads on the chunk shapes servers send."""
    chunks = [b'{"choices":[{"delta":{"role":"assistant","content":""}}]}',  # role only: no token
              b'{"choices":[{"delta":{"content":""}}]}',  # empty content without role: a token (partial UTF-8)
              b'{"choices":[{"delta":{"content": "x \\"content\\": null"}}]}',
              b'{"choices":[{"delta":{"content":null,"reasoning_content":"hm"}}]}',
              b'{"choices":[{"delta":{},"finish_reason":"stop"}]}',
              b'{"choices":[{"delta":{"content":null}}],"usage":null}',
              b'{"choices":[{"text":" a","finish_reason":null}]}', b'{"choices":[{"text":""}]}',
              b'{"choices":[{"text":null}]}', b'{"choices":[],"usage":{"completion_tokens":3}}']
    for chat in (True, False):
        for c in chunks:
            fast, slow = _Req(0, chat), _Req(0, chat)
            fast._event(c, 1.0)
            slow._event_json(c, 1.0)
            assert (fast.events, fast.usage_out) == (slow.events, slow.usage_out), (chat, c)
