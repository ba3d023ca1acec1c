"""kernels/textparse.py: the parsers' results and error positions, pinned as the parsers
returned them before they were rewritten with one return statement each (fewer lines for
Numba to type and lower on the first compile), and one specialization per helper."""
from __future__ import annotations

import numpy as np
import pytest

from servegen_fast.kernels import textparse as tp


def u8(text: bytes) -> np.ndarray:
    return np.frombuffer(text, np.uint8)


def lists(result, k):
    return [a.tolist() for a in result[:k]], tuple(int(x) for x in result[k:])


ROW = [[0.0, 600.0], [1.0, 1.0], [2.0, 2.0]]
NONE = [[]] * 6


@pytest.mark.parametrize("text, arrays, tail", [
    (b"0,1,2,Gamma,1,2\n600,1,2,Gamma,1,2\n", ROW + [[1, 1], [1.0, 1.0], [2.0, 2.0]], (0, 0, 0)),
    (b"0,1,2,Gamma,1,2\n\n 600 ,1,2,,1,2\r\n", ROW + [[1, 0], [1.0, 1.0], [2.0, 2.0]], (0, 0, 0)),
    (b"0,1,2,Gamma,1\n", NONE, (tp.ERR_FIELDS, 1, 5)),
    (b"0,1,2,Gamma,1,2,3\n", NONE, (tp.ERR_FIELDS, 1, 6)),
    (b"0,1,2,Gamm,1,2\n", NONE, (tp.ERR_PATTERN, 1, 3)),
    (b"0,x,2,Gamma,1,2\n", NONE, (tp.ERR_NUMBER, 1, 1)),
    (b"0,1,2,Weibull,1,2\n600,1,2,Exponential,1e-3,2.5\n5,1 2,3,,1,2",
     ROW + [[2, 3], [1.0, 0.001], [2.0, 2.5]], (tp.ERR_NUMBER, 3, 1)),
    (b"", NONE, (0, 0, 0)),
    (b"\n\n", NONE, (0, 0, 0)),
])
def test_parse_trace_csv(text, arrays, tail):
    assert lists(tp.parse_trace_csv(u8(text)), 6) == (arrays, tail)


@pytest.mark.parametrize("text, n, arrays, tail", [
    (b"{1: 0.5, 2: 0.5}\n{}", 2, [[1.0, 2.0], [0.5, 0.5], [2, 0]], (0, 19, -1)),
    (b"{1: 0.5, 2: 0.5}\n{", 2, [[1.0, 2.0], [0.5, 0.5], [2, 0]], (tp.ERR_NUMBER, 18, 1)),
    (b"{1: 0.5 2: 0.5}", 1, [[1.0], [0.5], [1]], (tp.ERR_SYNTAX, 8, 0)),
    (b"{1: x}", 1, [[], [], [0]], (tp.ERR_NUMBER, 4, 0)),
    (b"{1 0.5}", 1, [[], [], [0]], (tp.ERR_SYNTAX, 3, 0)),
    (b"{1: 0.5}{2: 0.5}", 2, [[1.0], [0.5], [1, 0]], (tp.ERR_SYNTAX, 8, 0)),
    (b"[1: 0.5]", 1, [[], [], [0]], (tp.ERR_SYNTAX, 0, 0)),
    (b" { 1 : 0.25 , 3:0.75 } \n {}\n{7: 1}", 3, [[1.0, 3.0, 7.0], [0.25, 0.75, 1.0], [2, 0, 1]], (0, 34, -1)),
    (b"", 0, [[], [], []], (0, 0, -1)),
    (b"{x: 1}", 1, [[], [], [0]], (tp.ERR_NUMBER, 1, 0)),
    (b"{1: 0.5,}", 1, [[1.0], [0.5], [1]], (tp.ERR_NUMBER, 8, 0)),
])
def test_parse_dict_literals(text, n, arrays, tail):
    assert lists(tp.parse_dict_literals(u8(text), n), 3) == (arrays, tail)


@pytest.mark.parametrize("keys, probs, counts, arrays, tail", [
    ([1., 2, 3], [0.2, 0, 0.8], [3], [[1.0, 3.0], [0.2, 1.0], [2], [1.0]], (-1, 0)),
    ([1., 2, 2], [0.5, 0.5, 0.], [1, 2], [[1.0, 2.0], [1.0, 0.5], [1, 0], [0.5, 0.0]], (1, 2)),
    ([1., 2], [0.5, -0.1], [2], [[1.0], [0.5], [0], [0.0]], (0, 1)),
    ([1., np.nan], [0.5, 0.5], [1, 1], [[1.0], [1.0], [1, 0], [0.5, 0.0]], (1, 3)),
    ([1., 2, 3, 4], [0.1, 0.2, 0.3, 0.4], [2, 2],
     [[1.0, 2.0, 3.0, 4.0], [0.3333333333333333, 1.0, 0.4285714285714286, 1.0], [2, 2], [0.30000000000000004, 0.7]],
     (-1, 0)),
    ([], [], [0], [[], [], [0], [0.0]], (-1, 0)),
])
def test_segment_cdfs(keys, probs, counts, arrays, tail):
    got = tp.segment_cdfs(np.array(keys, np.float64), np.array(probs, np.float64), np.array(counts, np.int64))
    assert lists(got, 4) == (arrays, tail)


def test_one_specialization_per_helper(tmp_path):
    """The parsers call their helpers with int64 positions only: no extra Literal[int](0)
    specialization to compile (and load from the cache) on a first parse. In a new process
    with an empty cache, so the helpers are compiled here, not loaded inside their callers."""
    import os
    import subprocess
    import sys

    code = ("import numpy as np; from servegen_fast.kernels import textparse as tp; "
            "tp.parse_trace_csv(np.frombuffer(b'0,1,2,Gamma,1,2', np.uint8)); "
            "tp.parse_dict_literals(np.frombuffer(b'{1: 1}', np.uint8), 1); "
            "print([len(f.signatures) for f in (tp._skip_space, tp._parse_number, tp._pattern_code)])")
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[1, 1, 1]"
