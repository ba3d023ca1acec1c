"""ServeGen's public API (servegen_fast.compat), exercised the way ServeGen's README, examples
and own tests use it: custom clients, the real pools, rate functions, a ServeGen script with
only its import lines changed. Per-window results are checked against plain-Python
references written from ServeGen's documented per-window semantics."""
from __future__ import annotations

import ast
import csv
import dataclasses
import inspect
import json
import math
import random
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import servegen_fast.compat as sg
from servegen_fast import read_servegen
from servegen_fast.compat import (ArrivalPat, Category, Client, ClientPool, ClientPoolView, ClientWindow, Request,
                                  generate_workload, get_bounded_rate_fn, get_constant_rate_fn, get_scaled_rate_fn,
                                  sample_from_cdf, save_requests_to_csv)
from servegen_fast.sample.generate import generate_table

STATS = ("avg", "p50", "p95", "p99")
MM_KEYS = ["text_tokens", "image_tokens", "audio_tokens", "video_tokens", "output_tokens"]


# --------------------------------------------------------------------------- custom clients
def gamma(rate, cv):
    return {"rate": rate, "cv": cv, "pat": ("Gamma", (1.0, 1.0))}


def mock_pool() -> ClientPool:
    """ServeGen's tests/test_clientpool.py fixture: 2 clients x 3 windows."""
    c1 = Client(1, {0: gamma(1.0, 0.5), 600: gamma(2.0, 1.0), 1200: gamma(3.0, 1.5)},
                {0: {"input_tokens": [0.5, 0.5], "output_tokens": [0.0, 0.5, 0.5]},
                 600: {"input_tokens": [0.0, 0.5, 0.5], "output_tokens": [0.0, 0.0, 0.5, 0.5]}})
    c2 = Client(2, {0: gamma(2.0, 1.0), 600: gamma(3.0, 1.5), 1200: gamma(4.0, 2.0)},
                {0: {"input_tokens": [0.0, 0.5, 0.5], "output_tokens": [0.0, 0.0, 0.5, 0.5]},
                 600: {"input_tokens": [0.0, 0.0, 0.5, 0.5], "output_tokens": [0.0, 0.0, 0.0, 0.5, 0.5]}})
    return ClientPool.from_clients(Category.LANGUAGE, "test", [c1, c2])


def construct_pool() -> ClientPool:
    """ServeGen's tests/test_construct.py fixture: 2 clients x 2 windows."""
    c1 = Client(1, {0: gamma(5.0, 0.5), 600: gamma(7.0, 1.0)},
                {0: {"input_tokens": [0.5, 0.5], "output_tokens": [0.0, 0.5, 0.5]},
                 600: {"input_tokens": [0.0, 0.5, 0.5], "output_tokens": [0.0, 0.0, 0.5, 0.5]}})
    c2 = Client(2, {0: gamma(7.0, 1.0), 600: gamma(5.0, 0.5)},
                {0: {"input_tokens": [0.0, 0.5, 0.5], "output_tokens": [0.0, 0.0, 0.5, 0.5]},
                 600: {"input_tokens": [0.5, 0.5], "output_tokens": [0.0, 0.5, 0.5]}})
    return ClientPool.from_clients(Category.LANGUAGE, "test", [c1, c2])


def valid_client(cid: int = 1) -> Client:
    return Client(cid, {0: gamma(1.0, 0.5), 600: gamma(2.0, 1.0)},
                  {0: {"input_tokens": [0.0, 0.5, 0.5], "output_tokens": [0.0, 0.0, 0.5, 0.5]},
                   600: {"input_tokens": [0.0, 0.0, 0.5, 0.5], "output_tokens": [0.0, 0.0, 0.0, 0.5, 0.5]}})


# --------------------------------------------------------------------------- real pools
@pytest.fixture(scope="module")
def small(servegen_root):
    with pytest.warns(UserWarning, match=r"5 of 43 clients have no dataset file"):
        return ClientPool(Category.LANGUAGE, "m-small", base_dir=str(servegen_root))


@pytest.fixture(scope="module")
def mm(servegen_root):
    return ClientPool(Category.MULTIMODAL, "mm-image", base_dir=str(servegen_root))


@pytest.fixture(scope="module")
def r1(servegen_root):
    return ClientPool(Category.REASON, "deepseek-r1", base_dir=str(servegen_root))


# --------------------------------------------------------------------------- references
def ref_stats(pdf):
    """avg, p50, p95, p99 of a dense PDF list (ServeGen's compute_stats, written plainly)."""
    arr = np.asarray(pdf, dtype=float)
    vals = np.flatnonzero(arr > 0)
    p = arr[vals] / arr[vals].sum()
    cum = np.cumsum(p)
    pct = [vals[min(np.searchsorted(cum, q), len(vals) - 1)] for q in (0.5, 0.95, 0.99)]
    return (float(np.dot(vals, p)), *pct)


def ref_weighted(pairs):
    pairs = sorted(pairs)
    total = sum(w for _, w in pairs)
    if total == 0:
        return np.array([]), np.array([])
    return np.array([v for v, _ in pairs]), np.cumsum([w / total for _, w in pairs])


def ref_cdfs(windows):
    """ServeGen's get_cdfs from a list of ClientWindows."""
    if not windows:
        return {}
    by_ts = {}
    for w in windows:
        by_ts.setdefault(w.timestamp, []).append(w)
    fields = {f for w in windows if w.dataset for f in w.dataset}
    out = {"rate": {}, "cv": {}, **{f: {s: {} for s in STATS} for f in fields}}
    for ts, group in by_ts.items():
        rates = [w.rate for w in group if w.rate is not None]
        if rates:
            out["rate"][ts] = (np.sort(rates), np.arange(1, len(rates) + 1) / len(rates))
        cvs = [(w.cv, w.rate) for w in group if w.cv is not None]
        if cvs:
            out["cv"][ts] = ref_weighted(cvs)
        for f in fields:
            rows = [(ref_stats(w.dataset[f]), w.rate or 0.0) for w in group if w.dataset and f in w.dataset]
            for i, s in enumerate(STATS):
                if rows:
                    out[f][s][ts] = ref_weighted([(st[i], wt) for st, wt in rows])
    return out


