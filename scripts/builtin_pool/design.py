"""Design choices of the builtin pool (not statistics of the data).

Changing any of them changes the pool. The statistics they act on are in summary.json.
"""
from __future__ import annotations

from statistics import NormalDist

DEFAULT_SEED = 2025
N_CLIENTS = 300
N_DAYS = 14
WINDOW = 600                    # arrival window (s)
LENGTH_WINDOW = 21600           # length window (s)
TARGET_RATE = 120.0             # mean aggregate rate (req/s), about m-large's (see summary["reference"])
LOG_STEP = 0.05                 # rates, CVs and Gamma(1+1/c) lie on exp(LOG_STEP * k): a 5% grid that
                                # Parquet's dictionary encoding stores in ~10 bits a value
CV_RANGE = (0.2, 50.0)          # CVs are clipped to this range
WEIBULL_C_RANGE = (0.15, 2.1)   # Weibull shape bounds (Gamma(1+1/c) is monotone below c = 2.166)
PHASE_JITTER_S = 3600.0         # sd of a client's shift of the daily profile (s)
AMPLITUDE_JITTER = 0.25         # sd of the log of a client's diurnal amplitude factor
AGGREGATION_RATE = 0.06         # (req/s) a client of mean rate m is an aggregate of many users: its
                                # log-rate noise sd and its activity's logit residual are multiplied by
                                # g = 1 / sqrt(1 + m / AGGREGATION_RATE), so big clients are smooth and
                                # nearly always active and the pool keeps its daily shape (the data's
                                # big clients are far noisier; see docs/builtin-pool.md)
MIN_ACTIVE_FRACTION = 0.005     # at least ~10 active windows a client (before the min-rate rule)
MAX_VARIANTS = 4                # a client has 1..MAX_VARIANTS length regimes (1 + Binomial(3, 1/2))
LENGTH_GRID = {"input_tokens": (131072, 256), "output_tokens": (16384, 192)}  # (max, grid points)
LENGTH_SIGMA_RANGE = (0.02, 1.2)  # per-client log-sd bounds of the length distributions
TYPICAL_TOP = 0.1               # fraction of clients (the largest) given the most central length parameters
LENGTH_MEDIAN_SD = 2.0          # per-client log medians are clipped to mean +- this many sd
PROB_BITS = 16                  # probabilities are multiples of 2**-PROB_BITS (largest-remainder
                                # rounding): points below ~1.5e-5 vanish and the cdf column stays small

# What the statistics are taken from, and how
MODELS = ("language/m-large", "language/m-mid", "language/m-small")
CV_PROBS = (0.001, 0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999)
Z95 = NormalDist().inv_cdf(0.95)
