"""Insert path: link freshly written nodes into their subgraphs.

Nodes arrive with vector row, level and (empty) upper rows set. They are inserted in
sub-batches whose size grows with the graph (prefix doubling, ``insert_batch_fraction``
of the live nodes): each sub-batch is planned in parallel on the graph as it stands
(``plan_links``), then connected (``write_forward_links`` + ``add_reverse_links``).
"""

from __future__ import annotations

import numpy as np

from rtindex.core.engine import Engine
from rtindex.kernels.insert import add_reverse_links, collect_reverse_edges, plan_links, write_forward_links
from rtindex.kernels.layout import BuildParams, Scratch


def draw_levels(rng: np.random.Generator, n: int, multiplier: float, max_level: int) -> np.ndarray:
    """HNSW levels: floor(-ln(U) * 1/ln(M)), capped."""
    levels = np.floor(-np.log1p(-rng.random(n)) * multiplier)
    return np.minimum(levels, max_level).astype(np.int32)


def link_new_nodes(engine: Engine, nodes: np.ndarray, params: BuildParams) -> None:
    """Insert ``nodes`` into the graph with ``params`` (``engine.params``, or a copy
    with a narrower ef_construction); on return every one is reachable by searches and
    counted in ``engine.live_nodes``."""
    cfg = engine.config
    done = 0
    while done < len(nodes):
        size = int(cfg.insert_batch_fraction * engine.live_nodes)
        size = max(1, min(size, cfg.max_insert_batch))
        batch = nodes[done : done + size]
        done += len(batch)
        rest = _seed_empty_subgraphs(engine, batch)
        if len(rest):
            _insert_sub_batch(engine, rest, params)
        engine.live_nodes += len(batch)


def link_category_nodes(engine: Engine, nodes: np.ndarray, params: BuildParams) -> None:
    """``link_new_nodes`` for nodes of many category subgraphs at once: the sub-batches
    double per subgraph (each takes up to ``insert_batch_fraction`` of its subgraph's
    live nodes, at least one), so a category that starts empty is built node by node
    at first however many of its members arrive together. Counts them in
    ``engine.graph_live`` too."""
    cfg = engine.config
    graphs = engine.store.tables.node_graph[nodes]
    order = np.argsort(graphs, kind="stable")
    nodes, graphs = nodes[order], graphs[order]
    names, starts, counts = np.unique(graphs, return_index=True, return_counts=True)
    rank = np.arange(len(nodes)) - np.repeat(starts, counts)  # place among its subgraph's new nodes
    group = np.repeat(np.arange(len(names)), counts)
    done = np.zeros(len(names), np.int64)
    while (done < counts).any():
        live = engine.graph_live[names]
        take = np.maximum(1, (cfg.insert_batch_fraction * live).astype(np.int64))
        chosen = np.flatnonzero((rank >= done[group]) & (rank < done[group] + take[group]))
        chosen = chosen[: cfg.max_insert_batch]
        batch = nodes[chosen]
        rest = _seed_empty_subgraphs(engine, batch)
        if len(rest):
            _insert_sub_batch(engine, rest, params)
        added = np.bincount(group[chosen], minlength=len(names))
        done += added
        np.add.at(engine.graph_live, names, added)
        engine.live_nodes += len(batch)


def relink_nodes(engine: Engine, nodes: np.ndarray) -> None:
    """Insert already-linked live nodes again (new rows chosen by a fresh search), for
    nodes that lost all their neighbors. Their old in-links stay; no link is added
    twice."""
    for lo in range(0, len(nodes), engine.config.max_insert_batch):
        _insert_sub_batch(engine, nodes[lo : lo + engine.config.max_insert_batch], engine.params)


def _seed_empty_subgraphs(engine: Engine, batch: np.ndarray) -> np.ndarray:
    """A subgraph without an entry point takes its first new node as entry (nothing to
    link it to); returns the rest of the batch."""
    t = engine.store.tables
    graphs = t.node_graph[batch]
    empty = t.entry_node[graphs] < 0
    if not empty.any():
        return batch
    empty_graphs, first = np.unique(graphs[empty], return_index=True)
    seeds = batch[empty][first]
    t.entry_node[empty_graphs] = seeds
    return batch[~np.isin(batch, seeds)]


def _insert_sub_batch(engine: Engine, batch: np.ndarray, params: BuildParams) -> None:
    cfg = engine.config
    t = engine.store.tables
    levels = t.node_level[batch]
    rows_per_node = levels + 1
    plan_offsets = (np.cumsum(rows_per_node) - rows_per_node).astype(np.int64)
    plan = np.zeros((int(rows_per_node.sum()), 1 + cfg.max_degree0), np.int32)
    capacity = t.node_state.shape[0]

    cursor = np.zeros(1, np.int64)  # the workers claim nodes from it one by one

    def plan_share(scratch: Scratch) -> None:
        counters = np.zeros(2, np.int64)
        plan_links(
            t, batch, cursor, params, engine.search_mode, engine.greedy_widths, scratch, plan, plan_offsets, counters,
        )

    engine.workers.run_shared(len(batch), plan_share, capacity, params.ef_construction, min_share=2)
    write_forward_links(t, batch, plan, plan_offsets)
    targets, sources, edge_levels, group_starts = collect_reverse_edges(t, batch, plan, plan_offsets, capacity)
    engine.note_links(batch)  # the GPU mirror's dirty rows (no-op on the CPU)
    engine.note_links(targets, edge_levels)
    n_groups = len(group_starts) - 1
    # a group is every new in-edge of one target: its pool holds the target's row plus
    # all of them, and a hub can draw hundreds in one sub-batch
    largest_group = int(np.diff(group_starts).max()) if n_groups else 0

    reverse_cursor = np.zeros(1, np.int64)

    def reverse_share(scratch: Scratch) -> None:
        add_reverse_links(t, targets, sources, edge_levels, group_starts, reverse_cursor, engine.params, scratch)

    engine.workers.run_shared(n_groups, reverse_share, capacity, 1, results=largest_group + cfg.max_degree0,
                              min_share=256)
    _promote_entry_points(engine, batch)


def _promote_entry_points(engine: Engine, batch: np.ndarray) -> None:
    """A new node above its subgraph's top level becomes the entry point (after it is
    linked, so searches never start from an unlinked node)."""
    t = engine.store.tables
    graphs = t.node_graph[batch]
    levels = t.node_level[batch]
    order = np.lexsort((-levels, graphs))
    first = np.ones(len(order), bool)
    first[1:] = graphs[order][1:] != graphs[order][:-1]
    tops = batch[order][first]
    top_graphs = graphs[order][first]
    current = t.entry_node[top_graphs]
    higher = t.node_level[tops] > t.node_level[current]
    t.entry_node[top_graphs[higher]] = tops[higher]
