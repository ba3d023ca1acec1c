"""Integer codes shared by the kernels and the model (no imports: the lowest layer)."""

# Arrival laws, as stored in `ClientPool.law`.
LAW_IDLE, LAW_GAMMA, LAW_WEIBULL, LAW_EXPONENTIAL = 0, 1, 2, 3

# Arrival modes as the kernels see them (`poisson` is renewal with exponential laws).
MODE_SERVEGEN, MODE_RENEWAL = 0, 1

# Length correlation modes.
CORR_COMONOTONE, CORR_INDEPENDENT, CORR_COPULA = 0, 1, 2
