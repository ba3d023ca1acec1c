"""On-device replay (servegen_fast.replay) on CPU with a tiny random Llama model through
transformers' continuous batching: exact forced output lengths, releases never early with
their lateness recorded, results consistent with the summary, clear errors, and Ctrl-C
writing the results so far marked incomplete."""
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
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest

from servegen_fast import cli
from servegen_fast.replay import make_plan, read_requests, summarize
from servegen_fast.replay.http.bodies import BodyBuilder
from servegen_fast.replay.local.engine import Completion, Engine, EngineInfo
from servegen_fast.replay.local.loop import run
from servegen_fast.replay.prompts import token_prompt
from servegen_fast.replay.results import META_KEY, QUANTILES
from servegen_fast.replay.timing import CLOCK
from servegen_fast.io.trace import trace_schema, write_trace

ROOT = Path(__file__).resolve().parent.parent


def make_trace(n=8, span=1.2, seed=3, max_in=40, max_out=12, clients=3) -> pa.Table:
    rng = np.random.default_rng(seed)
    ts = np.sort(rng.uniform(0, span, n))
    cols = {"timestamp": ts, "client_id": rng.integers(0, clients, n).astype(np.uint32),
            "input_tokens": rng.integers(1, max_in, n).astype(np.uint32),
            "output_tokens": rng.integers(1, max_out, n).astype(np.uint32)}
    cols["output_tokens"][0] = 1  # a one-token output (no TPOT)
    schema = trace_schema("language", ("input_tokens", "output_tokens"), metadata={"note": "test"})
    return pa.table(cols, schema=schema)


def write(table: pa.Table, path: Path) -> Path:
    write_trace(table.to_batches(), path, table.schema)
    return path


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """One replay through the CLI: 8 short requests over ~0.6 s (time scale 0.5), SLOs given."""
    d = tmp_path_factory.mktemp("replay")
    trace = write(make_trace(), d / "trace.parquet")
    out = d / "out"
    rc = cli.main(["replay", str(trace), "--engine", "transformers", "--model", "tiny", "--device", "cpu",
                   "--output", str(out), "--time-scale", "0.5", "--slo-ttft", "2s", "--slo-tpot", "1ms", "--quiet"])
    assert rc == 0
    return out


def test_every_request_completes_with_its_forced_length(run_dir):
    t = read_requests(run_dir).to_pydict()
    trace = make_trace()
    assert t["status"] == ["completed"] * trace.num_rows
    assert t["generated_tokens"] == t["output_tokens"] == trace.column("output_tokens").to_pylist()
    assert t["input_tokens"] == trace.column("input_tokens").to_pylist()
    assert t["request"] == list(range(trace.num_rows))
    assert not any(t["preempted"]) and t["error"] == [None] * trace.num_rows


def test_releases_never_early_and_lateness_recorded(run_dir):
    t = read_requests(run_dir)
    sched, rel, late = (t.column(c).to_numpy() for c in ("scheduled", "released", "lateness"))
    np.testing.assert_allclose(sched, make_trace().column("timestamp").to_numpy() * 0.5)
    assert np.all(np.isfinite(rel)) and np.all(rel >= sched)
    assert np.all(late >= 0) and np.array_equal(late, rel - sched)
    ttft, first, completed = (t.column(c).to_numpy() for c in ("ttft", "first_token", "completed"))
    assert np.all(first > rel) and np.all(completed >= first) and np.all(ttft > 0)


def test_summary_agrees_with_the_request_file(run_dir):
    t = read_requests(run_dir)
    s = json.loads((run_dir / "summary.json").read_text())
    assert s["complete"] is True and s["interrupted"] is False
    assert json.loads(t.schema.metadata[META_KEY])["complete"] is True
    n = t.num_rows
    assert s["counts"]["selected"] == s["counts"]["released"] == s["counts"]["completed"] == n
    assert s["counts"]["abandoned"] == s["counts"]["not_released"] == s["counts"]["wrong_length"] == 0
    for name in ("ttft", "tpot", "e2e", "queueing"):
        v = t.column(name).to_numpy()
        v = v[np.isfinite(v)]
        assert s["latency"][name]["count"] == len(v)
        for q, x in zip(QUANTILES, np.percentile(v, QUANTILES)):
            assert s["latency"][name][f"p{q}"] == pytest.approx(x, rel=1e-12)
    assert s["latency"]["tpot"]["count"] == n - 1  # the one-token output has no TPOT
    late = t.column("lateness").to_numpy()
    assert s["lateness"]["p99"] == pytest.approx(np.percentile(late, 99), rel=1e-12)
    assert s["lateness"]["over_1ms"] == int((late > 1e-3).sum())
    span = t.column("completed").to_numpy().max() - t.column("released").to_numpy().min()
    assert s["duration_s"] == pytest.approx(span)
    assert s["throughput"]["requests_per_s"] == pytest.approx(n / span)
    gen = t.column("generated_tokens").to_numpy().sum()
    assert s["throughput"]["output_tokens_per_s"] == pytest.approx(gen / span)
    # goodput: TTFT <= 2 s holds for all on this load; TPOT <= 1 ms only for the one-token output
    tpot = t.column("tpot").to_numpy()
    good = (t.column("ttft").to_numpy() <= 2.0) & ~(tpot > 1e-3)
    assert s["goodput"]["requests"] == int(good.sum()) and s["slo"] == {"ttft_s": 2.0, "tpot_s": 0.001}
    assert s == {**s, **summarize(t, 2.0, 0.001, ipc.open_file(run_dir / "engine_stats.arrow").read_all())}
    assert "WRONG" not in (run_dir / "summary.txt").read_text()


