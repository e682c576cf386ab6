"""Software prefetch for numba kernels: graph search is bound by memory latency, so
fetching the next candidates' rows while scoring the current ones pays (TOOLCHAIN.md)."""

from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic


@intrinsic
def prefetch_at(typingctx, array, row, col):
    """Hint the CPU to load the cache line holding ``array[row, col]`` (2-D array).
    A hint never faults, so an out-of-range index is harmless."""
    sig = types.void(array, row, col)

    def codegen(context, builder, signature, args):
        array_type = signature.args[0]
        arr = context.make_array(array_type)(context, builder, args[0])
        row_index = context.cast(builder, args[1], signature.args[1], types.intp)
        col_index = context.cast(builder, args[2], signature.args[2], types.intp)
        ptr = cgutils.get_item_pointer(context, builder, array_type, arr, [row_index, col_index], wraparound=False)
        byte_ptr_type = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fn_type = ir.FunctionType(ir.VoidType(), [byte_ptr_type, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fn_type, "llvm.prefetch.p0")
        # read access, high temporal locality, data cache
        builder.call(
            fn,
            [builder.bitcast(ptr, byte_ptr_type), ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)],
        )
        return context.get_dummy_value()

    return sig, codegen


@njit(nogil=True, cache=True)
def prefetch_whole_row(array, row):
    """Prefetch every cache line of array[row]."""
    per_line = max(1, 64 // array.itemsize)
    for col in range(0, array.shape[1], per_line):
        prefetch_at(array, row, col)

