"""Summary and fidelity statistics (servegen_fast.characterize.analyze), plots, and the fit / analyze CLI
round trip (fit -> generate --pool -> analyze --against)."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from scipy import stats

from servegen_fast.characterize import analyze as A
from servegen_fast.cli import main
from servegen_fast.io.sources import ReadReport, RequestLog


def make_log(t, inp=None, out=None, **cols) -> RequestLog:
    t = np.asarray(t, dtype=np.float64)
    n = len(t)
    inp = np.arange(1, n + 1) if inp is None else inp
    out = np.arange(1, n + 1)[::-1] if out is None else out
    return RequestLog(t, np.asarray(inp, np.int64), np.asarray(out, np.int64), cols, 0.0, 0.0,
                      ReadReport("mem", "trace", n, n))


def test_ks_and_spearman_match_scipy():
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 50, 700).astype(float), rng.integers(5, 60, 500).astype(float)
    assert A.ks_2samp(x, y) == pytest.approx(stats.ks_2samp(x, y).statistic, abs=1e-12)
    a = rng.integers(0, 20, 300).astype(float)
    b = a + rng.integers(0, 10, 300)
    assert A.spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic, abs=1e-12)


def test_periodic_and_poisson_statistics():
    periodic = A.summarize(make_log(np.arange(0, 3600, 0.5)))
    assert periodic["iat_cv"] == pytest.approx(0.0, abs=1e-9) and periodic["burstiness"] == pytest.approx(-1.0)
    assert periodic["idc_by_scale"]["60"] == pytest.approx(0.0, abs=1e-12)
    assert periodic["rate_series"][:3] == pytest.approx([2.0, 2.0, 2.0])
    rng = np.random.default_rng(4)
    t = np.cumsum(rng.exponential(0.1, 36000))
    s = A.summarize(make_log(t[t < 3600]))
    # Poisson: CV 1, IDC 1, B 0 (36,000 draws: within 0.05 / 0.15 / 0.03)
    assert abs(s["iat_cv"] - 1) < 0.05 and abs(s["iat_cv_by_scale"]["60"] - 1) < 0.05
    assert abs(s["idc_by_scale"]["10"] - 1) < 0.15 and abs(s["burstiness"]) < 0.03


def test_top_client_share():
    s = A.summarize(make_log(np.arange(10.0), client_id=np.array([1, 1, 1, 1, 1, 1, 2, 2, 3, 3])))
    assert s["clients"]["count"] == 3 and s["clients"]["top_share"]["1"] == pytest.approx(0.6)
    with pytest.raises(ValueError, match="client key 'nope'"):
        A.summarize(make_log(np.arange(3.0)), client_key="nope")


def test_compare_with_itself_is_exact():
    rng = np.random.default_rng(1)
    log = make_log(np.sort(rng.uniform(0, 1000, 3000)), rng.integers(1, 900, 3000), rng.integers(1, 90, 3000))
    f = A.compare(log, log)["fidelity"]
    for key in ("requests_error", "ks_input_tokens", "ks_output_tokens", "ks_iat", "rate_series_error",
                "iat_cv_error", "burstiness_difference"):
        assert f[key] == 0.0, key
    text = A.format_comparison(A.compare(log, log))
    assert "request count error" in text and "+0.0%" in text


# --------------------------------------------------------------------------- CLI round trip
@pytest.fixture
def azure_csv(tmp_path):
    """A synthetic Azure-format log: 40 minutes of bursty (Gamma cv 2) arrivals, starting at 10:00."""
    rng = np.random.default_rng(7)
    t = np.cumsum(rng.gamma(0.25, 0.4 / 0.25, 40000))
    t = t[t < 2400]
    base = np.datetime64("2024-05-01T10:00:00.000000")
    stamps = (base + (t * 1e6).astype("timedelta64[us]")).astype(str)
    inp = rng.lognormal(6, 1, len(t)).astype(int) + 1
    out = rng.lognormal(4, 0.8, len(t)).astype(int)
    lines = ["TIMESTAMP,ContextTokens,GeneratedTokens"] + [f"{s.replace('T', ' ')},{i},{o}"
                                                          for s, i, o in zip(stamps, inp, out)]
    path = tmp_path / "azure.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_cli_fit_generate_analyze(azure_csv, tmp_path, capsys):
    pool, trace, report = tmp_path / "pool.parquet", tmp_path / "trace.parquet", tmp_path / "fit.json"
    assert main(["fit", str(azure_csv), "--format", "azure", "-o", str(pool), "--report", str(report)]) == 0
    out = capsys.readouterr().out
    assert "fitted 1 client(s) x 4 windows of 600 s" in out and "rows read" in out
    rep = json.loads(report.read_text())
    assert rep["start"].startswith("2024-05-01 10:00:00") and rep["client_labels"] == ["all"]
    assert main(["generate", "--pool", str(pool), "-o", str(trace), "--seed", "3", "-q"]) == 0
    capsys.readouterr()
    assert main(["analyze", str(trace), "--against", str(azure_csv), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    f = res["fidelity"]
    assert abs(f["requests_error"]) < 0.01 and f["ks_input_tokens"] < 0.05 and f["ks_output_tokens"] < 0.05
    assert abs(f["iat_cv_error"]) < 0.15
    assert res["reference"]["requests"] == rep["requests"]


def test_cli_analyze_text_and_plots(azure_csv, tmp_path, capsys):
    plots = tmp_path / "plots"
    assert main(["analyze", str(azure_csv), "--plots", str(plots)]) == 0
    out = capsys.readouterr().out
    assert "IDC of counts, 60 s bins" in out and "input_tokens p99" in out
    for name in ("rate.png", "iat_cdf.png", "length_cdf.png", "input_output.png"):
        data = (plots / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, name


def test_plots_without_matplotlib_is_a_clear_error(azure_csv, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # import fails as if not installed
    assert main(["analyze", str(azure_csv), "--plots", str(tmp_path / "p")]) == 2
    assert "pip install 'servegen-fast[plot]'" in capsys.readouterr().err
    assert main(["analyze", str(azure_csv)]) == 0  # the text report still works


def test_cli_bad_input_errors(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2024-05-01 10:00:00,5,5\n2024-05-01 10:00:01,-2,5\n")
    assert main(["fit", str(bad), "-o", str(tmp_path / "p.parquet")]) == 2
    err = capsys.readouterr().err
    assert "bad.csv, line 3: ContextTokens is '-2'" in err and not (tmp_path / "p.parquet").exists()
    assert main(["fit", str(bad), "-o", str(tmp_path / "p.parquet"), "--on-bad-row", "drop"]) == 0
    assert "dropped 1: negative length (lines 3)" in capsys.readouterr().out
    assert main(["fit", str(bad), "--client-key", "user", "--on-bad-row", "drop", "-o", str(tmp_path / "q.parquet")]) == 2
    assert "client key column 'user'" in capsys.readouterr().err
