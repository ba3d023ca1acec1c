"""CUDA backend (kernels/cuda.py) against the CPU backend.

* Simulator twin: Numba's CUDA simulator reads its switch at import, so the comparison runs
  in a subprocess with NUMBA_ENABLE_CUDASIM=1 and 4 threads per block (block edges and
  grid-stride loops get exercised with a few hundred requests).
* GPU twin (@gpu): the same comparison in-process at a larger size, only on a real GPU.
* Without CUDA, backend="cuda" must fail with a clear RuntimeError.

Agreement: integer columns (client ids, token counts, item lists) identical; timestamps
within 1e-9 s (exact in the simulator, which runs the same host libm as the CPU backend).
"""
from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

HAVE_NUMBA_CUDA = importlib.util.find_spec("numba_cuda") is not None
needs_numba_cuda = pytest.mark.skipif(not HAVE_NUMBA_CUDA, reason="numba-cuda is not installed")

MODES = ("servegen", "renewal", "poisson")
CORRELATIONS = ("comonotone", "independent", 0.5)


# --------------------------------------------------------------------------- pools
def synth_pool(rate, *, category="language", window_size=60, length_window_size=120, seed=0):
    """A small pool built from arrays: mixed Gamma/Weibull/Exponential laws, per-client dists."""
    from servegen_fast.model.distributions import DistTableBuilder
    from servegen_fast.model.fields import LAW_EXPONENTIAL, LAW_GAMMA, LAW_IDLE, LAW_WEIBULL, NO_DIST
    from servegen_fast.model.pool import ClientPool, regular_grid

    rng = np.random.default_rng(seed)
    rate = np.asarray(rate, np.float64)
    c, w = rate.shape
    law = np.array([LAW_GAMMA, LAW_WEIBULL, LAW_EXPONENTIAL], np.uint8)[np.arange(c * w).reshape(c, w) % 3]
    law = np.where(rate > 0, law, LAW_IDLE).astype(np.uint8)
    cv = np.where(law == LAW_GAMMA, rng.uniform(0.5, 2.5, (c, w)), 1.0)
    wshape = rng.uniform(0.5, 1.5, (c, w))
    shape = np.where(law == LAW_GAMMA, 1.0 / cv ** 2, np.where(law == LAW_WEIBULL, wshape, 1.0))
    cv = np.where(law == LAW_WEIBULL,
                  np.sqrt(np.vectorize(lambda s: math.gamma(1 + 2 / s) / math.gamma(1 + 1 / s) ** 2 - 1)(wshape)), cv)
    safe = np.where(rate > 0, rate, 1.0)
    scale = np.where(law == LAW_IDLE, 0.0, 1.0 / safe)
    start, wlen, widx, lidx = regular_grid(w, window_size, length_window_size)
    d = int(lidx[-1]) + 1
    if category == "language":
        fields = ("input_tokens", "output_tokens")
    elif category == "reason":
        fields = ("input_tokens", "output_tokens", "reason_ratio")
    else:
        fields = ("text_tokens", "image_tokens", "image_count", "output_tokens")
    b = DistTableBuilder()
    dist_id = np.full((c, d, len(fields)), NO_DIST, np.int32)
    for ci in range(c):
        for li in range(d):
            for f, name in enumerate(fields):
                if name == "image_count":
                    vals, probs = np.array([0.0, 1.0, 2.0, 4.0]), rng.uniform(0.1, 1.0, 4)
                elif name == "image_tokens":
                    vals, probs = np.array([256.0, 576.0, 1024.0]), rng.uniform(0.1, 1.0, 3)
                elif name == "reason_ratio":
                    vals, probs = np.linspace(0.05, 1.0, 20), rng.uniform(0.1, 1.0, 20)
                else:
                    m = int(rng.integers(3, 60))
                    vals = np.unique(rng.integers(1, 5000, m)).astype(np.float64)
                    probs = rng.uniform(0.0, 1.0, len(vals))
                    probs[0] = 1.0
                dist_id[ci, li, f] = b.add(vals, probs)
    return ClientPool(category=category, model="synth", client_ids=np.arange(c, dtype=np.int64) * 7 + 3,
                      window_start=start, window_len=wlen, window_index=widx, length_index=lidx, rate=rate,
                      cv=cv, law=law, shape=shape, scale=scale, fields=fields, dist_id=dist_id, dists=b.build(),
                      window_size=window_size, length_window_size=length_window_size)


# --------------------------------------------------------------------------- comparison
def assert_same_table(a, b, what=""):
    import pyarrow as pa

    assert a.schema.names == b.schema.names, what
    assert a.num_rows == b.num_rows, f"{what}: {a.num_rows} rows (cuda) vs {b.num_rows} (cpu)"
    for name in a.schema.names:
        ca, cb = a.column(name).combine_chunks(), b.column(name).combine_chunks()
        if name == "timestamp":
            np.testing.assert_allclose(ca.to_numpy(), cb.to_numpy(), rtol=0, atol=1e-9, err_msg=f"{what}: {name}")
        elif pa.types.is_list(ca.type) or pa.types.is_large_list(ca.type):
            assert np.array_equal(ca.offsets.to_numpy(), cb.offsets.to_numpy()), f"{what}: {name} offsets"
            assert np.array_equal(ca.values.to_numpy(), cb.values.to_numpy()), f"{what}: {name} values"
        else:
            assert np.array_equal(ca.to_numpy(), cb.to_numpy()), f"{what}: {name}"


