"""Reader and writer of ServeGen's data directory format, checked against independent
plain-Python parses of the real data and on small synthetic directories."""
from __future__ import annotations

import csv
import json
import os
import re
import warnings
from pathlib import Path

import numpy as np
import pytest

from servegen_fast import read_servegen, write_servegen
from servegen_fast.model.fields import LAW_CODES, LAW_IDLE, NO_DIST
from servegen_fast.io.servegen_format import ServeGenFormatError

LANGUAGE = ("input_tokens", "output_tokens")
MULTIMODAL = ("text_tokens", "image_tokens", "audio_tokens", "video_tokens",
              "image_count", "audio_count", "video_count", "output_tokens")
REASON = ("input_tokens", "output_tokens", "reason_ratio")

# pool -> (clients with a dataset file, clients with a trace file, windows, fields)
EXPECTED = {
    "language/m-large": (147, 162, 2016, LANGUAGE),
    "language/m-mid": (74, 109, 2016, LANGUAGE),
    "language/m-small": (38, 43, 2016, LANGUAGE),
    "multimodal/mm-image": (35, 35, 144, MULTIMODAL),
    "reason/deepseek-r1": (73, 73, 144, REASON),
}
_TRACE = re.compile(r"^chunk-(\d+)-trace\.csv$")
_DATASET = re.compile(r"^chunk-(\d+)-dataset\.json$")


def _load(root: Path, name: str):
    """read_servegen, asserting the one warning about missing dataset files (or none)."""
    n_data, n_trace, _, _ = EXPECTED[name]
    if n_data == n_trace:
        return read_servegen(root, name)  # any warning is an error (pytest config)
    with pytest.warns(UserWarning, match=rf"{n_trace - n_data} of {n_trace} clients have no dataset file") as rec:
        pool = read_servegen(root, name)
    assert len(rec) == 1
    return pool


@pytest.fixture(scope="module")
def pools(servegen_root):
    cache: dict = {}

    def get(name: str):
        if name not in cache:
            cache[name] = _load(servegen_root, name)
        return cache[name]
    return get


# --------------------------------------------------------------------------- plain-Python parsers
def parse_literal(text: str) -> tuple[list[float], list[float]]:
    """Parse a ServeGen dict literal ``{value: probability, ...}`` without eval."""
    text = text.strip()
    assert text.startswith("{") and text.endswith("}"), text[:40]
    body = text[1:-1].strip()
    if not body:
        return [], []
    keys, probs = [], []
    for item in body.split(","):
        k, p = item.split(":")
        keys.append(float(k))
        probs.append(float(p))
    return keys, probs


def client_files(model_dir: Path) -> tuple[dict[int, str], dict[int, str]]:
    names = os.listdir(model_dir)
    traces = {int(m.group(1)): n for n in names if (m := _TRACE.match(n))}
    datasets = {int(m.group(1)): n for n in names if (m := _DATASET.match(n))}
    return traces, datasets


def reference_dist(model_dir: Path, cid: int, field: str, ts: int):
    """ServeGen's rule by hand: the latest length window at or before `ts` none of whose
    literals is empty (before the first one: the first one). Returns (window key, values, probs)."""
    with open(model_dir / f"chunk-{cid}-dataset.json") as f:
        doc = json.load(f)
    usable = sorted(int(k) for k, flds in doc.items()
                    if all(parse_literal(v)[0] for v in flds.values()))
    assert usable, f"client {cid} has no usable length window"
    before = [k for k in usable if k <= ts]
    key = before[-1] if before else usable[0]
    keys, probs = parse_literal(doc[str(key)][field])
    keys, probs = np.array(keys), np.array(probs)
    keep = probs > 0
    return key, keys[keep], probs[keep] / probs[keep].sum()


