"""Integer codes shared by the kernels and the model (no imports: the lowest layer)."""

# Arrival laws, as stored in `ClientPool.law`.
LAW_IDLE, LAW_GAMMA, LAW_WEIBULL, LAW_EXPONENTIAL = 0, 1, 2, 3

# Arrival random streams (trace metadata `arrival_stream`; a trace without it is stream 1).
# Stream 2 draws Gamma inter-arrivals with one Philox block per attempt (kernels/stream2.py).
# The kernels read the stream from the law codes they are given: law + LAW_STREAM2 draws
# stream 2, so every backend's signature stays the same.
ARRIVAL_STREAMS = (1, 2)
ARRIVAL_STREAM = 2  # new traces
LAW_STREAM2 = 8

# The renewal count keeps arrival times for the fill in rooms of this many units (kernels/cpu.py
# renewal_arrivals; every backend alike).
ROOM_BLOCK = 64

# Arrival modes as the kernels see them (`poisson` is renewal with exponential laws).
MODE_SERVEGEN, MODE_RENEWAL = 0, 1

# Length correlation modes.
CORR_COMONOTONE, CORR_INDEPENDENT, CORR_COPULA = 0, 1, 2
