"""Borrowed array views for the event loop (Numba): the same data, no reference count.

Numba increfs every array argument when a jitted function is entered and decrefs it when it
leaves: two atomic operations per array per call. The simulator's passes take about thirty
arrays and run a few times per request, so those atomics were three quarters of the event
loop's time (perf, 2026-12-06). A borrowed view has no meminfo, which makes both operations
no-ops. It is safe only while something else holds the array: the event loop borrows its
own arguments, which its Python caller keeps alive for the whole call.
"""
from __future__ import annotations

from numba import types
from numba.extending import intrinsic


@intrinsic
def borrow(typingctx, ary):
    """A view of `ary` without a meminfo (its owner must outlive the view)."""
    if isinstance(ary, types.NoneType):  # the prefix state without block ids
        return ary(ary), lambda context, builder, signature, args: args[0]
    if not isinstance(ary, types.Array):
        return None

    def codegen(context, builder, signature, args):
        src = context.make_array(ary)(context, builder, value=args[0])
        dst = context.make_array(ary)(context, builder)
        context.populate_array(dst, data=src.data, shape=src.shape, strides=src.strides, itemsize=src.itemsize,
                               meminfo=None, parent=None)
        return dst._getvalue()

    return ary(ary), codegen
