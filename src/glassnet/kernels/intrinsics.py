"""LLVM operations that Numba's Python does not spell, for the kernels' innermost loops.

Each is a Numba ``@intrinsic``: a few lines of LLVM IR inlined where it is called. Bitcasts
and 32-bit integer arithmetic keep loops vectorisable (Numba's own integer arithmetic widens
to 64 bits); prefetches and streaming stores decide how the kernels use the caches:

* :func:`prefetch` asks for a cache line before it is needed, so a row of logits arrives
  from memory while the previous row is being computed on.
* :func:`scale_streaming` writes a scaled copy with non-temporal stores, which go to memory
  without first reading the destination into the cache: a large gradient then costs one
  write of memory traffic instead of a read and a write. :func:`store_fence` orders such
  stores before the threads hand their results over.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

_I32, _I64, _F32 = ir.IntType(32), ir.IntType(64), ir.FloatType()
# Numba's disk cache knows only the source file of the kernel that inlines these: a kernel
# closes over this digest (see cross_entropy._rows_kernel) so that a change here recompiles it.
SOURCE_DIGEST = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]
LANES = 16  # floats per streaming store: 64 bytes, a cache line (two stores on AVX2)


# 1.5 * 2**23 + 127: a float32 this size has a spacing of 1, so adding it rounds a value v
# (|v| < 2**22) to an integer, and leaves round(v) + 127, the float exponent of 2**round(v),
# in the low mantissa bits.
ROUNDING_MAGIC = np.float32(1.5 * 2**23 + 127)
_MAGIC_BITS = int(np.array(ROUNDING_MAGIC).view(np.int32))


@intrinsic
def rounded_from_magic(typingctx, t):
    """round(v) as a float32, from t = v + ROUNDING_MAGIC: read from t's bits, because Numba's
    fast-math flags would let LLVM fold the plain ``t - ROUNDING_MAGIC`` back to v."""
    if t != types.float32:
        return None

    def codegen(context, builder, signature, args):
        k = builder.sub(builder.bitcast(args[0], _I32), ir.Constant(_I32, _MAGIC_BITS))
        return builder.sitofp(k, _F32)

    return types.float32(t), codegen


@intrinsic
def power_of_two_from_magic(typingctx, t):
    """2**round(v) as a float32, from t = v + ROUNDING_MAGIC (-126 <= round(v) <= 127): the
    low bits of t, shifted into the exponent field."""
    if t != types.float32:
        return None

    def codegen(context, builder, signature, args):
        bits = builder.shl(builder.bitcast(args[0], _I32), ir.Constant(_I32, 23))
        return builder.bitcast(bits, _F32)

    return types.float32(t), codegen


@intrinsic
def ordered_bits(typingctx, value):
    """A float32's bits as an int32 that sorts as the float does (-0 just below +0; a NaN
    with the sign bit clear above +inf); given such an int32, the float32 back (the map is
    its own inverse)."""
    if value == types.float32:
        result = types.int32
    elif value == types.int32:
        result = types.float32
    else:
        return None

    def codegen(context, builder, signature, args):
        bits = builder.bitcast(args[0], _I32) if value == types.float32 else args[0]
        sign = builder.ashr(bits, ir.Constant(_I32, 31))
        ordered = builder.xor(bits, builder.and_(sign, ir.Constant(_I32, 0x7FFFFFFF)))
        return ordered if value == types.float32 else builder.bitcast(ordered, _F32)

    return result(value), codegen


@intrinsic
def prefetch(typingctx, array, i, j):
    """Fetch the cache line of ``array[i, j]`` (2-D) into L2 for reading; never faults."""
    if not (isinstance(array, types.Array) and array.ndim == 2):
        return None

    def codegen(context, builder, signature, args):
        arytype = signature.args[0]
        ary = context.make_array(arytype)(context, builder, args[0])
        pointer = cgutils.get_item_pointer(context, builder, arytype, ary, [args[1], args[2]])
        i8p = ir.IntType(8).as_pointer()
        fnty = ir.FunctionType(ir.VoidType(), [i8p, _I32, _I32, _I32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0i8")
        # (read, locality 2: keep it in the outer caches, data cache)
        options = [ir.Constant(_I32, value) for value in (0, 2, 1)]
        builder.call(fn, [builder.bitcast(pointer, i8p), *options])
        return context.get_dummy_value()

    return types.void(array, i, j), codegen


@intrinsic
def store_fence(typingctx):
    """A full memory fence: streaming stores become visible before anything after it."""

    def codegen(context, builder, signature, args):
        builder.fence("seq_cst")
        return context.get_dummy_value()

    return types.void(), codegen


def _counted_loop(builder, start, stop, step, body):
    """Emit ``for j in range(start, stop - step + 1, step): body(j)``; returns the first j
    the loop did not reach."""
    entry = builder.block
    test = builder.append_basic_block("loop.test")
    work = builder.append_basic_block("loop.body")
    after = builder.append_basic_block("loop.end")
    builder.branch(test)
    builder.position_at_end(test)
    j = builder.phi(_I64)
    j.add_incoming(start, entry)
    room = builder.icmp_signed("<=", builder.add(j, ir.Constant(_I64, step)), stop)
    builder.cbranch(room, work, after)
    builder.position_at_end(work)
    body(j)
    j.add_incoming(builder.add(j, ir.Constant(_I64, step)), builder.block)
    builder.branch(test)
    builder.position_at_end(after)
    return j


@intrinsic
def scale_streaming(typingctx, source, destination, factor):
    """``destination[:] = source * factor`` (1-D C-contiguous float32 arrays of one length),
    with non-temporal stores of 64 bytes wherever ``destination`` is 64-byte aligned."""
    for array in (source, destination):
        if not (isinstance(array, types.Array) and array.ndim == 1 and array.layout == "C"):
            return None
        if array.dtype != types.float32:
            return None
    if factor != types.float32:
        return None

    def codegen(context, builder, signature, args):
        src = context.make_array(signature.args[0])(context, builder, args[0])
        dst = context.make_array(signature.args[1])(context, builder, args[1])
        n = builder.extract_value(dst.shape, 0)
        k = args[2]
        vector = ir.VectorType(_F32, LANES)
        ks = builder.insert_element(ir.Constant(vector, ir.Undefined), k, ir.Constant(_I32, 0))
        ks = builder.shuffle_vector(ks, ks, ir.Constant(ir.VectorType(_I32, LANES), [0] * LANES))

        def scalar(j):
            value = builder.fmul(builder.load(builder.gep(src.data, [j])), k)
            builder.store(value, builder.gep(dst.data, [j]))

        def streamed(j):
            source = builder.bitcast(builder.gep(src.data, [j]), vector.as_pointer())
            target = builder.bitcast(builder.gep(dst.data, [j]), vector.as_pointer())
            store = builder.store(builder.fmul(builder.load(source, align=4), ks), target, 64)
            store.set_metadata("nontemporal", builder.module.add_metadata([ir.Constant(_I32, 1)]))

        # scalar stores up to the first 64-byte boundary of the destination (at most 15)
        address = builder.ptrtoint(dst.data, _I64)
        misaligned = builder.and_(address, ir.Constant(_I64, 63))
        head = builder.lshr(
            builder.and_(builder.sub(ir.Constant(_I64, 64), misaligned), ir.Constant(_I64, 63)),
            ir.Constant(_I64, 2),
        )
        aligned = builder.icmp_unsigned(
            "==", builder.and_(address, ir.Constant(_I64, 3)), ir.Constant(_I64, 0)
        )  # float-aligned: boundary reachable
        head = builder.select(aligned, head, n)  # (otherwise every store is scalar)
        head = builder.select(builder.icmp_signed("<", head, n), head, n)
        zero = ir.Constant(_I64, 0)
        _counted_loop(builder, zero, head, 1, scalar)
        rest = _counted_loop(builder, head, n, LANES, streamed)
        _counted_loop(builder, rest, n, 1, scalar)
        return context.get_dummy_value()

    return types.void(source, destination, factor), codegen
