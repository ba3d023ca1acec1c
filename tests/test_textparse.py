"""kernels/textparse.py: the parsers' results and error positions, pinned as the parsers
returned them before they were rewritten with one return statement each (fewer lines for
Numba to type and lower on the first compile), and one specialization per helper; the same
for their ahead-of-time build (kernels/textparse_aot.py), which the installed package uses."""
from __future__ import annotations

import importlib.util
import warnings

import numpy as np
import pytest

from servegen_fast.kernels import textparse as tp
from servegen_fast.kernels import textparse_aot


@pytest.fixture(scope="module")
def aot(tmp_path_factory):
    """The parsers compiled ahead of time from the current sources, as setup.py builds them."""
    out = tmp_path_factory.mktemp("aot")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numba.pycc's pending deprecation
        cc = textparse_aot.compiler()
        cc.output_dir = str(out)
        cc.compile()
    (path,) = out.glob(textparse_aot.NAME + ".*")
    spec = importlib.util.spec_from_file_location(textparse_aot.NAME, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(params=["jit", "aot"])
def parsers(request):
    return tp if request.param == "jit" else request.getfixturevalue("aot")


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
def test_parse_trace_csv(parsers, text, arrays, tail):
    assert lists(parsers.parse_trace_csv(u8(text)), 6) == (arrays, tail)


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
def test_parse_dict_literals(parsers, text, n, arrays, tail):
    assert lists(parsers.parse_dict_literals(u8(text), n), 3) == (arrays, tail)


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
def test_segment_cdfs(parsers, keys, probs, counts, arrays, tail):
    got = parsers.segment_cdfs(np.array(keys, np.float64), np.array(probs, np.float64), np.array(counts, np.int64))
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


def test_ahead_of_time_build_equals_jit_on_real_files(aot, servegen_root):
    """Bit for bit, on ServeGen's own files: a trace CSV and a dataset file's literals (17-digit
    numbers, which the parser rounds twice: the same LLVM code must do it the same way)."""
    import json

    model = servegen_root / "language" / "m-large"
    buf = np.fromfile(model / "chunk-0-trace.csv", np.uint8)
    for a, b in zip(aot.parse_trace_csv(buf), tp.parse_trace_csv(buf)):
        np.testing.assert_array_equal(a, b)
    doc = json.loads((model / "chunk-0-dataset.json").read_text())
    literals = [v for window in doc.values() for v in window.values()]
    text = np.frombuffer("\n".join(literals).encode(), np.uint8)
    got, want = aot.parse_dict_literals(text, len(literals)), tp.parse_dict_literals(text, len(literals))
    assert len(got[0]) > 10_000 and got[3:] == want[3:]
    for a, b in zip(got[:3] + aot.segment_cdfs(*got[:3])[:4], want[:3] + tp.segment_cdfs(*want[:3])[:4]):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()


def test_ahead_of_time_build_carries_its_source_key(aot):
    assert aot.source_key() == textparse_aot.source_key()


def test_the_installed_package_uses_its_ahead_of_time_build():
    """pip install (setup.py) built kernels/_textparse_aot: a first pool load compiles nothing.
    Fails after an edit of the parsers' sources until the package is installed again."""
    built = textparse_aot.parsers()
    assert built.__name__ == "servegen_fast.kernels._textparse_aot", \
        "the text parsers' ahead-of-time build is missing or stale: reinstall (pip install -e .)"


def test_a_stale_build_is_not_used(monkeypatch):
    """A build from other sources (an edited checkout) gives way to the JIT parsers."""
    textparse_aot.parsers.cache_clear()
    monkeypatch.setattr(textparse_aot, "source_key", lambda: -1)
    try:
        assert textparse_aot.parsers() is tp
    finally:
        textparse_aot.parsers.cache_clear()
