"""Provisioning: the naive variants (keyed, rate- and length-preserving), the search for the
smallest N, clear errors for impossible SLOs, and the three subcommands end to end."""
from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from servegen_fast.cli import main
from servegen_fast.simulate.provision import attainment, naive_poisson, naive_shuffled, provision, smallest_n
from servegen_fast.replay.plan import make_plan
from test_simulate import profile, trace


def test_poisson_variant_keeps_window_rates_and_is_keyed():
    t = trace(n=3000, span=300.0)
    a = naive_poisson(t, window=60.0, seed=3)
    assert a.equals(naive_poisson(t, window=60.0, seed=3))
    assert not a.equals(naive_poisson(t, window=60.0, seed=4))
    ts = a.column("timestamp").to_numpy()
    assert np.all(np.diff(ts) >= 0)
    counts = np.histogram(ts, bins=5, range=(ts.min(), ts.min() + 300))[0]
    # 600 expected per window; Poisson sd ~24.5: 4 sd
    assert np.all(np.abs(counts - 600) < 100), counts
    # lengths: pairs from the trace's own (input, output) pairs
    pairs = set(zip(t.column("input_tokens").to_pylist(), t.column("output_tokens").to_pylist()))
    assert set(zip(a.column("input_tokens").to_pylist(), a.column("output_tokens").to_pylist())) <= pairs


def test_shuffled_variant_keeps_arrivals_and_length_multiset():
    t = trace(n=500)
    s = naive_shuffled(t, seed=1)
    assert np.array_equal(s.column("timestamp").to_numpy(), t.column("timestamp").to_numpy())
    assert sorted(s.column("input_tokens").to_pylist()) == sorted(t.column("input_tokens").to_pylist())
    assert s.column("input_tokens").to_pylist() != t.column("input_tokens").to_pylist()


def test_smallest_n_is_the_first_meeting_the_target():
    p = make_plan(trace(n=600, span=30.0, max_in=1000, max_out=200))
    n, curve = smallest_n(p, profile(), "least-loaded", 0.5, 0.03, 0.99, 64)
    assert curve[n] >= 0.99
    assert attainment(p, profile(), n - 1, "least-loaded", 0.5, 0.03) < 0.99


def test_impossible_slo_is_a_clear_error():
    t = trace(n=100, max_in=3000)
    with pytest.raises(ValueError, match=r"impossible SLO for the realistic trace: even alone on an idle instance"):
        provision(t, profile=profile(), slo_ttft=0.001, slo_tpot=0.05)
    with pytest.raises(ValueError, match="give at least one SLO"):
        provision(t, profile=profile())
    with pytest.raises(ValueError, match="TTFT SLO must be a positive time"):
        provision(t, profile=profile(), slo_ttft=-1.0)


def test_unmet_within_max_instances_is_a_clear_error():
    t = trace(n=600, span=30.0, max_in=1000, max_out=200)
    with pytest.raises(ValueError, match="does not meet the SLO with 2 instances"):
        provision(t, profile=profile(), slo_ttft=0.5, slo_tpot=0.03, max_instances=2)


def test_provision_result(tmp_path):
    t = trace(n=600, span=30.0, max_in=1000, max_out=200)
    r = provision(t, profile=profile(), slo_ttft=0.5, slo_tpot=0.03, window=10.0, output=tmp_path)
    v = r["variants"]
    assert set(v) == {"realistic", "poisson", "shuffled"}
    for name in ("poisson", "shuffled"):
        assert v[name]["under_provisioning"] == pytest.approx(
            (v["realistic"]["instances"] - v[name]["instances"]) / v["realistic"]["instances"])
    assert json.loads((tmp_path / "provision.json").read_text())["variants"]["realistic"]["instances"] == \
        v["realistic"]["instances"]