def compare_cases(scale: float = 1.0) -> int:
    """Generate every case with backend cuda and cpu and compare; returns the rows checked."""
    from servegen_fast.sample.generate import generate_table
    from servegen_fast.io.pool_file import open_pool

    rng = np.random.default_rng(3)
    rate = rng.uniform(0.1, 0.6, (4, 3)) * scale
    rate[1, 1] = 0.0  # an idle unit
    rate[2, 0] = 0.005  # a unit that draws (almost surely) nothing
    lang = synth_pool(rate, seed=1)
    mm = synth_pool(rate[:3, :2], category="multimodal", seed=2)
    reason = synth_pool(rate[:2, :2], category="reason", seed=4)
    builtin = open_pool("builtin").span(7200, 7200 + 1200)
    cases = [(lang, None, {"mode": m, "correlation": c}) for m in MODES for c in CORRELATIONS]
    cases += [(mm, None, {"mode": m, "correlation": c}) for m, c in
              (("servegen", "comonotone"), ("renewal", "independent"), ("poisson", 0.5))]
    cases += [(reason, None, {"mode": "renewal", "correlation": 0.5, "include_reason_ratio": True})]
    cases += [(builtin, 0.15 * scale, {"mode": m, "correlation": c}) for m, c in
              (("servegen", "comonotone"), ("renewal", "independent"), ("poisson", 0.5))]
    cases += [(lang, None, {"mode": "renewal", "correlation": "independent", "chunk_bytes": 96 * 40})]  # chunks
    rows = 0
    for i, (pool, r, kw) in enumerate(cases):
        kw = dict(kw, seed=2 ** 63 + 11 + i)
        a = generate_table(pool, r, None, backend="cuda", **kw)
        b = generate_table(pool, r, None, backend="cpu", **kw)
        assert_same_table(a, b, f"{pool.category} {kw}")
        rows += a.num_rows
    return rows


def check_window_order() -> None:
    """window_order alone: arbitrary (unsorted) times with many ties, empty windows, vs cpu."""
    from servegen_fast.kernels import cpu, cuda as kc

    rng = np.random.default_rng(5)
    t = rng.integers(0, 7, 61).astype(np.float64)
    unit_offsets = np.array([0, 5, 5, 17, 30, 30, 44, 61], np.int64)
    first_unit = np.array([0, 2, 2, 5, 7], np.int64)  # window 1 is empty
    got = kc.window_order(t, unit_offsets, first_unit)
    want = cpu.window_order(t, unit_offsets, first_unit)
    assert np.array_equal(got, want)
    ts, cid, out = kc.gather_rows(got, np.repeat(np.arange(7), np.diff(unit_offsets)),
                                  np.arange(7, dtype=np.uint32) + 9, t, np.zeros((61, 0)))
    assert out.shape == (0, 61) and np.array_equal(ts, t[got])
    # clustered times (buckets far above the insertion-sort size: the heap-sort path) and ties
    sizes = np.array([300, 0, 90, 1])
    t = np.concatenate([w * 600.0 + np.where(rng.random(m) < 0.8, 5.0 + rng.integers(0, 3, m) * 1e-7,
                                             rng.uniform(0, 600, m)) for w, m in enumerate(sizes)])
    unit_offsets = np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)
    first_unit = np.arange(len(sizes) + 1, dtype=np.int64)
    assert np.array_equal(kc.window_order(t, unit_offsets, first_unit), cpu.window_order(t, unit_offsets, first_unit))


# --------------------------------------------------------------------------- tests
def _run_sim(code: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", SERVEGEN_FAST_CUDA_TPB="4", SERVEGEN_FAST_CUDA_SCAN_SEGMENTS="8",
               SERVEGEN_FAST_CUDA_MAX_BLOCKS="8")
    here = str(Path(__file__).resolve().parent)
    script = f"import sys; sys.path.insert(0, {here!r}); import test_kernels_cuda as T\n{code}"
    return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=timeout)


@needs_numba_cuda
def test_simulator_twin_matches_cpu():
    p = _run_sim("T.check_window_order()\n"
                 "from servegen_fast.kernels import cuda as kc\n"
                 "assert kc.SIMULATOR and kc.THREADS_PER_BLOCK == 4\n"
                 "print('rows', T.compare_cases())")
    assert p.returncode == 0, p.stdout + p.stderr
    rows = int(p.stdout.split("rows")[-1])
    assert rows > 1000  # ~few hundred per pool, 16 cases


def _real_gpu() -> bool:
    if not HAVE_NUMBA_CUDA or os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        return False
    try:
        from numba import cuda
        return bool(cuda.is_available())
    except Exception:  # noqa: BLE001
        return False


@pytest.mark.gpu
@pytest.mark.skipif(not _real_gpu(), reason="needs a real CUDA GPU")
def test_gpu_twin_matches_cpu():
    check_window_order()
    assert compare_cases(scale=20.0) > 20000


def test_cuda_backend_without_gpu_is_a_clear_error():
    if _real_gpu():
        pytest.skip("a CUDA GPU is present")
    code = ("import numpy as np\n"
            "from servegen_fast.sample.generate import generate_table\n"
            "from servegen_fast.io.pool_file import open_pool\n"
            "try:\n"
            "    generate_table(open_pool('builtin').span(0, 600), 0.1, None, backend='cuda')\n"
            "except RuntimeError as e:\n"
            "    print('ERR', e)\n")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "ERR backend 'cuda' is not available" in p.stdout, p.stdout + p.stderr
    assert ("backend='cpu'" in p.stdout) and ("CUDA" in p.stdout or "cuda" in p.stdout)
