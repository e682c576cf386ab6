"""Lock-step batch search (the NANN shape): all queries of a batch advance one expansion
per step, and the candidates of the whole batch are scored in one call of the scorer,
which is what a neural network (or a GPU) needs. The orchestration is in
``rtindex.core.lockstep``; these kernels do the per-query work of a step.

Per query q: a beam sorted best first (beam_scores/beam_nodes[q, :beam_size[q]]) with
an expanded flag per entry, and a visited bitmap (visited[q] as uint64 words). The
beam holds the best ``width`` nodes found; expanding the best unexpanded entry until
none is left is the same search as hnswlib's two-heap loop (a candidate evicted from
the results is never expanded there either).
"""

import numpy as np
from numba import njit

from .beam_search import write_results
from .graph import adjacency, degree_of, row_of


@njit(nogil=True, cache=True)
def test_and_set(visited, q, node):
    """Set node's bit in visited[q]; True if it was already set."""
    word = node >> 6
    bit = np.uint64(1) << np.uint64(node & 63)
    if visited[q, word] & bit:
        return True
    visited[q, word] |= bit
    return False


@njit(nogil=True, cache=True)
def mark_visited(visited, query_index, nodes):
    for i in range(nodes.shape[0]):
        test_and_set(visited, query_index[i], nodes[i])


@njit(nogil=True, cache=True)
def clear_visited(visited, query_index, nodes):
    """Clear the bits set for (query, node) pairs: reset cost O(touched)."""
    for i in range(nodes.shape[0]):
        visited[query_index[i], nodes[i] >> 6] = np.uint64(0)


@njit(nogil=True, cache=True)
def expand_step(tables, level, q_start, q_stop, beam_nodes, beam_flags, beam_size, visited, out_nodes, out_counts, hops):
    """For each query of q_start..q_stop: expand its best unexpanded beam entry, writing
    the neighbors not visited yet to out_nodes[q, :out_counts[q]]. Returns how many
    queries expanded a node (0 = all of them are done on this layer)."""
    links = adjacency(tables, level)
    n_nodes = tables.node_state.shape[0]
    active = 0
    for q in range(q_start, q_stop):
        out_counts[q] = 0
        pick = -1
        for i in range(beam_size[q]):
            if beam_flags[q, i] == 0:
                pick = i
                break
        if pick < 0:
            continue
        beam_flags[q, pick] = 1
        hops[q] += 1
        active += 1
        row = row_of(tables, beam_nodes[q, pick], level)
        if row < 0:
            continue
        n = 0
        for j in range(degree_of(links, row)):
            nb = links[row, 1 + j]
            if nb < 0 or nb >= n_nodes:
                continue
            if not test_and_set(visited, q, nb):
                out_nodes[q, n] = nb
                n += 1
        out_counts[q] = n
    return active


@njit(nogil=True, cache=True)
def merge_step(beam_scores, beam_nodes, beam_flags, beam_size, widths, q_start, q_stop, offsets, cand_nodes, cand_scores):
    """Insert each query's scored candidates (offsets[q]:offsets[q+1]) into its sorted
    beam of ``widths[q]`` entries (new entries unexpanded; ties keep the older entry first)."""
    for q in range(q_start, q_stop):
        width = widths[q]
        size = beam_size[q]
        for c in range(offsets[q], offsets[q + 1]):
            s = cand_scores[c]
            if size == width and s <= beam_scores[q, size - 1]:
                continue
            pos = size if size < width else width - 1
            while pos > 0 and beam_scores[q, pos - 1] < s:
                if pos < width:
                    beam_scores[q, pos] = beam_scores[q, pos - 1]
                    beam_nodes[q, pos] = beam_nodes[q, pos - 1]
                    beam_flags[q, pos] = beam_flags[q, pos - 1]
                pos -= 1
            beam_scores[q, pos] = s
            beam_nodes[q, pos] = cand_nodes[c]
            beam_flags[q, pos] = 0
            if size < width:
                size += 1
        beam_size[q] = size


@njit(nogil=True, cache=True)
def gather_rows(vectors, node_vec, nodes, out):
    """out[i] = the embedding row read by nodes[i]."""
    for i in range(nodes.shape[0]):
        out[i] = vectors[node_vec[nodes[i]]]


@njit(nogil=True, cache=True)
def finish_results(tables, beam_scores, beam_nodes, beam_size, k, out_ids, out_scores, item_scratch):
    """Beam -> k external ids / scores per query, exactly as the per-query search."""
    for q in range(beam_scores.shape[0]):
        write_results(tables, beam_nodes[q], beam_scores[q], beam_size[q], k, out_ids[q], out_scores[q], item_scratch)
