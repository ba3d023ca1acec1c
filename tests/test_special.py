"""NumPy special functions (servegen_fast.model.special) against scipy.special."""
from __future__ import annotations

import numpy as np
from scipy import special as S

from servegen_fast.model import special as M

X = np.concatenate([np.logspace(-6, 4, 400), [0.5, 1.0, 2.0, 7.999, 8.0, 8.001]])


def test_gammaln_digamma_trigamma():
    # relative error (absolute near zero) stated in the module docstring
    for mine, ref, tol in ((M.gammaln, S.gammaln, 1e-11), (M.digamma, S.digamma, 1e-11),
                           (M.trigamma, lambda v: S.polygamma(1, v), 1e-10)):
        want = ref(X)
        assert np.max(np.abs(mine(X) - want) / np.maximum(1.0, np.abs(want))) < tol, mine.__name__


def test_gammainc():
    a = np.logspace(-3, 4, 50)[:, None]
    x = np.logspace(-8, 5, 70)[None, :] * np.ones_like(a)
    assert np.max(np.abs(M.gammainc(a, x) - S.gammainc(a, x))) < 1e-10
    assert np.all(M.gammainc(np.array([0.5, 3.0]), np.zeros(2)) == 0.0)
