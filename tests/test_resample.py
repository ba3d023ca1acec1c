"""model/resample.py: a pool shorter than a day past its end."""
from __future__ import annotations

import numpy as np
import pytest

from servegen_fast.model.resample import resample_windows
from servegen_fast.sample.generate import generate_table
from test_kernels_cuda import synth_pool
from test_modulation import modulated_pool


@pytest.fixture()
def pool():
    rate = np.linspace(0.5, 4.0, 5)[None, :] * np.array([[1.0], [2.0]])
    return modulated_pool(synth_pool(rate))  # 2 clients x 5 windows of 60 s


def test_own_windows_then_permutations_of_them(pool):
    ext = resample_windows(pool, 3 * pool.duration + 30, seed=5)
    assert ext.duration == 3 * pool.duration + 30
    w = pool.n_windows
    assert np.array_equal(ext.rate[:, :w], pool.rate) and np.array_equal(ext.window_index[:w], pool.window_index)
    new = ext.window_index[w:]
    assert np.all(new > pool.window_index.max()) and len(np.unique(new)) == len(new)  # fresh keys
    for b in range(2):  # each whole block is a permutation of the source windows (clients together)
        block = ext.rate[:, w * (b + 1):w * (b + 2)]
        assert sorted(map(tuple, block.T)) == sorted(map(tuple, pool.rate.T))
    assert not np.array_equal(ext.rate[:, w:2 * w], pool.rate)  # not the log's order (this seed)
    assert ext.window_len[-1] == 30
    assert np.array_equal(ext.rate, resample_windows(pool, 3 * pool.duration + 30, seed=5).rate)
    assert not np.array_equal(ext.rate, resample_windows(pool, 3 * pool.duration + 30, seed=6).rate)


def test_extension_keeps_the_source_span_and_draws_fresh(pool):
    ext = resample_windows(pool, 2 * pool.duration, seed=0)
    a = generate_table(ext, seed=3)
    b = generate_table(pool, seed=3)
    t = a.column("timestamp").to_numpy()
    assert a.slice(0, b.num_rows).equals(b)  # the source's own span, exactly
    assert resample_windows(pool, pool.duration - 60).duration == pool.duration - 60
    # a copied window draws new arrivals: no timestamp of the second span is a shifted copy
    second = t[t >= pool.duration] - pool.duration
    assert len(second) > 100 and len(np.intersect1d(np.round(second % 60, 9), np.round(t[t < pool.duration] % 60, 9))) < 5