def assert_cdfs_equal(got, want):
    assert set(got) == set(want)
    for key in want:
        pairs = [(got[key], want[key])] if key in ("rate", "cv") else [(got[key][s], want[key][s]) for s in STATS]
        for g, w in pairs:
            assert sorted(g) == sorted(w), key
            for ts in w:
                np.testing.assert_allclose(g[ts][0], w[ts][0], rtol=1e-9, err_msg=f"{key} values at {ts}")
                np.testing.assert_allclose(g[ts][1], w[ts][1], rtol=1e-9, err_msg=f"{key} probs at {ts}")


def ref_filter(kind, *args):
    """ServeGen's built-in filters as per-window predicates."""
    def pred(w):
        if kind == "cv":
            return w.cv is not None and args[0] <= w.cv <= args[1]
        field = "input_tokens" if "input" in kind else "output_tokens"
        if not w.dataset or field not in w.dataset:
            return False
        pdf = w.dataset[field]
        if kind.startswith("avg"):
            return args[0] <= sum(i * p for i, p in enumerate(pdf)) <= args[1]
        return len(pdf) - 1 <= args[0]
    return pred


def keyed(windows):
    return [(w.client_id, w.timestamp, w.window_size, w.rate, w.cv) for w in windows]


def counts_per_window(requests, edges):
    t = np.array([r.timestamp for r in requests])
    return np.histogram(t, bins=edges)[0]


# =========================================================================== names and signatures
def test_servegen_names_and_signatures():
    assert [c.value for c in Category] == ["language", "multimodal", "reason"]
    assert [p.value for p in ArrivalPat] == ["Gamma", "Weibull"]
    assert [f.name for f in dataclasses.fields(ClientWindow)] == [
        "client_id", "timestamp", "window_size", "rate", "cv", "arrival_pat", "dataset"]
    assert ClientWindow(1, 0, 600).rate is None and ClientWindow(1, 0, 600).dataset is None
    assert [f.name for f in dataclasses.fields(Client)] == ["client_id", "trace", "dataset"]
    assert [f.name for f in dataclasses.fields(Request)] == ["request_id", "timestamp", "data"]
    params = inspect.signature(ClientPool).parameters
    assert list(params)[:4] == ["category", "model", "clients", "base_dir"]
    assert params["clients"].default is None and params["base_dir"].default == "data"
    assert list(inspect.signature(generate_workload).parameters) == ["pool", "rate_fn", "duration", "seed"]
    assert inspect.signature(generate_workload).parameters["seed"].default is None
    assert list(inspect.signature(sample_from_cdf).parameters) == ["cdf", "n_samples", "rng"]
    assert list(inspect.signature(ClientPoolView).parameters) == ["pool", "start_time", "end_time"]
    for name in ("span", "filter", "filter_by_cv", "filter_by_avg_input_len", "filter_by_avg_output_len",
                 "filter_by_max_input_len", "filter_by_max_output_len", "get", "get_cdfs"):
        assert callable(getattr(ClientPool, name)) and callable(getattr(ClientPoolView, name))


def test_servegen_submodules_mirror_the_package():
    from servegen_fast.compat.clientpool import Client as C2, ClientPool as P2
    from servegen_fast.compat.construct import Request as R2, generate_workload as g2
    from servegen_fast.compat.utils import get_constant_rate_fn as f2, sample_from_cdf as s2
    from servegen_fast.compat.workload_types import ArrivalPat as A2, Category as K2, ClientWindow as W2
    assert (C2, P2, R2, g2, f2, s2, A2, K2, W2) == (Client, ClientPool, Request, generate_workload,
                                                  get_constant_rate_fn, sample_from_cdf, ArrivalPat, Category,
                                                  ClientWindow)
    assert sg.utils.get_bounded_rate_fn is get_bounded_rate_fn


