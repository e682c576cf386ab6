"""Binary min-heaps over fixed-size (key, value) arrays: no allocation in the hot loop.

A max-heap is a min-heap of negated keys. ``size`` is passed in and returned.
"""

from numba import njit


@njit(nogil=True, cache=True)
def heap_push(keys, vals, size, key, val):
    i = size
    while i > 0:
        parent = (i - 1) >> 1
        if keys[parent] <= key:
            break
        keys[i] = keys[parent]
        vals[i] = vals[parent]
        i = parent
    keys[i] = key
    vals[i] = val
    return size + 1


@njit(nogil=True, cache=True)
def heap_replace_top(keys, vals, size, key, val):
    """Put (key, val) at the root and sift it down; size is unchanged."""
    i = 0
    while True:
        child = 2 * i + 1
        if child >= size:
            break
        right = child + 1
        if right < size and keys[right] < keys[child]:
            child = right
        if keys[child] >= key:
            break
        keys[i] = keys[child]
        vals[i] = vals[child]
        i = child
    keys[i] = key
    vals[i] = val


@njit(nogil=True, cache=True)
def heap_pop(keys, vals, size):
    """Drop the root; returns the new size."""
    size -= 1
    if size > 0:
        heap_replace_top(keys, vals, size, keys[size], vals[size])
    return size


@njit(nogil=True, cache=True)
def heap_push_bounded(keys, vals, size, capacity, key, val):
    """Keep the ``capacity`` largest keys: push, or replace the root if key beats it."""
    if size < capacity:
        return heap_push(keys, vals, size, key, val)
    if key > keys[0]:
        heap_replace_top(keys, vals, size, key, val)
    return size


@njit(nogil=True, cache=True)
def heap_drain_descending(keys, vals, size, out_keys, out_vals):
    """Empty a min-heap into out_* ordered best (largest key) first; returns the count."""
    n = size
    for pos in range(n - 1, -1, -1):
        out_keys[pos] = keys[0]
        out_vals[pos] = vals[0]
        size = heap_pop(keys, vals, size)
    return n
