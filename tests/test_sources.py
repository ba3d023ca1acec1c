"""Request-log readers (servegen_fast.io.sources): Azure CSV, BurstGPT v1 / v3, Mooncake JSONL and
our traces; counted drops with line numbers, clear errors, ordering, and the real logs.

The BurstGPT fixtures are made up here (no real BurstGPT rows)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from servegen_fast.io.sources import FAILED, LogFormatError, read_log

BURST_V1 = """Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type
5.0,ChatGPT,100,20,120,Conversation log
6.5,GPT-4,300,0,300,API log
9.25,ChatGPT,50,10,60,Conversation log
this,line,is,not,valid
12.0,GPT-4,70,7,77,Conversation log
"""
BURST_V3 = """Timestamp,Session ID,Elapsed time,Model,Request tokens,Response tokens,Total tokens,Log Type
0.5,s1,1.2,ChatGPT,11,3,14,Conversation log
1.0,s2,0.7,GPT-4,22,0,22,API log
2.0,s1,2.0,ChatGPT,33,5,38,Conversation log
2.5,s3
4.0,s2,3.1,GPT-4,44,9,53,API log
"""
AZURE = """TIMESTAMP,ContextTokens,GeneratedTokens
2023-11-16 18:15:46.6805900,374,44
2023-11-16 18:15:50.9951690,396,109

