"""Array layout of the mutable graph: one structure of arrays shared by every kernel.

Every table is a plain numpy array so numba kernels can read it without Python objects.
Tables grow without copying (prefix views of a large reservation, see
``rtindex.core.storage``); a grown table is published as a new ``GraphTables`` value, so a
search that captured the old value keeps reading shorter views of the same rows while the
writer moves on.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

# node_state values
FREE = np.uint8(0)
LIVE = np.uint8(1)
TOMBSTONE = np.uint8(2)

# item_state values
ITEM_FREE = np.uint8(0)
ITEM_LIVE = np.uint8(1)
ITEM_DELETED = np.uint8(2)


class GraphTables(NamedTuple):
    """All tables of one index. Shapes use ``cap_*`` for the current capacities.
    ``rtindex.core.storage.COLUMNS`` is their schema (table, row shape, dtype, fill value,
    GPU mirroring), from which storage creates, grows, saves and restores them.

    Nodes (graph vertices; an item owns one node per subgraph it belongs to):
      vectors     float32[cap_nodes, dim]  embedding rows (unit-norm for cosine); a
                  node's own row has its id, and node_vec says which row it reads
      vectors16   uint16[cap_nodes, dim or 0]  float16 bits of the rows, for traversal
                  with traversal_precision="float16" (zero columns otherwise)
    node_vec    int32[cap_nodes]   vector row read by this node (several nodes of an
                  item may share one row)
      node_item   int32[cap_nodes]   item slot this node belongs to
      node_level  int32[cap_nodes]   top HNSW level of the node
      node_state  uint8[cap_nodes]   FREE / LIVE / TOMBSTONE
      node_graph  int32[cap_nodes]   subgraph (category) the node lives in
      node_next   int32[cap_nodes]   next node of the same item, -1 at the end
      node_direct uint8[cap_nodes]   1: the item was put in this node's category itself,
                  0: it is a member through a descendant category (or the global graph)
      node_upper  int32[cap_nodes]   upper-level row of level 1, -1 if level 0 only
      links0      int32[cap_nodes, 1 + M0]  level-0 adjacency, column 0 = degree
    Upper levels (one row per (node, level >= 1), chained from level 1 upwards):
      upper_links int32[cap_upper, 1 + M]   adjacency, column 0 = degree
      upper_next  int32[cap_upper]          row of the next level up, -1 at the top
    Items (one per external id; written only by ``rtindex.core.storage.ItemTable``):
      item_ids        int64[cap_items]  external id
      item_versions   int64[cap_items]  last applied version
      item_vec        int32[cap_items]  current vector row
      item_first_node int32[cap_items]  head of the item's node chain
      item_first_cnode int32[cap_items] head of its chain of category nodes (in the
                      category store's tables, ``rtindex.core.categories``), -1 if none
      item_state      uint8[cap_items]  ITEM_FREE / ITEM_LIVE / ITEM_DELETED
    Subgraphs:
      entry_node  int32[n_graphs]  entry point (a LIVE node of top level) or -1
    """

    vectors: np.ndarray
    vectors16: np.ndarray
    node_vec: np.ndarray
    node_item: np.ndarray
    node_level: np.ndarray
    node_state: np.ndarray
    node_graph: np.ndarray
    node_next: np.ndarray
    node_direct: np.ndarray
    node_upper: np.ndarray
    links0: np.ndarray
    upper_links: np.ndarray
    upper_next: np.ndarray
    item_ids: np.ndarray
    item_versions: np.ndarray
    item_vec: np.ndarray
    item_first_node: np.ndarray
    item_first_cnode: np.ndarray
    item_state: np.ndarray
    entry_node: np.ndarray


class Scratch(NamedTuple):
    """Per-worker buffers, reused across calls so kernels never allocate per query.

    visited  uint16[cap_nodes]  generation stamps; a node is visited iff == stamp[0]
    stamp    uint16[1]          current generation (reset cost O(touched), wrap O(N) once per 2^16 - 1)
    cand_key float32[C], cand_val int32[C]  candidate heap (keys are negated scores)
    res_key  float32[C], res_val  int32[C]  result heap (min-heap on score)
    block    int32[B]           unvisited neighbor ids collected before scoring
    pool_node int32[P], pool_score float32[P]  candidate pool for neighbor selection
    selected int32[B]           output of neighbor selection
    """

    visited: np.ndarray
    stamp: np.ndarray
    cand_key: np.ndarray
    cand_val: np.ndarray
    res_key: np.ndarray
    res_val: np.ndarray
    block: np.ndarray
    pool_node: np.ndarray
    pool_score: np.ndarray
    selected: np.ndarray


class SearchMode(NamedTuple):
    """How a beam search reads rows."""

    metric: int  # METRIC_DOT or METRIC_L2
    direct_rows: bool  # node_vec[n] == n for every node: skip that lookup
    half: bool  # score on the float16 copy (results are rescored in float32)


class BuildParams(NamedTuple):
    """Graph construction parameters, as kernels read them."""

    metric: int  # METRIC_DOT or METRIC_L2
    M: int  # neighbors chosen for a new node; row width on upper levels
    max_degree0: int  # row width on level 0 (2 * M)
    ef_construction: int
    prune_alpha: float  # RobustPrune factor (1.0 = HNSW heuristic)
    fill: bool  # a new node's row: refill pruned places with the best pruned candidates
    repair_alpha: float  # RobustPrune factor when repairing after deletes
    repair_widen: int  # rows of this many closest live candidates join the repair pool
    half: bool  # choosing links (selection, reverse-link pruning, repair) compares rows on the float16 copy


# metric codes passed to kernels: similarity is q.x (ip; cosine on unit-norm rows) or
# -|q - x|^2 (l2); higher is better either way
METRIC_DOT = 0
METRIC_L2 = 1


def metric_code(metric: str) -> int:
    return METRIC_L2 if metric == "l2" else METRIC_DOT
