"""Read access to adjacency, shared by search, insert and repair kernels.

Rows are addressed as (links, row): ``links`` is ``links0`` on level 0 and
``upper_links`` above; entries are links[row, 1 : 1 + degree]. Kernels bind ``links``
once per layer and index it directly: slicing a row view inside a hot loop would cost
a reference-count update per neighbor.
"""

import numpy as np
from numba import njit


@njit(nogil=True, cache=True)
def upper_row_index(tables, node, level):
    """Row of ``node`` in ``upper_links`` for ``level`` >= 1, or -1 if it has none
    (or if it lies past these tables' rows: written after a growth a reader does not see)."""
    rows = tables.upper_next.shape[0]
    row = tables.node_upper[node]
    for _ in range(level - 1):
        if row < 0 or row >= rows:
            return -1
        row = tables.upper_next[row]
    return row if row < rows else -1


@njit(nogil=True, cache=True)
def adjacency(tables, level):
    return tables.links0 if level == 0 else tables.upper_links


@njit(nogil=True, cache=True)
def row_of(tables, node, level):
    """Row of ``node`` in ``adjacency(tables, level)``, or -1 if it has none there."""
    if level == 0:
        return node
    return upper_row_index(tables, node, level)


@njit(nogil=True, cache=True)
def degree_of(links, row):
    """Degree clamped to the row width: a row being rewritten by the writer can never
    make a reader index past it."""
    degree = links[row, 0]
    width = links.shape[1] - 1
    if degree > width:
        return width
    if degree < 0:
        return 0
    return degree


@njit(nogil=True, cache=True)
def write_row(links, row, selected, n_sel):
    """Rewrite a row: entries first, degree last (lowered first if it shrinks), so a
    concurrent reader always reads valid node ids."""
    width = links.shape[1] - 1
    if n_sel > width:
        n_sel = width
    if n_sel < links[row, 0]:
        links[row, 0] = n_sel
    for i in range(n_sel):
        links[row, 1 + i] = selected[i]
    links[row, 0] = n_sel


@njit(nogil=True, cache=True)
def next_stamp(scratch):
    """Start a new visited generation. Stamps are 16-bit (half the cache footprint of
    32-bit ones); the array is cleared once per 65,535 generations, O(N / 65535)
    amortised per layer search."""
    s = np.uint16(scratch.stamp[0] + np.uint16(1))
    if s == np.uint16(0):
        scratch.visited[:] = 0
        s = np.uint16(1)
    scratch.stamp[0] = s
    return s