def test_submodule_import_in_a_fresh_interpreter():
    code = ("from servegen_fast.compat.construct import generate_workload\n"
            "import servegen_fast.compat.utils as u\n"
            "from servegen_fast.compat.workload_types import Category\n"
            "print(u.get_constant_rate_fn.__name__, Category.REASON.value)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["get_constant_rate_fn", "reason"]


# =========================================================================== Client.validate
def test_valid_client_passes():
    valid_client().validate()
    Client(1, {0: None, 600: gamma(0, 0)}, {}).validate()  # idle and zero-rate windows are valid


@pytest.mark.parametrize("trace, dataset, message", [
    ({600: gamma(2.0, 1.0), 0: gamma(1.0, 0.5)}, {}, "Trace timestamps must be in ascending order"),
    ({0: []}, {}, "Trace data at 0 must be a dictionary"),
    ({0: {"rate": 1.0}}, {}, "Trace data at 0 missing required fields: {'cv', 'pat'}"),
    ({0: {"rate": -1.0, "cv": 1.0, "pat": ("Gamma", (1, 1))}}, {}, "Rate at 0 must be a non-negative number"),
    ({0: {"rate": "1", "cv": 1.0, "pat": ("Gamma", (1, 1))}}, {}, "Rate at 0 must be a non-negative number"),
    ({0: {"rate": 1.0, "cv": -0.5, "pat": ("Gamma", (1, 1))}}, {}, "CV at 0 must be a non-negative number"),
    ({0: {"rate": 1.0, "cv": 0.5, "pat": "Gamma"}}, {}, "Pattern at 0 must be a tuple/list of (name, params) Gamma"),
    ({0: {"rate": 1.0, "cv": 0.5, "pat": ("Gamma",)}}, {}, "Pattern at 0 must be a tuple/list of (name, params)"),
    ({0: {"rate": 1.0, "cv": 0.5, "pat": ("Poisson", (1, 1))}}, {}, "Invalid arrival pattern at 0: Poisson"),
    ({0: None}, {600: {"input_tokens": [1.0]}, 0: {"input_tokens": [1.0]}},
     "Dataset timestamps must be in ascending order"),
    ({0: None}, {0: [1.0]}, "Dataset at 0 must be a dictionary"),
    ({0: None}, {0: {"input_tokens": "[1.0]"}}, "PDF for input_tokens at 0 must be a list"),
    ({0: None}, {0: {"input_tokens": {0: 1.0}}}, "PDF for input_tokens at 0 must be a list"),
    ({0: None}, {0: {"input_tokens": [0.5, "0.5"]}}, "PDF values for input_tokens at 0 must be numbers"),
    ({0: None}, {0: {"input_tokens": [0.5, None]}}, "PDF values for input_tokens at 0 must be numbers"),
    ({0: None}, {0: {"input_tokens": [1.5, -0.5]}}, "PDF values for input_tokens at 0 must be non-negative"),
    ({0: None}, {0: {"input_tokens": [0.0, 0.5]}}, "PDF for input_tokens at 0 must sum to 1.0"),
    ({0: None}, {0: {"input_tokens": []}}, "PDF for input_tokens at 0 must sum to 1.0"),
])
def test_client_validate_messages(trace, dataset, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        Client(1, trace, dataset).validate()


def test_pdf_sum_tolerance_is_servegens():
    # np.isclose(sum, 1.0, atol=1e-6) with its default rtol=1e-5: |sum - 1| <= 1.1e-5
    Client(1, {0: None}, {0: {"input_tokens": [0.5, 0.5 + 1.0e-5]}}).validate()
    with pytest.raises(ValueError, match="must sum to 1.0"):
        Client(1, {0: None}, {0: {"input_tokens": [0.5, 0.5 + 1.2e-5]}}).validate()


def test_pool_validation_messages():
    other = Client(2, {0: gamma(1.0, 0.5), 1200: gamma(2.0, 1.0)}, {0: {"input_tokens": [1.0]}})
    with pytest.raises(ValueError, match=re.escape("Client 2 has different trace timestamps than the first "
                                                   "client. Expected [0, 600], got [0, 1200]")):
        ClientPool(Category.LANGUAGE, "m", clients={1: valid_client(), 2: other})
    extra = Client(1, {0: gamma(1.0, 0.5), 600: gamma(2.0, 1.0)},
                   {0: {"input_tokens": [1.0]}, 1200: {"input_tokens": [1.0]}})
    with pytest.raises(ValueError, match=re.escape("Client 1 has dataset timestamps that are not in trace "
                                                   "timestamps: [1200]")):
        ClientPool(Category.LANGUAGE, "m", clients={1: extra})
    with pytest.raises(ValueError, match="Duplicate client ID: 1"):
        ClientPool.from_clients(Category.LANGUAGE, "m", [valid_client(1), valid_client(1)])
    with pytest.raises(ValueError, match="Trace data at 0 missing required fields"):
        ClientPool.from_clients(Category.LANGUAGE, "m", [Client(1, {0: {"rate": 1.0}}, {})])
    with pytest.raises(ValueError, match="no clients"):
        ClientPool.from_clients(Category.LANGUAGE, "m", [])


def test_pool_keeps_the_given_clients_and_builds_columns():
    clients = {1: valid_client(1), 7: valid_client(7)}
    pool = ClientPool(Category.LANGUAGE, "m", clients=clients)
    assert pool.clients is clients
    col = pool.columnar
    assert col.client_ids.tolist() == [1, 7] and col.window_start.tolist() == [0, 600]
    assert col.rate.tolist() == [[1.0, 2.0], [1.0, 2.0]] and col.fields == ("input_tokens", "output_tokens")
    pool.validate()
    view = pool.span(0, 1200)
    assert len(view.get()) == 4
    pool.clients = {3: valid_client(3)}  # ServeGen's attribute: replacing it re-validates and rebuilds
    assert [w.client_id for w in view.get()] == [3, 3]
    with pytest.raises(ValueError, match="Duplicate|different trace timestamps"):
        pool.clients = {1: valid_client(1), 2: Client(2, {0: gamma(1.0, 1.0)}, {})}
    assert list(pool.clients) == [3] and [w.client_id for w in view.get()] == [3, 3]


# =========================================================================== views (ServeGen's clientpool tests)
def test_span_basic():
    pool = mock_pool()
    view = pool.span(0, 600)
    windows = view.get()
    assert len(windows) == 2 and all(w.timestamp == 0 for w in windows)
    windows = view.span(0, 300).get()
    assert len(windows) == 2 and all(w.timestamp == 0 and w.window_size == 300 for w in windows)
    w = windows[0]
    assert (w.client_id, w.rate, w.cv, w.arrival_pat) == (1, 1.0, 0.5, ("Gamma", (1.0, 1.0)))
    assert w.dataset == {"input_tokens": [0.5, 0.5], "output_tokens": [0.0, 0.5, 0.5]}


def test_span_overlap_and_relative_nesting():
    pool = mock_pool()
    windows = pool.span(300, 900).get()
    assert len(windows) == 4 and sorted({w.timestamp for w in windows}) == [0, 300]
    nested = pool.span(300, 1500).span(300, 900).get()  # times relative to the outer view's start
    assert keyed(nested) == keyed(pool.span(600, 1200).get())


def test_last_window_is_open_ended():
    pool = mock_pool()
    last = [w for w in pool.get() if w.timestamp == 1200]
    assert len(last) == 2 and all(w.window_size == math.inf for w in last)
    windows = pool.span(1200, 3000).get()
    assert [(w.timestamp, w.window_size, w.rate) for w in windows] == [(0, 1800, 3.0), (0, 1800, 4.0)]
    assert pool.span(5000, 5600).get()[0].window_size == 600  # still the last window's data
    assert pool.span(600, 300).get() == []


@pytest.mark.parametrize("method, args, expected", [
    ("filter_by_cv", (0.49, 0.51), (1, 0)),
    ("filter_by_avg_input_len", (0.0, 1.0), (1, 0)),
    ("filter_by_avg_output_len", (1.0, 2.0), (1, 0)),
    ("filter_by_max_input_len", (1,), (1, 0)),
    ("filter_by_max_output_len", (2,), (1, 0)),
])
def test_builtin_filters(method, args, expected):
    pool = mock_pool()
    windows = getattr(pool, method)(*args).get()
    assert [(w.client_id, w.timestamp) for w in windows] == [expected]
    windows = getattr(pool.span(0, 600), method)(*args).get()
    assert [(w.client_id, w.timestamp) for w in windows] == [expected]


def test_filter_chaining_and_mutation():
    pool = mock_pool()
    view = pool.filter_by_cv(0.5, 1.5)
    assert view.filter_by_avg_input_len(0.0, 1.0) is view and len(view.filters) == 2
    windows = view.get()
    assert [(w.client_id, w.timestamp, w.cv) for w in windows] == [(1, 0, 0.5)]
    wide = pool.span(0, 1800)
    narrow = wide.span(0, 1200)  # span copies the filters; later filters on one do not reach the other
    wide.filter_by_cv(100, 200)
    assert wide.get() == [] and len(narrow.get()) == 4


def test_python_predicate_sees_the_final_views_windows():
    pool = mock_pool()
    # ServeGen evaluates filters at get(): on the windows of the last view, times relative to it
    windows = pool.filter(lambda w: w.timestamp == 0).span(600, 1200).get()
    assert [(w.client_id, w.timestamp, w.rate) for w in windows] == [(1, 0, 2.0), (2, 0, 3.0)]


def test_python_and_vectorized_predicates_match_builtin_filters():
    pool = mock_pool()
    for method, args, kind in [("filter_by_cv", (0.9, 1.6), "cv"),
                               ("filter_by_avg_output_len", (1.0, 3.0), "avg_output"),
                               ("filter_by_max_input_len", (2,), "max_input")]:
        assert keyed(getattr(pool, method)(*args).get()) == keyed(pool.filter(ref_filter(kind, *args)).get())
    vec = pool.filter(lambda p: p.rate > 1.5, vectorized=True).get()
    assert keyed(vec) == keyed(pool.filter(lambda w: w.rate is not None and w.rate > 1.5).get())
    with pytest.raises(TypeError):
        pool.filter(lambda p: p.rate > 1.5, vectorized=True).filters[0](vec[0])


def test_idle_windows_are_listed_for_active_clients():
    c1 = Client(1, {0: gamma(1.0, 1.0), 600: None}, {0: {"input_tokens": [1.0], "output_tokens": [0.0, 1.0]}})
    c2 = Client(2, {0: None, 600: None}, {0: {"input_tokens": [1.0], "output_tokens": [0.0, 1.0]}})
    windows = ClientPool.from_clients(Category.LANGUAGE, "idle", [c1, c2]).get()
    assert [(w.client_id, w.timestamp, w.rate, w.cv, w.arrival_pat) for w in windows] == [
        (1, 0, 1.0, 1.0, ("Gamma", (1.0, 1.0))), (1, 600, None, None, None)]


def test_get_cdfs_basic():
    cdfs = mock_pool().get_cdfs()
    values, probs = cdfs["rate"][0]
    np.testing.assert_allclose(values, [1.0, 2.0])
    np.testing.assert_allclose(probs, [0.5, 1.0])
    values, probs = cdfs["cv"][0]
    np.testing.assert_allclose(values, [0.5, 1.0])
    np.testing.assert_allclose(probs, [1 / 3, 1.0])
    values, probs = cdfs["input_tokens"]["avg"][0]
    np.testing.assert_allclose(values, [0.5, 1.5])
    np.testing.assert_allclose(probs, [1 / 3, 1.0])
    values, probs = cdfs["input_tokens"]["p95"][0]
    np.testing.assert_allclose(values, [1, 2])
    np.testing.assert_allclose(probs, [1 / 3, 1.0])
    assert_cdfs_equal(cdfs, ref_cdfs(mock_pool().get()))


def test_get_cdfs_with_filters_and_span():
    pool = mock_pool()
    cdfs = pool.filter_by_cv(0.49, 0.51).get_cdfs()
    values, probs = cdfs["rate"][0]
    np.testing.assert_allclose(values, [1.0])
    np.testing.assert_allclose(probs, [1.0])
    cdfs = pool.span(0, 600).get_cdfs()
    assert list(cdfs["rate"]) == [0]
    np.testing.assert_allclose(cdfs["rate"][0][0], [1.0, 2.0])
    assert pool.filter_by_cv(100, 200).get_cdfs() == {}


def test_get_cdfs_keeps_servegens_empty_entries():
    # every listed client idle at 600: ServeGen lists (empty, empty) for the zero-weight field CDFs
    c1 = Client(1, {0: gamma(1.0, 1.0), 600: None}, {0: {"input_tokens": [0.0, 1.0], "output_tokens": [0.0, 1.0]}})
    pool = ClientPool.from_clients(Category.LANGUAGE, "idle", [c1])
    cdfs = pool.get_cdfs()
    assert list(cdfs["rate"]) == [0] and list(cdfs["input_tokens"]["avg"]) == [0, 600]
    assert [len(a) for a in cdfs["input_tokens"]["avg"][600]] == [0, 0]
    assert_cdfs_equal(cdfs, ref_cdfs(pool.get()))


# =========================================================================== generate_workload on custom clients
def test_generate_workload_basic():
    requests = generate_workload(construct_pool(), {0: 8.0, 600: 8.0}, duration=1200, seed=1)
    times = [r.timestamp for r in requests]
    assert len(requests) > 0 and times == sorted(times) and all(0 <= t < 1200 for t in times)
    assert [r.request_id for r in requests] == list(range(len(requests)))
    assert all(isinstance(r, Request) and list(r.data) == ["input_tokens", "output_tokens"] for r in requests)
    assert all(type(v) is int for r in requests for v in r.data.values())


def test_generate_workload_rate_scaling():
    requests = generate_workload(construct_pool(), {0: 8.0, 600: 12.0}, duration=1200, seed=2)
    n0, n1 = counts_per_window(requests, [0, 600, 1200])
    assert abs(n0 / 600 - 8.0) < 0.1 * 8.0 and abs(n1 / 600 - 12.0) < 0.1 * 12.0


def test_generate_workload_lengths_are_comonotone():
    # window 0: client 1 draws (input, output) from {0, 1} x {1, 2}, client 2 from {1, 2} x {2, 3};
    # one uniform for both fields pairs them in order
    requests = generate_workload(construct_pool(), {0: 50.0, 600: 50.0}, duration=600, seed=3)
    pairs = {(r.data["input_tokens"], r.data["output_tokens"]) for r in requests}
    assert pairs == {(0, 1), (1, 2), (2, 3)}


def test_generate_workload_invalid_rate_fn():
    pool = construct_pool()
    with pytest.raises(ValueError, match=re.escape("Rate function timestamps don't match pool timestamps. "
                                                   "Expected [0, 600], got [0]")):
        generate_workload(pool, {0: 8.0}, duration=1200)
    with pytest.raises(ValueError, match=re.escape("Expected [0, 600], got [0, 300]")):
        generate_workload(pool, {0: 8.0, 300: 8.0}, duration=1200)
    generate_workload(pool, {-600: 1.0, 0: 8.0, 600: 8.0, 1200: 3.0}, duration=1200, seed=0)  # outside: ignored
    for bad in (0, -5):
        with pytest.raises(ValueError, match="Duration must be positive"):
            generate_workload(pool, {0: 8.0}, duration=bad)


def test_generate_workload_with_views():
    pool = construct_pool()
    view = pool.span(0, 600)
    assert all(0 <= r.timestamp < 600 for r in generate_workload(view, {0: 8.0}, duration=600, seed=0))
    requests = generate_workload(view, {0: 8.0}, duration=300, seed=0)
    assert requests and max(r.timestamp for r in requests) < 300
    assert abs(len(requests) - 8 * 300) < 0.1 * 8 * 300
    later = generate_workload(pool.span(600, 1200), {0: 10.0}, duration=600, seed=0)
    assert abs(len(later) - 6000) < 600 and max(r.timestamp for r in later) < 600
    assert generate_workload(pool.filter_by_cv(100, 200), {0: 1.0}, duration=1200) == []


def test_generate_workload_open_ended_last_window():
    requests = generate_workload(construct_pool(), {0: 8.0, 600: 4.0}, duration=1800, seed=0)
    n0, n1, n2 = counts_per_window(requests, [0, 600, 1200, 1800])
    assert abs(n0 - 4800) < 480 and abs(n1 + n2 - 4800) < 480 and n2 > 1800


def test_generate_workload_needs_length_distributions():
    pool = ClientPool.from_clients(Category.LANGUAGE, "bare", [Client(1, {0: gamma(1.0, 1.0)}, {})])
    with pytest.raises(ValueError, match="no input_tokens, output_tokens distributions"):
        generate_workload(pool, {0: 1.0}, duration=600, seed=0)


def servegen_example_clients():
    """ServeGen's examples/generate_custom.py clients (Pareto/exponential PDFs without scipy)."""
    bursty = Client(1, {0: {"rate": 4.0, "cv": 2.0, "pat": ("Gamma", (0.25, 1.0))},
                        60: {"rate": 3.33, "cv": 2.0, "pat": ("Gamma", (0.25, 1.2))},
                        120: {"rate": 4.0, "cv": 2.0, "pat": ("Gamma", (0.25, 1.0))}},
                    {0: {"input_tokens": [0.0] * 1000 + [0.1, 0.2, 0.4, 0.2, 0.1],
                         "output_tokens": [0.0] * 200 + [0.1, 0.2, 0.4, 0.2, 0.1]},
                     60: {"input_tokens": [0.0] * 1010 + [0.1, 0.2, 0.4, 0.2, 0.1],
                          "output_tokens": [0.0] * 190 + [0.1, 0.2, 0.4, 0.2, 0.1]}})
    x = np.arange(32768, dtype=float)
    pareto = np.where(x >= 300, 2.5 * 300 ** 2.5 / np.maximum(x, 1) ** 3.5, 0.0)
    expon = np.exp(-x / 300)
    pareto, expon = (pareto / pareto.sum()).tolist(), (expon / expon.sum()).tolist()
    stable = Client(2, {0: {"rate": 2.0, "cv": 1.0, "pat": ("Weibull", (1.0, 0.5))},
                        60: {"rate": 2.5, "cv": 1.0, "pat": ("Gamma", (1.0, 0.4))},
                        120: {"rate": 2.0, "cv": 1.0, "pat": ("Gamma", (1.0, 0.5))}},
                    {0: {"input_tokens": pareto, "output_tokens": expon}})
    return bursty, stable


def test_servegen_custom_example():
    pool = ClientPool.from_clients(Category.LANGUAGE, "custom", list(servegen_example_clients()))
    assert len(pool.clients) == 2
    requests = generate_workload(pool, {0: 10.0, 60: 15.0, 120: 8.0}, duration=180, seed=0)
    n = counts_per_window(requests, [0, 60, 120, 180])
    np.testing.assert_allclose(n, [600, 900, 480], rtol=0.1)
    inputs = np.array([r.data["input_tokens"] for r in requests])
    bursty = (inputs >= 1000) & (inputs <= 1014)
    assert 0.4 < bursty.mean() < 0.8 and inputs[~bursty].min() >= 300


# =========================================================================== rate functions
def utils_pool():
    """ServeGen's tests/test_utils.py fixture (clients without datasets)."""
    c1 = Client(1, {0: gamma(5.0, 0.5), 600: gamma(7.0, 1.0)}, {})
    c2 = Client(2, {0: gamma(7.0, 1.0), 600: gamma(5.0, 0.5)}, {})
    return ClientPool.from_clients(Category.LANGUAGE, "test", [c1, c2])


def test_rate_functions_servegen_utils_tests():
    pool = utils_pool()
    fn = get_constant_rate_fn(pool, target_rate=10.0)
    assert fn == {0: 10.0, 600: 10.0}
    assert get_scaled_rate_fn(pool, 2.0) == pytest.approx({0: 24.0, 600: 24.0})
    assert get_bounded_rate_fn(pool, 50.0) == pytest.approx({0: 12.0, 600: 12.0})
    assert get_bounded_rate_fn(pool, 6.0) == pytest.approx({0: 6.0, 600: 6.0})
    assert get_constant_rate_fn(pool.filter_by_cv(100, 200), 1.0) == {}


def test_scaled_rate_fn_skips_zero_windows_and_generate_rejects_it():
    # as in ServeGen: the window at 600 (all clients idle) is listed by get() but has total rate 0
    ds = {0: {"input_tokens": [0.0, 1.0], "output_tokens": [0.0, 1.0]}}
    pool = ClientPool.from_clients(Category.LANGUAGE, "idle", [Client(1, {0: gamma(2.0, 1.0), 600: None}, ds),
                                                               Client(2, {0: gamma(3.0, 1.0), 600: None}, ds)])
    scaled, bounded = get_scaled_rate_fn(pool, 2.0), get_bounded_rate_fn(pool, 1.0)
    assert scaled == {0: 10.0} and bounded == {0: 1.0}
    for fn in (scaled, bounded):
        with pytest.raises(ValueError, match=re.escape("Expected [0, 600], got [0]")):
            generate_workload(pool, fn, duration=1200, seed=0)
    requests = generate_workload(pool, get_constant_rate_fn(pool, 5.0), duration=1200, seed=0)
    n0, n1 = counts_per_window(requests, [0, 600, 1200])
    assert abs(n0 - 3000) < 300 and n1 == 0


def test_rate_functions_on_real_view(small):
    view = small.span(39600, 43200)
    windows = view.get()
    ts = sorted({w.timestamp for w in windows})
    assert ts == list(range(0, 3600, 600))
    assert get_constant_rate_fn(view, 7.0) == {t: 7.0 for t in ts}
    totals = {t: sum(w.rate for w in windows if w.timestamp == t and w.rate is not None) for t in ts}
    want = {t: r * 3.0 for t, r in totals.items() if r > 0}
    assert get_scaled_rate_fn(view, 3.0) == pytest.approx(want, rel=1e-12)
    bounded = get_bounded_rate_fn(view, 1.0)
    peak = max(totals.values())
    assert bounded == pytest.approx({t: r / peak for t, r in totals.items() if r > 0}, rel=1e-12)


# =========================================================================== the real pools
def test_load_and_readme_basic_usage(small):
    assert len(small.clients) == 38 and small.category is Category.LANGUAGE and small.model == "m-small"
    requests = generate_workload(small, {0: 100.0, 600: 150.0}, duration=1200, seed=11)
    n0, n1 = counts_per_window(requests, [0, 600, 1200])
    assert abs(n0 - 60000) < 6000 and abs(n1 - 90000) < 9000
    times = np.array([r.timestamp for r in requests])
    assert np.all(np.diff(times) >= 0) and times[0] >= 0 and times[-1] < 1200
    assert [r.request_id for r in requests] == list(range(len(requests)))
    assert all(list(r.data) == ["input_tokens", "output_tokens"] for r in requests)


def test_requests_are_the_generators_rows(small):
    view = small.span(3600, 4800)
    fn = get_constant_rate_fn(view, 40.0)
    requests = generate_workload(view, fn, duration=1200, seed=5)
    table = generate_table(view.columnar, 40.0, 1200, seed=5, mode="servegen", correlation="comonotone")
    assert [r.timestamp for r in requests] == table.column("timestamp").to_pylist()
    for key in ("input_tokens", "output_tokens"):
        assert [r.data[key] for r in requests] == table.column(key).to_pylist()


def test_readme_filter_chain_cdfs(small):
    view = (small.span(72000, 75600).filter_by_cv(0.5, 1.5).filter_by_avg_input_len(100, 1000)
            .filter_by_max_output_len(2000))
    cdfs = view.get_cdfs()
    assert list(cdfs) == ["rate", "cv", "input_tokens", "output_tokens"]
    assert all(set(cdfs[f]) == set(STATS) for f in ("input_tokens", "output_tokens"))
    pairs = list(cdfs["rate"].values()) + list(cdfs["cv"].values())
    pairs += [c for f in ("input_tokens", "output_tokens") for s in STATS for c in cdfs[f][s].values()]
    assert pairs
    for values, probs in pairs:
        if len(values):
            assert np.all(np.diff(probs) >= -1e-12) and probs[-1] == pytest.approx(1.0)
            assert np.all(np.diff(values) >= 0)
    windows = view.get()
    assert windows and all(0.5 <= w.cv <= 1.5 for w in windows)
    assert_cdfs_equal(cdfs, ref_cdfs(windows))
    first_ts = min(cdfs["rate"])
    assert len(sample_from_cdf(cdfs["rate"][first_ts], n_samples=10, rng=np.random.RandomState(0))) == 10


def test_builtin_filters_match_servegens_per_window_filters(small):
    base = small.span(36000, 39600)
    for method, args, kind in [("filter_by_cv", (0.5, 1.5), "cv"),
                               ("filter_by_avg_input_len", (100, 1000), "avg_input"),
                               ("filter_by_avg_output_len", (50, 400), "avg_output"),
                               ("filter_by_max_input_len", (20000,), "max_input"),
                               ("filter_by_max_output_len", (2000,), "max_output")]:
        fast = getattr(base.span(0, 3600), method)(*args).get()
        slow = base.span(0, 3600).filter(ref_filter(kind, *args)).get()
        assert keyed(fast) == keyed(slow) and fast, method
    assert_cdfs_equal(base.get_cdfs(), ref_cdfs(base.get()))


def test_clients_are_built_from_the_files(small, servegen_root):
    assert list(small.clients) == sorted(small.clients)
    cid = list(small.clients)[3]
    client = small.clients[cid]
    assert client is small.clients[cid]
    folder = Path(servegen_root) / "language" / "m-small"
    with open(folder / f"chunk-{cid}-trace.csv") as f:
        rows = [r for r in csv.reader(f) if r]
    assert list(client.trace) == [int(r[0]) for r in rows]
    for r in rows:
        got = client.trace[int(r[0])]
        if r[3] == "":
            assert got is None
        else:
            # (rel 1e-15: the compiled number parser may differ from float() in the last bit)
            want = (float(r[1]), float(r[2]), float(r[4]), float(r[5]))
            assert sorted(got) == ["cv", "pat", "rate"] and got["pat"][0] == r[3]
            assert (got["rate"], got["cv"], *got["pat"][1]) == pytest.approx(want, rel=1e-15, abs=0)
    doc = json.loads((folder / f"chunk-{cid}-dataset.json").read_text())
    for ts, fields in doc.items():
        literals = {k: ast.literal_eval(v) for k, v in fields.items()}
        if not all(literals.values()):
            continue  # ServeGen skips a window with an empty field
        for name, pdf in literals.items():
            dense = np.zeros(max(pdf) + 1)
            dense[list(pdf)] = list(pdf.values())
            np.testing.assert_allclose(client.dataset[int(ts)][name], np.trim_zeros(dense, "b"), atol=1e-12)
    client.validate()


def test_multimodal_workload(mm):
    view = mm.span(0, 600)
    requests = generate_workload(view, get_constant_rate_fn(view, 50.0), duration=600, seed=321)
    assert abs(len(requests) - 30000) < 3000
    assert all(list(r.data) == MM_KEYS for r in requests)
    for r in requests[:2000]:
        assert type(r.data["text_tokens"]) is int
        assert all(isinstance(r.data[k], list) for k in MM_KEYS[1:4])
        assert all(type(t) is int and t > 0 for t in r.data["image_tokens"])
    assert np.mean([len(r.data["image_tokens"]) for r in requests]) >= 0.5
    table = generate_table(view.columnar, 50.0, 600, seed=321)
    for key in MM_KEYS:
        assert [r.data[key] for r in requests] == table.column(key).to_pylist()
    # the lists are the items of input_tokens = text + items
    total = [r.data["text_tokens"] + sum(sum(r.data[k]) for k in MM_KEYS[1:4]) for r in requests]
    assert total == table.column("input_tokens").to_pylist()


def test_reasoning_workload(r1):
    view = r1.span(0, 3600)
    requests = generate_workload(view, get_constant_rate_fn(view, 20.0), duration=3600, seed=0)
    assert abs(len(requests) - 72000) < 7200
    assert all(list(r.data) == ["input_tokens", "output_tokens", "reason_ratio"] for r in requests)
    ratio = np.array([r.data["reason_ratio"] for r in requests])
    assert ratio.dtype == float and ratio.min() >= 0 and ratio.max() <= 1 and 0.1 < ratio.mean() < 0.99
    assert all(type(r.data["input_tokens"]) is int and r.data["input_tokens"] > 0 for r in requests[:1000])


def test_materialised_clients_round_trip(mm, r1):
    for pool in (mm, r1):
        clients = list(pool.clients.values())
        again = ClientPool.from_clients(pool.category, pool.model, clients)  # validates every client
        view_a, view_b = pool.span(21000, 22800), again.span(21000, 22800)
        fn = get_constant_rate_fn(view_a, 30.0)
        assert fn == get_constant_rate_fn(view_b, 30.0)
        a, b = generate_workload(view_a, fn, 1800, seed=9), generate_workload(view_b, fn, 1800, seed=9)
        assert [(r.request_id, r.timestamp) for r in a] == [(r.request_id, r.timestamp) for r in b]
        for key in a[0].data:
            x, y = [r.data[key] for r in a], [r.data[key] for r in b]
            # a materialised reason_ratio PDF puts value i/N at index i; the parsed literal
            # key may differ from i/N in the last bit
            assert x == (pytest.approx(y, rel=1e-15, abs=0) if key == "reason_ratio" else y), key
        assert_cdfs_equal(view_a.get_cdfs(), view_b.get_cdfs())


def test_columnar_pool_interop(small, servegen_root):
    view = small.span(0, 3600).filter_by_cv(0.2, 3.0)
    col = view.columnar
    assert col.n_windows == 6 and view.columnar is col
    assert {int(c) for c in col.client_ids} == {w.client_id for w in view.get()}
    native = read_servegen(servegen_root, "reason/deepseek-r1")
    wrapped = ClientPool.from_pool(native)
    fn = get_constant_rate_fn(wrapped.span(0, 600), 10.0)
    assert generate_workload(wrapped.span(0, 600), fn, 600, seed=1) == generate_workload(native.span(0, 600), fn,
                                                                                      600, seed=1)


# =========================================================================== seeds
def test_seeds_reproducible_and_isolated(small):
    view = small.span(7200, 8400)
    fn = get_constant_rate_fn(view, 30.0)
    np_state, py_state = np.random.get_state(), random.getstate()
    a = generate_workload(view, fn, 1200, seed=42)
    np.random.seed(1)
    random.seed(1)
    b = generate_workload(view, fn, 1200, seed=42)
    np.random.set_state(np_state)
    random.setstate(py_state)
    assert a == b
    assert a != generate_workload(view, fn, 1200, seed=43)
    before = np.random.get_state()[1].copy()
    c, d = generate_workload(view, fn, 1200), generate_workload(view, fn, 1200)
    assert c != d and np.array_equal(np.random.get_state()[1], before)


# =========================================================================== sample_from_cdf, CSV
def test_sample_from_cdf():
    cdf = (np.array([1, 2, 3, 4]), np.array([0.1, 0.3, 0.6, 1.0]))
    for rng in (np.random.RandomState(42), np.random.default_rng(42)):
        samples = sample_from_cdf(cdf, n_samples=20000, rng=rng)
        assert len(samples) == 20000 and set(samples.tolist()) <= {1, 2, 3, 4}
        np.testing.assert_allclose(np.bincount(samples, minlength=5)[1:] / 20000, [0.1, 0.2, 0.3, 0.4], atol=0.02)
    a = sample_from_cdf(cdf, 50, rng=np.random.RandomState(7))
    assert np.array_equal(a, sample_from_cdf(cdf, 50, rng=np.random.RandomState(7)))
    state = np.random.get_state()[1].copy()
    assert len(sample_from_cdf(cdf)) == 1 and np.array_equal(np.random.get_state()[1], state)
    assert len(sample_from_cdf((np.array([]), np.array([])), n_samples=5)) == 0
    # cumulative probabilities that stop short of 1 clip to the last value
    assert set(sample_from_cdf(([5, 6], [0.0, 0.5]), 200, rng=np.random.default_rng(0)).tolist()) == {6}


def test_save_requests_to_csv(tmp_path):
    requests = [Request(0, 0.5, {"input_tokens": 10, "output_tokens": 20}),
                Request(1, 1.2, {"input_tokens": 15, "output_tokens": 25})]
    path = tmp_path / "requests.csv"
    save_requests_to_csv(requests, str(path))
    assert path.read_text().splitlines() == ["request_id,timestamp,input_tokens,output_tokens",
                                             "0,0.5,10,20", "1,1.2,15,25"]
    with pytest.raises(ValueError, match="No requests to save"):
        save_requests_to_csv([], str(tmp_path / "none.csv"))


# =========================================================================== data directory
def test_data_directory_resolution(servegen_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SERVEGEN_DATA_DIR", raising=False)
    with pytest.raises(ValueError, match=re.escape(f"Data directory not found: {Path('data', 'reason', 'x')}")):
        ClientPool(Category.REASON, "x")
    assert len(ClientPool(Category.REASON, "deepseek-r1", data_dir=str(servegen_root)).clients) == 73
    monkeypatch.setenv("SERVEGEN_DATA_DIR", str(servegen_root))
    assert len(ClientPool(Category.MULTIMODAL, "mm-image").clients) == 35  # ./data missing: the variable
    (tmp_path / "data" / "reason").mkdir(parents=True)
    with pytest.raises(ValueError, match="Data directory not found"):  # ./data exists: ServeGen's default
        ClientPool(Category.REASON, "deepseek-r1")
    with pytest.raises(ValueError, match="Data directory not found"):
        ClientPool(Category.REASON, "deepseek-r1", base_dir=str(tmp_path / "elsewhere"))
    with pytest.raises(ValueError, match="category must be"):
        ClientPool("speech", "x")
    assert ClientPool("reason", "deepseek-r1", base_dir=str(servegen_root)).category is Category.REASON


# =========================================================================== a ServeGen script
SCRIPT = '''
from servegen import Category, ClientPool
from servegen.construct import generate_workload
from servegen.utils import get_constant_rate_fn, get_bounded_rate_fn, save_requests_to_csv, sample_from_cdf
import numpy as np

pool = ClientPool(Category.LANGUAGE, "m-small")
print(f"Loaded {len(pool.clients)} clients.")
view = pool.span(64800, 68400)
windows = view.get()
rate_fn = get_constant_rate_fn(view, 20.0)
requests = generate_workload(view, rate_fn, duration=3600, seed=0)
avg_input = sum(r.data["input_tokens"] for r in requests) / len(requests)
view = pool.span(39600, 43200)
bounded = generate_workload(view, get_bounded_rate_fn(view, 20.0), duration=3600, seed=0)
save_requests_to_csv(requests, "workload.csv")
filtered = (pool.span(72000, 75600).filter_by_cv(0.5, 1.5).filter_by_avg_input_len(100, 1000)
            .filter_by_max_output_len(2000))
cdfs = filtered.get_cdfs()
first_ts = min(cdfs["rate"].keys())
samples = sample_from_cdf(cdfs["rate"][first_ts], n_samples=100, rng=np.random.RandomState(0))
RESULT = (len(windows), len(requests), len(bounded), avg_input, samples.tolist())
'''


def run_script(source: str) -> tuple:
    namespace: dict = {"__name__": "__servegen_script__"}
    with pytest.warns(UserWarning, match="no dataset file"):
        exec(compile(source, "<servegen script>", "exec"), namespace)
    return namespace["RESULT"]


def test_servegen_script_runs_with_changed_imports(servegen_root, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SERVEGEN_DATA_DIR", str(servegen_root))
    # 1. the package renamed in every import line
    renamed = re.sub(r"^from servegen(\.\w+)? import", r"from servegen_fast.compat\1 import", SCRIPT, flags=re.M)
    # 2. all names from servegen_fast.compat, as docs/compat.md shows
    flat = re.sub(r"^from servegen(\.\w+)? import", "from servegen_fast.compat import", SCRIPT, flags=re.M)
    assert "from servegen " not in renamed and "servegen.construct" not in flat
    a, b = run_script(renamed), run_script(flat)
    assert a == b
    n_windows, n_requests, n_bounded, avg_input, samples = a
    assert n_windows > 0 and abs(n_requests - 72000) < 7200 and 0 < n_bounded < 80000 and avg_input > 0
    assert len(samples) == 100
    assert "Loaded 38 clients." in capsys.readouterr().out
    lines = (tmp_path / "workload.csv").read_text().splitlines()
    assert lines[0] == "request_id,timestamp,input_tokens,output_tokens" and len(lines) == n_requests + 1
