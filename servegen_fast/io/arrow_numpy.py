"""NumPy <-> Arrow without pandas: views of the same memory where the types allow.

pyarrow's own conversions (`pa.array` from NumPy, `Array.to_numpy`) import pandas where it is
installed, 0.2-0.3 s of a new process, in the way of its first batch or pool load.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa


def to_arrow(x: np.ndarray, type: pa.DataType | None = None) -> pa.Array:
    """`x` as an Arrow array of `type` (default: `x`'s own): a view of its memory where it is a
    contiguous 1-D array of that fixed-width numeric type, else pyarrow's checked conversion."""
    type = pa.from_numpy_dtype(x.dtype) if type is None else type
    if x.ndim == 1 and x.flags.c_contiguous and (pa.types.is_integer(type) or pa.types.is_floating(type)) \
            and x.dtype == np.dtype(type.to_pandas_dtype()):
        return pa.Array.from_buffers(type, len(x), [None, pa.py_buffer(x)])
    return pa.array(x, type)


def to_numpy(values: pa.Array) -> np.ndarray:
    """`values` as NumPy: a view of the Arrow buffer for a fixed-width numeric array without
    nulls, else pyarrow's conversion."""
    t = values.type
    if values.null_count == 0 and (pa.types.is_integer(t) or pa.types.is_floating(t)):
        dtype = np.dtype(t.to_pandas_dtype())
        if len(values) == 0:  # its data buffer may be absent
            return np.empty(0, dtype)
        return np.frombuffer(values.buffers()[1], dtype, len(values), values.offset * dtype.itemsize)
    return values.to_numpy(zero_copy_only=False)
