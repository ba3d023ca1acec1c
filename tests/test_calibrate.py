"""Calibration on the real engine (transformers continuous batching, tiny random model, CPU):
a short sweep (waves, then a few seconds of the built-in pool's traffic) records passes with
their composition, measures the idle wake-up and the spread of prefill passes, and fits a
profile the simulator accepts."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from servegen_fast.simulate.calibrate import MIN_SPREAD_PASSES, SPREAD_QUANTILES, calibrate  # noqa: E402
from servegen_fast.simulate.profile import STEP_TERMS, load_profile, save_profile  # noqa: E402

WAVES = [[(16, 8, 1)], [(64, 8, 2)], [(200, 2, 1)], [(32, 12, 1)], [(128, 4, 3)], [(300, 2, 1)], [(48, 6, 1)]]


def test_a_short_sweep_gives_a_usable_profile(tmp_path):
    prof, steps = calibrate(waves=WAVES, gap=0.8, traffic=(14.0, 3.0, 7))
    assert steps.shape[1] == 6
    y, P, S, D, K, A = steps.T
    assert np.all(y > 0) and np.all(S + D >= 1)
    lone = (S == 1) & (D == 0)
    assert lone.sum() >= 3
    assert np.array_equal(A[lone], P[lone] * K[lone])  # one chunk over its own context
    assert np.all(A[P == 0] == 0) and np.all(A[P > 0] >= P[P > 0])
    assert 0 < prof.idle_wake < 0.1
    assert set(prof.coefficients) == set(STEP_TERMS)
    assert prof.fit["passes"] == len(steps) - 1
    assert prof.measured_on["sweep_traffic"] == [14.0, 3.0, 7]
    assert (P[1:] > 0).sum() >= MIN_SPREAD_PASSES  # enough prefill passes for their spread around the fit
    q = np.array(prof.spread)
    assert len(q) == SPREAD_QUANTILES and np.all(np.diff(q) >= 0) and q[0] < 1 < q[-1]
    assert np.mean((q[:-1] + q[1:]) / 2) == pytest.approx(1.0, rel=1e-9)
    save_profile(prof, tmp_path / "p.json")
    assert load_profile(tmp_path / "p.json") == prof
    ttft, _, _ = prof.isolated([200], [2])
    assert 1e-4 < ttft[0] < 1.0