2023-11-16 18:15:51.0000000,879,3
"""


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


# --------------------------------------------------------------------------- BurstGPT
def test_burstgpt_v1_malformed_line_raises_with_its_number(tmp_path):
    with pytest.raises(LogFormatError, match=r"v1\.csv, line 5: expected 6 comma-separated fields"):
        read_log(write(tmp_path, "v1.csv", BURST_V1), "burstgpt")


def test_burstgpt_v1_drop_counts_and_flags_failures(tmp_path):
    log = read_log(write(tmp_path, "v1.csv", BURST_V1), "burstgpt", on_error="drop")
    r = log.report
    assert (r.rows_read, r.rows_kept) == (5, 4)
    assert r.dropped == {"malformed (wrong number of fields)": 1} and r.lines["malformed (wrong number of fields)"] == [5]
    assert r.flagged == {FAILED: 1}
    assert np.array_equal(log.columns["failed"], [False, True, False, False])
    assert np.allclose(log.timestamp, [0.0, 1.5, 4.25, 7.0]) and log.start == 5.0
    assert list(log.input_tokens) == [100, 300, 50, 70] and list(log.output_tokens) == [20, 0, 10, 7]
    assert list(log.columns["Model"]) == ["ChatGPT", "GPT-4", "ChatGPT", "GPT-4"]
    assert log.resolution == pytest.approx(0.01)
    assert "lines 5" in r.describe()


def test_burstgpt_drop_failed(tmp_path):
    log = read_log(write(tmp_path, "v1.csv", BURST_V1), "burstgpt", on_error="drop", drop_failed=True)
    assert log.report.dropped[FAILED] == 1 and log.report.lines[FAILED] == [3]
    assert not log.columns["failed"].any() and len(log) == 3


def test_burstgpt_v3_reads_columns_by_name(tmp_path):
    log = read_log(write(tmp_path, "v3.csv", BURST_V3), on_error="drop")  # format detected from the header
    assert log.report.format == "burstgpt"
    assert log.report.lines == {"malformed (wrong number of fields)": [5]}
    assert list(log.input_tokens) == [11, 22, 33, 44] and list(log.output_tokens) == [3, 0, 5, 9]
    assert list(log.columns["Session ID"]) == ["s1", "s2", "s1", "s2"]
    assert set(log.key_columns()) == {"Session ID", "Model", "Log Type"}


# --------------------------------------------------------------------------- Azure
def test_azure_datetimes_and_blank_lines(tmp_path):
    log = read_log(write(tmp_path, "az.csv", AZURE))
    assert log.report.format == "azure" and (log.report.rows_read, log.report.rows_kept) == (3, 3)
    assert log.start_text == "2023-11-16 18:15:46.6805900"
    assert log.start == pytest.approx(1700158546.68059, abs=1e-6)
    assert np.allclose(log.timestamp, [0.0, 4.314579, 4.31941], atol=1e-6)
    assert log.resolution == pytest.approx(1e-7)


@pytest.mark.parametrize("row,line,match", [
    ("2023-11-16 18:15:52.0,-5,3", 6, "ContextTokens is '-5'; lengths must not be negative"),
    ("2023-11-16 18:15:52.0,5,x", 6, "GeneratedTokens is 'x'; expected a whole number"),
    ("2023-13-16 18:15:52.0,5,3", 6, "TIMESTAMP is '2023-13-16 18:15:52.0'; expected a date"),
    ("yesterday,5,3", 6, "TIMESTAMP is 'yesterday'"),
    ("2023-11-16 18:15:40.0,5,3", 6, "timestamp goes backwards"),
])
def test_azure_bad_rows(tmp_path, row, line, match):
    # line 4 of AZURE is blank, so the appended row is line 6
    p = write(tmp_path, "az.csv", AZURE + row + "\n")
    with pytest.raises(LogFormatError, match=rf"az\.csv, line {line}: .*{match}"):
        read_log(p, "azure")


def test_azure_bad_rows_dropped_and_counted(tmp_path):
    extra = "2023-11-16 18:15:52.0,-5,3\n2023-11-16 18:15:53.0,5,x\nnot a date,1,1\n2023-11-16 18:15:54.0,8,8\n"
    log = read_log(write(tmp_path, "az.csv", AZURE + extra), "azure", on_error="drop")
    r = log.report
    assert r.rows_read == 7 and r.rows_kept == 4
    assert r.dropped == {"negative length": 1, "unparseable length": 1, "unparseable timestamp": 1}
    assert r.lines == {"negative length": [6], "unparseable length": [7], "unparseable timestamp": [8]}


def test_unsorted_log_sorted_on_request(tmp_path):
    p = write(tmp_path, "az.csv", AZURE + "2023-11-16 18:15:40.0,5,3\n")
    log = read_log(p, "azure", sort=True)
    assert np.all(np.diff(log.timestamp) >= 0) and log.report.reordered == 4
    assert log.input_tokens[0] == 5 and log.start_text.startswith("2023-11-16 18:15:46")


@pytest.mark.parametrize("text,match", [
    ("", "empty file"),
    ("TIMESTAMP,ContextTokens,GeneratedTokens\n", "no requests"),
    ("time,in,out\n1,2,3\n", r"line 1: missing column\(s\) \['TIMESTAMP', 'ContextTokens', 'GeneratedTokens'\]"),
])
def test_azure_empty_or_wrong_columns(tmp_path, text, match):
    with pytest.raises(LogFormatError, match=match):
        read_log(write(tmp_path, "az.csv", text), "azure")


def test_everything_dropped_is_an_error(tmp_path):
    with pytest.raises(LogFormatError, match="no requests.*negative length"):
        read_log(write(tmp_path, "az.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:52,-1,2\n"),
                 "azure", on_error="drop")


# --------------------------------------------------------------------------- Mooncake
def mooncake_lines(rows):
    return "\n".join(json.dumps(r) if isinstance(r, dict) else r for r in rows) + "\n"


def test_mooncake_fast_path(tmp_path):
    p = write(tmp_path, "m.jsonl", mooncake_lines([
        {"timestamp": 1000, "input_length": 10, "output_length": 2, "hash_ids": [1, 2]},
        {"timestamp": 1000, "input_length": 20, "output_length": 3, "hash_ids": [1]},
        {"timestamp": 4000, "input_length": 30, "output_length": 4, "hash_ids": []}]))
    log = read_log(p)
    assert log.report.format == "mooncake" and len(log) == 3
    assert np.allclose(log.timestamp, [0.0, 0.0, 3.0]) and log.start == 1.0 and log.resolution == 1e-3
    assert list(log.output_tokens) == [2, 3, 4]


def test_mooncake_bad_lines(tmp_path):
    rows = [{"timestamp": 0, "input_length": 10, "output_length": 2},
            "{not json",
            {"timestamp": 5, "input_length": 10},
            {"timestamp": 6, "input_length": -3, "output_length": 1},
            {"timestamp": 7, "input_length": 3.5, "output_length": 1},
            {"timestamp": 9, "input_length": 4, "output_length": 1}]
    p = write(tmp_path, "m.jsonl", mooncake_lines(rows))
    with pytest.raises(LogFormatError, match=r"m\.jsonl, line 2: not a JSON object"):
        read_log(p)
    log = read_log(p, on_error="drop")
    assert log.report.lines == {"malformed (not a JSON object with numbers)": [2], "missing field": [3],
                                "negative length": [4], "unparseable length": [5]}
    assert len(log) == 2 and list(log.input_tokens) == [10, 4]


def test_mooncake_empty(tmp_path):
    with pytest.raises(LogFormatError, match="empty file"):
        read_log(write(tmp_path, "m.jsonl", "\n\n"), "mooncake")


# --------------------------------------------------------------------------- traces, detection
def test_trace_reader_keeps_clock_and_client_ids(tmp_path):
    from test_trace import make_pool  # a small synthetic pool

    from servegen_fast.sample.generate import generate_table
    from servegen_fast.io.trace import trace_schema, write_trace

    pool = make_pool([[2.0, 1.0], [0.5, 3.0]])
    meta = {"generator": "servegen-fast", "duration": 1200}
    table = generate_table(pool, None, 1200, seed=3, metadata=meta)
    path = write_trace(table.to_batches(), tmp_path / "t.parquet", trace_schema("language", pool.fields, metadata=meta))
    log = read_log(path)
    assert log.report.format == "trace" and len(log) == table.num_rows
    assert np.array_equal(log.timestamp, table.column("timestamp").to_numpy()) and log.start == 0.0
    assert log.span == 1200.0
    assert set(np.unique(log.columns["client_id"])) == set(pool.client_ids.tolist())


def test_detect_format_unknown_header(tmp_path):
    with pytest.raises(LogFormatError, match="cannot tell the log format"):
        read_log(write(tmp_path, "x.csv", "a,b\n1,2\n"))
    with pytest.raises(ValueError, match="unknown log format"):
        read_log(write(tmp_path, "y.csv", AZURE), "csv")


# --------------------------------------------------------------------------- real logs
def test_real_logs(shared_data):
    az = read_log(shared_data / "azure-llm-2023-conv.csv")
    assert az.report.format == "azure" and len(az) == 19366 and not az.report.dropped
    assert az.start_text.startswith("2023-11-16 18:15:46") and 3000 < az.span < 3600
    mc = read_log(shared_data / "mooncake-conversation.jsonl")
    assert mc.report.format == "mooncake" and len(mc) == 12031 and not mc.report.dropped
    assert mc.resolution == 1e-3 and np.all(np.diff(mc.timestamp) >= 0)


def test_mooncake_block_size_is_inferred_or_checked(tmp_path):
    rows = lambda bs: [{"timestamp": i, "input_length": L, "output_length": 1, "hash_ids": list(range(-(-L // bs)))}
                       for i, L in enumerate((1, 16, 17, 100, 1000, 4097))]
    for bs in (16, 64, 512):
        log = read_log(write(tmp_path, f"b{bs}.jsonl", mooncake_lines(rows(bs))), "mooncake")
        assert log.block_size == bs and not log.report.flagged
    # ids that fit no single size are kept and flagged, with Mooncake's 512 assumed
    odd = write(tmp_path, "odd.jsonl", mooncake_lines([{"timestamp": 0, "input_length": 10, "output_length": 1,
                                                        "hash_ids": [1, 2]},
                                                       {"timestamp": 1, "input_length": 20, "output_length": 1,
                                                        "hash_ids": [1]}]))
    log = read_log(odd, "mooncake")
    assert log.block_size == 512 and len(log) == 2 and list(log.report.flagged.values()) == [2]
    # a given size checks every row: a mismatch names its line, or is dropped and counted
    p = write(tmp_path, "b16.jsonl", mooncake_lines(rows(16)))
    with pytest.raises(LogFormatError, match=r"b16\.jsonl, line 3: 2 hash_ids for input_length 17; expected 1 blocks of 64"):
        read_log(p, "mooncake", block_size=64)
    log = read_log(p, "mooncake", block_size=64, on_error="drop")
    assert len(log) == 2 and log.block_size == 64  # 1 and 16 tokens are one block at either size
    with pytest.raises(ValueError, match="block_size"):
        read_log(p, "mooncake", block_size=0)