# --------------------------------------------------------------------------- real pools
@pytest.mark.parametrize("name", list(EXPECTED))
def test_shape_of_shared_pools(pools, servegen_root, name):
    n_data, n_trace, n_windows, fields = EXPECTED[name]
    pool = pools(name)
    traces, datasets = client_files(servegen_root / name)
    assert len(traces) == n_trace and len(datasets) == n_data
    assert pool.n_clients == n_data
    np.testing.assert_array_equal(pool.client_ids, sorted(datasets))
    assert pool.n_windows == n_windows
    assert pool.fields == fields
    assert pool.category == name.split("/")[0] and pool.model == name.split("/")[1]
    assert pool.window_size == 600 and pool.length_window_size == 21600
    np.testing.assert_array_equal(pool.window_start, np.arange(n_windows) * 600)
    assert np.all(pool.window_len == 600)
    assert pool.duration == n_windows * 600
    assert pool.dist_id.shape == (n_data, -(-n_windows * 600 // 21600), len(fields))
    assert pool.dist_id.max() < len(pool.dists)
    # idle exactly where the pattern is empty; no rate there
    idle = pool.law == LAW_IDLE
    assert np.all(pool.rate[idle] == 0) and np.all(pool.rate[~idle] > 0)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_aggregate_rate_matches_plain_csv_parse(pools, servegen_root, name):
    pool = pools(name)
    model_dir = servegen_root / name
    traces, datasets = client_files(model_dir)
    total: dict[int, float] = {}
    for cid in datasets:
        with open(model_dir / traces[cid], newline="") as f:
            for row in csv.reader(f):
                if not row:
                    continue
                ts, rate, pattern = int(float(row[0])), float(row[1]), row[3]
                total.setdefault(ts, 0.0)
                if pattern.strip():
                    assert pattern in LAW_CODES
                    total[ts] += rate
    want = np.array([total[t] for t in sorted(total)])
    got = pool.aggregate_rate()
    assert got.shape == (pool.n_windows,) == want.shape
    assert want.sum() > 0
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=0)


@pytest.mark.parametrize("name, picks", [
    ("language/m-small", [(0, 0), (3, 10), (-1, 40)]),
    ("language/m-large", [(0, 5), (50, 30), (-1, 55)]),
    ("multimodal/mm-image", [(0, 0), (17, 2), (-1, 3)]),
    ("reason/deepseek-r1", [(0, 0), (20, 1), (-1, 3)]),
])
def test_length_distributions_match_plain_parse(pools, servegen_root, name, picks):
    pool = pools(name)
    model_dir = servegen_root / name
    checked = 0
    for c, d in picks:
        cid = int(pool.client_ids[c])
        for f, field in enumerate(pool.fields):
            _, values, probs = reference_dist(model_dir, cid, field, d * pool.length_window_size)
            v, p = pool.dists.get(pool.dist_id[c, d, f])
            if field == "reason_ratio":
                # ratios with 16-17 significant digits: the byte parser is within one ulp
                np.testing.assert_array_max_ulp(v, values, maxulp=1)
            else:
                np.testing.assert_array_equal(v, values)
            np.testing.assert_allclose(p, probs, rtol=0, atol=1e-12)
            checked += 1
    assert checked == len(picks) * len(pool.fields)


@pytest.mark.parametrize("name", ["language/m-small", "reason/deepseek-r1"])
def test_forward_fill_of_empty_length_window(pools, servegen_root, name):
    """A length window with an empty literal takes the previous window's distribution."""
    pool = pools(name)
    model_dir = servegen_root / name
    lws = pool.length_window_size
    found = 0
    for c, cid in enumerate(pool.client_ids):
        with open(model_dir / f"chunk-{cid}-dataset.json") as f:
            doc = json.load(f)
        keys = sorted(int(k) for k in doc)
        empty = [any(v.strip() == "{}" for v in doc[str(k)].values()) for k in keys]
        for j in range(1, len(keys)):
            if empty[j] and not empty[j - 1]:
                d = keys[j] // lws
                assert d < pool.dist_id.shape[1]
                np.testing.assert_array_equal(pool.dist_id[c, d], pool.dist_id[c, d - 1])
                assert np.all(pool.dist_id[c, d] != NO_DIST)
                # and the previous window's distribution is its own literal
                _, values, _ = reference_dist(model_dir, int(cid), pool.fields[0], keys[j - 1])
                np.testing.assert_array_max_ulp(pool.dists.get(pool.dist_id[c, d, 0])[0], values, maxulp=1)
                found += 1
    assert found > 0, "the data has no empty length window after a non-empty one"


def test_leading_empty_windows_take_first_distribution(pools, servegen_root):
    """Before a client's first non-empty length window it uses that first window."""
    pool = pools("language/m-small")
    cid = 0  # its first windows are all '{}' in the released data
    c = int(np.flatnonzero(pool.client_ids == cid)[0])
    with open(servegen_root / "language/m-small" / f"chunk-{cid}-dataset.json") as f:
        doc = json.load(f)
    first = min(int(k) for k, flds in doc.items() if all(v.strip() != "{}" for v in flds.values()))
    d_first = first // pool.length_window_size
    assert d_first > 0
    for d in range(d_first):
        np.testing.assert_array_equal(pool.dist_id[c, d], pool.dist_id[c, d_first])


# --------------------------------------------------------------------------- writer round trip
def _assert_same_pool(a, b):
    np.testing.assert_array_equal(a.client_ids, b.client_ids)
    assert a.fields == b.fields and a.category == b.category
    assert a.n_windows == b.n_windows
    np.testing.assert_array_equal(a.window_len, b.window_len)
    for name in ("rate", "cv", "law", "shape", "scale"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype, name
        np.testing.assert_array_equal(x, y, err_msg=name)
    # per arrival window (a span keeps its source's length-window axis), compare the
    # distributions by content: ids may be numbered differently
    ia = np.stack([a.window_dist_id(f) for f in a.fields])
    ib = np.stack([b.window_dist_id(f) for f in b.fields])
    np.testing.assert_array_equal(ia == NO_DIST, ib == NO_DIST)
    pairs = {(int(i), int(j)) for i, j in zip(ia.ravel(), ib.ravel()) if i != NO_DIST}
    assert len({i for i, _ in pairs}) == len(pairs), "one distribution became several"
    for i, j in pairs:
        (va, pa), (vb, pb) = a.dists.get(i), b.dists.get(j)
        assert len(va) == len(vb)
        np.testing.assert_allclose(vb, va, rtol=1e-15, atol=0)
        np.testing.assert_allclose(pb, pa, rtol=0, atol=1e-15)


@pytest.mark.parametrize("name, span", [
    ("language/m-small", None),
    ("multimodal/mm-image", None),
    ("reason/deepseek-r1", None),
    ("language/m-large", (86400, 3 * 86400)),  # aligned to length windows
])
def test_writer_round_trip(pools, tmp_path, name, span):
    pool = pools(name)
    if span is not None:
        pool = pool.span(*span)
        assert 0 < pool.n_clients < pools(name).n_clients and pool.origin == span[0]
    out = tmp_path / "model"
    assert write_servegen(pool, out) == out
    names = os.listdir(out)
    assert not [n for n in names if n.endswith(".tmp")]
    assert len(names) == 2 * pool.n_clients
    back = read_servegen(out, category=pool.category)
    assert back.model == "model"
    _assert_same_pool(pool, back)


def test_writer_output_is_plain_servegen(tmp_path):
    """The written files follow ServeGen's layout: six CSV fields, empty pattern when idle,
    and dataset values that Python reads back as the same dict."""
    pool = _read_synthetic(_write_synthetic(tmp_path / "src" / "language" / "toy"))
    out = write_servegen(pool, tmp_path / "out")
    with open(out / "chunk-0-trace.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert len(rows) == pool.n_windows and all(len(r) == 6 for r in rows)
    assert rows[2] == ["1200", "0", "0", "", "0", "0"]  # idle
    assert rows[0][3] == "Gamma" and float(rows[0][1]) == 2.0
    with open(out / "chunk-0-dataset.json") as f:
        doc = json.load(f)
    assert sorted(doc, key=int) == ["0", "1200", "2400"]
    assert parse_literal(doc["0"]["input_tokens"]) == ([10.0, 20.0], [0.25, 0.75])


# --------------------------------------------------------------------------- synthetic directories
GOOD_TRACE = ("0,2.0,1.5,Gamma,0.4444444444444444,1.125\n"
              "600,1.0,1.0,Exponential,1.0,1.0\n"
              "1200,0,0,,0,0\n"
              "1800,0.5,0.8,Weibull,1.2,2.0\n"
              "2400,1.0,1.0,Exponential,1.0,1.0\n"
              "3000,1.0,1.0,Exponential,1.0,1.0\n")
GOOD_DATASET = {
    "0": {"input_tokens": "{10: 0.25, 20: 0.75}", "output_tokens": "{5: 1.0}"},
    "1200": {"input_tokens": "{30: 0.5, 40: 0.0, 50: 0.5}", "output_tokens": "{6: 0.5, 7: 0.5}"},
    "2400": {"input_tokens": "{}", "output_tokens": "{8: 1.0}"},  # skipped whole
}


def _write_synthetic(model_dir: Path, clients=None) -> Path:
    """clients: {id: (trace text or None, dataset object/str or None)}."""
    model_dir.mkdir(parents=True, exist_ok=True)
    if clients is None:
        clients = {0: (GOOD_TRACE, GOOD_DATASET)}
    for cid, (trace, dataset) in clients.items():
        if trace is not None:
            (model_dir / f"chunk-{cid}-trace.csv").write_text(trace)
        if dataset is not None:
            text = dataset if isinstance(dataset, str) else json.dumps(dataset)
            (model_dir / f"chunk-{cid}-dataset.json").write_text(text)
    return model_dir


def _read_synthetic(model_dir: Path):
    return read_servegen(model_dir)


def test_synthetic_directory_reads(tmp_path):
    late = {"1200": GOOD_DATASET["1200"]}  # first length window only at 1200
    model_dir = _write_synthetic(tmp_path / "language" / "toy",
                                 {0: (GOOD_TRACE, GOOD_DATASET), 7: (GOOD_TRACE, late)})
    pool = read_servegen(model_dir)
    assert pool.category == "language" and pool.model == "toy"
    np.testing.assert_array_equal(pool.client_ids, [0, 7])
    assert pool.length_window_size == 1200 and pool.n_windows == 6
    np.testing.assert_array_equal(pool.length_index, [0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(pool.law[0], [LAW_CODES["Gamma"], LAW_CODES["Exponential"], LAW_IDLE,
                                                LAW_CODES["Weibull"], LAW_CODES["Exponential"],
                                                LAW_CODES["Exponential"]])
    np.testing.assert_array_equal(pool.rate[0], [2.0, 1.0, 0.0, 0.5, 1.0, 1.0])
    np.testing.assert_array_equal(pool.cv[0], [1.5, 1.0, 0.0, 0.8, 1.0, 1.0])
    np.testing.assert_array_equal(pool.shape[0], [0.4444444444444444, 1.0, 0.0, 1.2, 1.0, 1.0])
    np.testing.assert_array_equal(pool.scale[0], [1.125, 1.0, 0.0, 2.0, 1.0, 1.0])
    fi = pool.fields.index("input_tokens")
    ids = pool.dist_id[:, :, fi]
    # client 0: windows 0, 1, then 2400's empty literal -> forward fill from 1200
    assert ids[0, 2] == ids[0, 1] != ids[0, 0]
    v, p = pool.dists.get(ids[0, 0])
    np.testing.assert_array_equal(v, [10, 20])
    np.testing.assert_allclose(p, [0.25, 0.75], atol=1e-15)
    v, p = pool.dists.get(ids[0, 1])
    np.testing.assert_array_equal(v, [30, 50])  # zero-probability point dropped
    # output_tokens of 2400 is non-empty but the window is skipped whole
    fo = pool.fields.index("output_tokens")
    np.testing.assert_array_equal(pool.dists.get(pool.dist_id[0, 2, fo])[0], [6, 7])
    # client 7: back-filled before its first window; shares client 0's distributions
    np.testing.assert_array_equal(pool.dist_id[1], pool.dist_id[0, [1, 1, 1]])
    assert len(pool.dists) == 4


def _expect_error(tmp_path, clients, match, exc=ServeGenFormatError, category="language"):
    model_dir = _write_synthetic(tmp_path / category / "toy", clients)
    with pytest.raises(exc, match=match):
        read_servegen(model_dir)


def _trace_with(line2: str) -> str:
    lines = GOOD_TRACE.splitlines()
    lines[1] = line2
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("line2, match", [
    ("600,1.0,1.0", r"chunk-0-trace\.csv, line 2: expected 6 comma-separated fields .*found 3"),
    ("600,abc,1.0,Gamma,1.0,1.0", r"chunk-0-trace\.csv, line 2: field 2 \(rate\) is not a number"),
    ("600,1.0,-0.5,Gamma,1.0,1.0", r"chunk-0-trace\.csv, line 2: cv is -0\.5; expected a non-negative number"),
    ("600,-1.0,0.5,Gamma,1.0,1.0", r"chunk-0-trace\.csv, line 2: rate is -1\.0; expected a non-negative"),
    ("600,1.0,1.0,Lognormal,1.0,1.0",
     r"chunk-0-trace\.csv, line 2: unknown arrival pattern; expected one of .*'Gamma', 'Weibull', 'Exponential'"),
    ("600,1.0,1.0,Gamma,1.0,1.0,7", r"chunk-0-trace\.csv, line 2: more than 6 fields"),
    ("600,1.0,1.0,Gamma,0,1.0", r"chunk-0-trace\.csv, line 2: param1 \(shape\) is 0\.0; expected a positive"),
])
def test_bad_trace_rows(tmp_path, line2, match):
    _expect_error(tmp_path, {0: (GOOD_TRACE, GOOD_DATASET), 1: (_trace_with(line2), GOOD_DATASET)},
                  match.replace("chunk-0", "chunk-1"))


def test_bad_trace_line_number_counts_blank_lines(tmp_path):
    trace = GOOD_TRACE.replace("1200,0,0,,0,0\n", "1200,0,0,,0,0\n\n") .replace("1800,0.5,0.8", "1800,0.5,-0.8")
    _expect_error(tmp_path, {0: (trace, GOOD_DATASET)}, r"chunk-0-trace\.csv, line 5: cv is -0\.8")


def _dataset_with(literal: str, field: str = "input_tokens") -> dict:
    doc = json.loads(json.dumps(GOOD_DATASET))
    doc["1200"][field] = literal
    return doc


@pytest.mark.parametrize("literal, match", [
    ("{30: 0.5, 50: 0.4}", r"window 1200, field 'input_tokens': the PDF sums to 0\.9\d*; expected 1"),
    ("{30: 0.5, 50 0.5}", r"window 1200, field 'input_tokens': expected a dict literal"),
    ("{30: 0.5, 50: abc}", r"window 1200, field 'input_tokens': expected a number"),
    ("[30, 50]", r"window 1200, field 'input_tokens': expected a dict literal"),
    ("{30: 0.5, 50: 0.5", r"window 1200, field 'input_tokens': expected a dict literal"),
    ("{30: 1.5, 50: -0.5}", r"window 1200, field 'input_tokens': the PDF has a negative probability"),
    ("{50: 0.5, 30: 0.5}", r"window 1200, field 'input_tokens': the PDF has values not in ascending order"),
])
def test_bad_dict_literals(tmp_path, literal, match):
    _expect_error(tmp_path, {0: (GOOD_TRACE, _dataset_with(literal))}, r"chunk-0-dataset\.json, " + match)


def test_bad_dataset_documents(tmp_path):
    _expect_error(tmp_path / "a", {0: (GOOD_TRACE, '{"0": {')}, r"chunk-0-dataset\.json: not valid JSON")
    _expect_error(tmp_path / "b", {0: (GOOD_TRACE, "[1, 2]")}, r"chunk-0-dataset\.json: expected a JSON object")
    _expect_error(tmp_path / "c", {0: (GOOD_TRACE, {"zero": GOOD_DATASET["0"]})},
                  r"chunk-0-dataset\.json: window key 'zero' is not an integer timestamp")
    _expect_error(tmp_path / "d", {0: (GOOD_TRACE, {"0": {"input_tokens": {"10": 1.0}}})},
                  r"chunk-0-dataset\.json, window 0: expected an object of field -> dict-literal string")


def test_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"ServeGen data directory not found: .*nowhere"):
        read_servegen(tmp_path / "language" / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"language/absent"):
        read_servegen(tmp_path, "language/absent")


def test_empty_directory(tmp_path):
    (tmp_path / "language" / "empty").mkdir(parents=True)
    with pytest.raises(ServeGenFormatError, match=r"empty: no chunk-<id>-trace\.csv files"):
        read_servegen(tmp_path / "language" / "empty")


def test_dataset_without_trace(tmp_path):
    _expect_error(tmp_path, {0: (GOOD_TRACE, GOOD_DATASET), 5: (None, GOOD_DATASET)},
                  r"chunk-5-dataset\.json: dataset without a trace file chunk-5-trace\.csv")


def test_traces_with_different_timestamps(tmp_path):
    short = "".join(GOOD_TRACE.splitlines(keepends=True)[:4])
    _expect_error(tmp_path / "a", {0: (GOOD_TRACE, GOOD_DATASET), 1: (short, GOOD_DATASET)},
                  r"chunk-1-trace\.csv: timestamps differ from those of chunk-0-trace\.csv \(4 rows vs 6\)")
    shifted = GOOD_TRACE.replace("3000,", "3600,")
    _expect_error(tmp_path / "b", {0: (GOOD_TRACE, GOOD_DATASET), 1: (shifted, GOOD_DATASET)},
                  r"chunk-1-trace\.csv: timestamps differ")


def test_uneven_timestamps(tmp_path):
    _expect_error(tmp_path, {0: (GOOD_TRACE.replace("3000,", "3600,"), GOOD_DATASET)},
                  r"chunk-0-trace\.csv, row 6: timestamps must ascend in equal integer steps")


def test_empty_trace_file(tmp_path):
    _expect_error(tmp_path, {0: ("\n", GOOD_DATASET)}, r"chunk-0-trace\.csv: no trace rows")


def test_unknown_category(tmp_path):
    model_dir = _write_synthetic(tmp_path / "elsewhere" / "toy")
    with pytest.raises(ValueError, match=r"cannot tell the category .*'elsewhere'"):
        read_servegen(model_dir)
    assert read_servegen(model_dir, category="reason").category == "reason"


def test_missing_dataset_files_warn_once(tmp_path):
    model_dir = _write_synthetic(tmp_path / "language" / "toy",
                                 {0: (GOOD_TRACE, GOOD_DATASET), 1: (GOOD_TRACE, None), 2: (GOOD_TRACE, GOOD_DATASET)})
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        pool = read_servegen(model_dir)
    assert len(rec) == 1
    assert issubclass(rec[0].category, UserWarning)
    msg = str(rec[0].message)
    assert "1 of 3 clients have no dataset file" in msg and "[1]" in msg and "toy" in msg
    np.testing.assert_array_equal(pool.client_ids, [0, 2])


def test_no_client_with_a_dataset(tmp_path):
    model_dir = _write_synthetic(tmp_path / "language" / "toy", {0: (GOOD_TRACE, None), 1: (GOOD_TRACE, None)})
    with pytest.warns(UserWarning, match=r"2 of 2 clients"):
        with pytest.raises(ServeGenFormatError, match=r"no client has both a trace and a dataset file"):
            read_servegen(model_dir)


# --------------------------------------------------------------------------- the pool cache (io/pool_cache.py)
def _pool_arrays(p) -> dict:
    from servegen_fast.io.pool_codec import _ARRAYS, _TABLE

    out = {n: getattr(p, n) for n in _ARRAYS if getattr(p, n) is not None}
    out.update({"dists." + n: getattr(p.dists, n) for n in _TABLE})
    return out


def test_pool_cache_gives_the_parsed_pool_exactly(servegen_root, tmp_path, monkeypatch):
    from servegen_fast.io import pool_cache

    monkeypatch.setenv("SERVEGEN_FAST_POOL_CACHE", str(tmp_path / "pools"))
    model = servegen_root / "language" / "m-small"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # m-small's clients without a dataset file
        parsed = read_servegen(model, cache=False)
        assert not (tmp_path / "pools").exists()  # cache=False neither reads nor writes
        first = read_servegen(model)  # parses and keeps
    entries = list((tmp_path / "pools").glob("*.parquet"))
    assert len(entries) == 1
    import pyarrow.parquet as pq

    column = pq.ParquetFile(entries[0]).metadata.row_group(0).column(0)  # the fast-to-read form
    assert column.compression == "LZ4" and not column.has_dictionary_page
    calls = []
    monkeypatch.setattr("servegen_fast.io.servegen_format._parse", lambda *a: calls.append(a))
    with pytest.warns(UserWarning, match="5 of 43 clients have no dataset file"):  # still said from the cache
        cached = read_servegen(model)  # from the cache: no parse
    assert calls == [] and cached is not None
    for p in (first, cached):
        assert (p.model, p.category, p.fields, p.window_size, p.length_window_size, p.origin) == \
               (parsed.model, parsed.category, parsed.fields, parsed.window_size, parsed.length_window_size,
                parsed.origin)
        a, b = _pool_arrays(parsed), _pool_arrays(p)
        assert a.keys() == b.keys()
        for k in a:
            assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k
    assert pool_cache.entry_key(model, "language") != pool_cache.entry_key(model, "reason")


def test_pool_cache_follows_edits_and_survives_bad_folders(tmp_path, monkeypatch):
    model = _write_synthetic(tmp_path / "data" / "language" / "toy")
    monkeypatch.setenv("SERVEGEN_FAST_POOL_CACHE", str(tmp_path / "pools"))
    assert read_servegen(model).rate[0, 0] == 2.0
    (model / "chunk-0-trace.csv").write_text(GOOD_TRACE.replace("0,2.0,1.5", "0,3.0,1.5", 1))
    assert read_servegen(model).rate[0, 0] == 3.0  # a new key: parsed again, not the kept pool
    (model / "chunk-0-trace.csv").write_text(GOOD_TRACE.replace("Gamma", "Poisson", 1))
    with pytest.raises(ServeGenFormatError, match="unknown arrival pattern"):
        read_servegen(model)  # a broken file is an error, cache or not
    (model / "chunk-0-trace.csv").write_text(GOOD_TRACE)
    entries = list((tmp_path / "pools").glob("*.parquet"))
    for e in entries:
        e.write_bytes(b"not parquet")  # a corrupt entry is parsed around and replaced
    assert read_servegen(model).rate[0, 0] == 2.0
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for where in (str(blocker), "off"):  # a folder that cannot be made, or caching off: plain parse
        monkeypatch.setenv("SERVEGEN_FAST_POOL_CACHE", where)
        assert read_servegen(model).rate[0, 0] == 2.0
    assert blocker.read_text() == "x"