def test_engine_memory_and_kv_use_recorded(run_dir):
    st = ipc.open_file(run_dir / "engine_stats.arrow").read_all()
    assert st.num_rows >= 1 and "kv_used_fraction" in st.column_names
    kv = st.column("kv_used_fraction").to_numpy()
    assert np.all((kv >= 0) & (kv <= 1))
    s = json.loads((run_dir / "summary.json").read_text())
    assert s["engine"]["name"] == "transformers" and "continuous batching" in s["engine"]["path"]
    assert s["engine_stats"]["samples"] == st.num_rows


def test_plots(run_dir):
    pytest.importorskip("matplotlib")
    from servegen_fast.replay.plots import plot_results

    paths = plot_results(run_dir)
    assert [p.name for p in paths] == ["latency_over_time.png", "cdf.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in paths)


# --------------------------------------------------------------------------- planning (no engine)
def test_plan_slices_scales_and_caps():
    t = make_trace(n=40, span=20.0, clients=4)
    ts, cid = t.column("timestamp").to_numpy(), t.column("client_id").to_numpy()
    p = make_plan(t, start=5.0, end=15.0, time_scale=2.0)
    rows = np.flatnonzero((ts >= 5) & (ts < 15))
    assert np.array_equal(p.row, rows) and np.allclose(p.scheduled, (ts[rows] - 5.0) * 2.0)
    p = make_plan(t, clients=[1, 3], max_requests=5)
    assert np.array_equal(p.row, np.flatnonzero(np.isin(cid, [1, 3]))[:5])
    assert np.all(make_plan(t, afap=True).scheduled == 0)


def test_plan_fits_lengths_to_the_model():
    t = make_trace(n=30, max_in=500, max_out=300)
    p = make_plan(t, max_model_len=256)
    assert np.all(p.input_tokens.astype(int) + p.output_tokens <= 256)
    assert np.all(p.input_tokens >= 1) and np.all(p.output_tokens >= 1)
    assert np.array_equal(p.trace_input, t.column("input_tokens").to_numpy())
    short = (p.trace_input.astype(int) + p.trace_output) <= 256
    assert np.array_equal(p.input_tokens[short], p.trace_input[short])


def test_prompts_are_keyed_by_seed_and_row():
    a = token_prompt(0, 7, 50, 1024).tolist()
    assert a == token_prompt(0, 7, 50, 1024).tolist() and a != token_prompt(1, 7, 50, 1024).tolist()
    assert a != token_prompt(0, 8, 50, 1024).tolist()
    assert len(a) == 50 and min(a) >= 4 and max(a) < 1024


class RecordingEngine(Engine):
    """Ends every request as soon as it is added, keeping the prompt it was given."""

    def __init__(self, vocab: int):
        self.info = EngineInfo("recording", "-", "cpu", "-", {"vocab_size": vocab})
        self.prompts: dict[int, list[int]] = {}
        self.ended: list[Completion] = []

    def start(self) -> None:
        pass

    def add(self, rid, prompt_ids, output_tokens) -> None:
        self.prompts[rid] = list(prompt_ids)
        now = CLOCK()
        self.ended.append(Completion(rid, output_tokens, first_token=now, completed=now))

    def poll(self, timeout):
        out, self.ended = self.ended, []
        return out

    def stop(self, abandon=False):
        return self.poll(0)


def test_on_device_loop_and_http_bodies_send_the_same_token_ids():
    plan = make_plan(make_trace(n=6, max_in=300), afap=True)
    for vocab in (1024, 128256):  # the tiny model's vocabulary (ids from 4) and a real one's (ids from 1000)
        engine = RecordingEngine(vocab)
        assert run(engine, plan, seed=9).status == ["completed"] * len(plan)
        build = BodyBuilder(api="completions", model="m", prompt_kind="tokens", server_type="vllm", seed=9, vocab=vocab)
        for row, n in zip(plan.row.tolist(), plan.input_tokens.tolist()):
            assert json.loads(build(row, n, 1))["prompt"] == engine.prompts[row] and len(engine.prompts[row]) == n


def test_random_model_is_seeded_without_touching_global_rng():
    import torch

    from servegen_fast.replay.local.models import load_model

    torch.manual_seed(123)
    before = torch.get_rng_state()
    m1, m2 = load_model("tiny", "cpu", seed=5), load_model("tiny", "cpu", seed=5)
    assert torch.equal(torch.get_rng_state(), before)
    w1, w2 = m1.model.layers[0].mlp.up_proj.weight, m2.model.layers[0].mlp.up_proj.weight
    assert torch.equal(w1, w2)
    assert not torch.equal(w1, load_model("tiny", "cpu", seed=6).model.layers[0].mlp.up_proj.weight)


# --------------------------------------------------------------------------- errors
def replay_error(capsys, tmp_path, trace, *extra):
    rc = cli.main(["replay", str(trace), "--model", "tiny", "--device", "cpu", "-o", str(tmp_path / "o"), "-q",
                   *extra])
    err = capsys.readouterr().err
    assert rc == 2 and not (tmp_path / "o").exists()
    return err


def test_malformed_traces_give_clear_errors(tmp_path, capsys):
    t = make_trace()
    pq.write_table(t.drop_columns(["output_tokens"]), tmp_path / "no_out.parquet")
    assert "not a trace: no output_tokens column" in replay_error(capsys, tmp_path, tmp_path / "no_out.parquet")
    rev = t.take(pa.array(np.arange(t.num_rows)[::-1]))
    pq.write_table(rev, tmp_path / "unsorted.parquet")
    assert "not in time order" in replay_error(capsys, tmp_path, tmp_path / "unsorted.parquet")
    (tmp_path / "junk.parquet").write_bytes(b"not a trace at all")
    assert "not a readable Parquet or Arrow IPC trace" in replay_error(capsys, tmp_path, tmp_path / "junk.parquet")
    assert "trace not found" in replay_error(capsys, tmp_path, tmp_path / "missing.parquet")


def test_empty_trace_and_empty_slice(tmp_path, capsys):
    t = make_trace()
    empty = write(t.slice(0, 0), tmp_path / "empty.parquet")
    assert "no requests to replay" in replay_error(capsys, tmp_path, empty)
    full = write(t, tmp_path / "t.parquet")
    assert "no requests to replay after slicing" in replay_error(capsys, tmp_path, full, "--start", "1h")


def test_missing_model_gives_a_clear_error(tmp_path, capsys):
    full = write(make_trace(), tmp_path / "t.parquet")
    err = replay_error(capsys, tmp_path, full, "--model", str(tmp_path / "no-such-model"))
    assert "not found" in err and "tiny" in err
    (tmp_path / "empty-dir").mkdir()
    err = replay_error(capsys, tmp_path, full, "--model", str(tmp_path / "empty-dir"))
    assert "no config.json" in err


# --------------------------------------------------------------------------- Ctrl-C
def test_sigint_writes_results_so_far_marked_incomplete(tmp_path):
    trace = write(make_trace(n=30, span=60.0, max_out=8), tmp_path / "long.parquet")
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "servegen_fast.cli", "replay", str(trace), "--model", "tiny",
                             "--device", "cpu", "-o", str(out)], stderr=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, env=env, cwd=ROOT)
    deadline = time.monotonic() + 120
    for line in proc.stderr:
        if line.startswith("replay started") or time.monotonic() > deadline:
            break
    time.sleep(2.0)  # a few of the 30 requests (spread over 60 s) are released by now
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    s = json.loads((out / "summary.json").read_text())
    assert s["complete"] is False and s["interrupted"] is True and "INCOMPLETE" in (out / "summary.txt").read_text()
    t = read_requests(out)
    assert json.loads(t.schema.metadata[META_KEY])["complete"] is False
    c = s["counts"]
    assert c["selected"] == 30 and 0 < c["released"] < 30 and c["not_released"] == 30 - c["released"]
    assert c["completed"] + c["abandoned"] + c["failed"] == c["released"]
    d = t.to_pydict()
    for st, rel, gen, want in zip(d["status"], d["released"], d["generated_tokens"], d["output_tokens"]):
        assert (st == "not_released") == np.isnan(rel)
        if st == "completed":
            assert gen == want


# --------------------------------------------------------------------------- GPU
@pytest.mark.gpu
def test_replay_on_cuda(tmp_path):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    trace = write(make_trace(), tmp_path / "t.parquet")
    rc = cli.main(["replay", str(trace), "--model", "tiny", "--device", "cuda", "-o", str(tmp_path / "o"), "-q"])
    assert rc == 0
    d = read_requests(tmp_path / "o").to_pydict()
    assert d["generated_tokens"] == d["output_tokens"] and set(d["status"]) == {"completed"}


def test_core_and_cli_import_without_torch():
    code = ("import sys, servegen_fast, servegen_fast.sample.generate, servegen_fast.cli, servegen_fast.replay; "
            "servegen_fast.cli.build_parser(); assert 'torch' not in sys.modules and 'transformers' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