def test_cli_simulate_and_provision(tmp_path, capsys):
    path = tmp_path / "t.parquet"
    pq.write_table(trace(n=300, span=30.0, max_in=1000, max_out=200), path)
    prof = tmp_path / "p.json"
    prof.write_text(profile().to_json())
    assert main(["simulate", str(path), "--profile", str(prof), "-n", "2", "--router", "least-loaded",
                 "-o", str(tmp_path / "sim"), "--slo-ttft", "500ms", "--slo-tpot", "30ms"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("simulation of") and "goodput" in out
    assert json.loads((tmp_path / "sim" / "summary.json").read_text())["engine"]["instances"] == 2
    assert main(["provision", str(path), "--profile", str(prof), "--slo-ttft", "500ms", "--slo-tpot", "30ms",
                 "--window", "10", "--variants", "realistic,poisson"]) == 0
    out = capsys.readouterr().out
    assert "realistic" in out and "poisson" in out
    assert main(["provision", str(path), "--profile", str(prof), "--slo-ttft", "1ms"]) == 2
    assert "impossible SLO" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text("[]")
    assert main(["simulate", str(path), "--profile", str(bad), "-o", str(tmp_path / "x")]) == 2
    assert "not a profile" in capsys.readouterr().err


def test_cli_simulate_release_of_a_session_trace(tmp_path, capsys):
    from test_simulate import session_trace

    path = tmp_path / "s.parquet"
    pq.write_table(session_trace(), path)
    prof = tmp_path / "p.json"
    prof.write_text(profile().to_json())
    for release in ("auto", "closed", "open"):
        assert main(["simulate", str(path), "--profile", str(prof), "-n", "2", "--release", release, "-q",
                     "-o", str(tmp_path / release)]) == 0
        s = json.loads((tmp_path / release / "summary.json").read_text())
        assert s["options"]["release"] == ("open" if release == "open" else "closed")
        assert s["sessions"]["sessions"] == 120 and s["counts"]["completed"] == s["counts"]["selected"]
    with pytest.raises(SystemExit):
        main(["simulate", str(path), "--release", "sometimes", "-o", str(tmp_path / "x")])
    assert "invalid choice" in capsys.readouterr().err
    pq.write_table(trace(n=20), tmp_path / "t.parquet")
    assert main(["simulate", str(tmp_path / "t.parquet"), "--profile", str(prof), "--release", "closed", "-q",
                 "-o", str(tmp_path / "y")]) == 2
    assert "closed-loop release needs sessions" in capsys.readouterr().err


@pytest.mark.parametrize("release", ["closed", "open"])
def test_release_and_prefix_aware_keys_reach_the_search(release):
    from test_simulate import session_trace

    t = session_trace()
    r = provision(t, profile=profile(), slo_ttft=1.0, router="prefix-aware", release=release,
                  variants=["realistic", "poisson"], window=10.0)
    assert r["release"] == release
    p = make_plan(t, release=release)
    keys = t.column("session_id").to_numpy().astype(np.int64)[p.row]
    curve = r["variants"]["realistic"]["curve"]
    assert len(curve) >= 2
    for n, a in curve.items():  # the realistic trace: its own release, routed by its session ids
        assert a == attainment(p, profile(), int(n), "prefix-aware", 1.0, None, keys)
    naive = make_plan(naive_poisson(t, window=10.0, seed=0))
    for n, a in r["variants"]["poisson"]["curve"].items():  # no keys: least-loaded, open loop
        assert not naive.closed_loop
        assert a == attainment(naive, profile(), int(n), "least-loaded", 1.0, None)


def test_prefix_aware_provisioning_needs_keys(tmp_path, capsys):
    with pytest.raises(ValueError, match="prefix-aware needs a prefix key"):
        provision(trace(n=50), profile=profile(), slo_ttft=1.0, router="prefix-aware")
    path = tmp_path / "t.parquet"
    pq.write_table(trace(n=50), path)
    assert main(["provision", str(path), "--slo-ttft", "1s", "--router", "prefix-aware", "-q"]) == 2
    assert "prefix-aware needs a prefix key" in capsys.readouterr().err
