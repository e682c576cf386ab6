// HNSW search for the built-in metrics on the GPU: many queries per launch, one warp
// per query. The same algorithm, step for step, as the CPU kernels in beam_search.py
// (search_one -> descend_to_level -> beam_search_layer -> rescore_exact ->
// write_results), so both backends return the same ids for the same index and queries:
//
//   * greedy descent on the upper levels (beam width level_ef[l], 1 by default), beam
//     search of width ef on level 0; tombstoned nodes are traversed but never enter
//     level-0 results;
//   * the same binary heaps (ported from heaps.py) with the same admission rules, the
//     same candidate capacity (2 * beam + 2 * max_degree0 + 16) and compaction;
//   * float16 traversal (half = 1) rescored in float32 at the end, a stable sort, one
//     entry per item, equal scores ordered by ascending id, -1 / -inf padding.
//
// What the warp does in parallel: reading an adjacency row (one lane per neighbor),
// the visited-bitmap test-and-set (atomicOr; duplicates within a row are resolved with
// __match_any_sync so the first occurrence wins, as in the sequential CPU loop),
// compaction of the unvisited neighbors into a block (ballot + popc, keeping row order),
// and scoring (coalesced row reads, a warp-level dot product per row). The heap updates
// are inherently sequential and run on lane 0, in shared memory when it fits.
//
// Floating point: the CPU kernels are compiled with fastmath (LLVM picks the summation
// order), the warp reduction here has its own order, so scores can differ in the last
// bits; ids can then differ where two candidates are within that rounding of each other.
//
// No host code here; the launcher is rtindex/core/gpu/search.py. Compiled with NVRTC (CI
// compiles this file for sm_80 and sm_90 without a GPU: tests/test_gpu.py).

#define FULL_MASK 0xffffffffu
#define NODE_LIVE 1
#define METRIC_L2 1
#define NEG_INF (-__int_as_float(0x7f800000))

__device__ __forceinline__ float half_bits_to_float(unsigned short bits) {
    // inline PTX rather than cuda_fp16.h: no include path needed under NVRTC
    float out;
    asm("cvt.f32.f16 %0, %1;" : "=f"(out) : "h"(bits));
    return out;
}

// ---------------------------------------------------------------- heaps (lane 0 only)
// Binary min-heaps over (key, value) arrays, exactly as kernels/heaps.py.

__device__ int heap_push(float* keys, int* vals, int size, float key, int val) {
    int i = size;
    while (i > 0) {
        int parent = (i - 1) >> 1;
        if (keys[parent] <= key) break;
        keys[i] = keys[parent];
        vals[i] = vals[parent];
        i = parent;
    }
    keys[i] = key;
    vals[i] = val;
    return size + 1;
}

__device__ void heap_replace_top(float* keys, int* vals, int size, float key, int val) {
    int i = 0;
    while (true) {
        int child = 2 * i + 1;
        if (child >= size) break;
        int right = child + 1;
        if (right < size && keys[right] < keys[child]) child = right;
        if (keys[child] >= key) break;
        keys[i] = keys[child];
        vals[i] = vals[child];
        i = child;
    }
    keys[i] = key;
    vals[i] = val;
}

__device__ int heap_pop(float* keys, int* vals, int size) {
    size -= 1;
    if (size > 0) heap_replace_top(keys, vals, size, keys[size], vals[size]);
    return size;
}

__device__ int heap_push_bounded(float* keys, int* vals, int size, int capacity, float key, int val) {
    if (size < capacity) return heap_push(keys, vals, size, key, val);
    if (key > keys[0]) heap_replace_top(keys, vals, size, key, val);
    return size;
}

__device__ int heap_drain_descending(float* keys, int* vals, int size, float* out_keys, int* out_vals) {
    int n = size;
    for (int pos = n - 1; pos >= 0; --pos) {
        out_keys[pos] = keys[0];
        out_vals[pos] = vals[0];
        size = heap_pop(keys, vals, size);
    }
    return n;
}

// Candidate compaction (beam_search.py _compact_candidates): drop candidates that can
// never be expanded, then rebuild the heap in place.
__device__ int compact_candidates(float* cand_key, int* cand_val, int size, float worst_kept) {
    int kept = 0;
    for (int i = 0; i < size; ++i) {
        if (-cand_key[i] >= worst_kept) {
            cand_key[kept] = cand_key[i];
            cand_val[kept] = cand_val[i];
            kept += 1;
        }
    }
    int rebuilt = 0;
    for (int i = 0; i < kept; ++i) rebuilt = heap_push(cand_key, cand_val, rebuilt, cand_key[i], cand_val[i]);
    return rebuilt;
}

// ---------------------------------------------------------------- per-query context

struct Graph {
    const float* vectors;             // [cap, dim]
    const unsigned short* vectors16;  // [cap, dim] float16 bits (only read when half)
    const int* links0;                // [cap, width0], column 0 = degree
    const int* upper_links;           // [cap_upper, width_up]
    const int* upper_next;            // [cap_upper]
    const int* node_upper;            // [cap]
    const int* node_level;            // [cap]
    const unsigned char* node_state;  // [cap]
    const int* node_item;             // [cap]
    const int* node_vec;              // [cap] row read by each node (category subgraphs), or null: row = node
    const long long* item_ids;        // [cap_items]
    int n_rows;                       // rows on the device: a node reading a row past them is skipped
    int width0;
    int width_up;
    int n_nodes;  // node capacity on the device: neighbor ids outside [0, n_nodes) are skipped
    int dim;
    int metric;
};

struct Warp {
    int lane;
    const float* query;     // [dim] (scratch copy)
    float* cand_key;        // [cand_cap]
    int* cand_val;
    float* res_key;         // [beam]
    int* res_val;
    float* ent_key;         // [beam] entry set of a layer / final list
    int* ent_val;
    int* block;             // [max_degree0] unvisited neighbors of the expanded node
    float* block_score;
    int* item_seen;         // [k]
    unsigned int* visited;  // [visited_words] this query's bitmap in global memory
    long long visited_words;
    int* touched;           // [touched_cap] nodes marked in the current layer (for the reset)
    int touched_cap;
    int n_touched;          // lane 0's count (may exceed touched_cap: then clear all)
    int cand_cap;
    long long hops;
    long long scored;
};

__device__ __forceinline__ int row_of(const Graph& g, int node, int level) {
    if (level == 0) return node;
    int row = g.node_upper[node];
    for (int i = 0; i < level - 1; ++i) {
        if (row < 0) return -1;
        row = g.upper_next[row];
    }
    return row;
}

__device__ __forceinline__ int clamped_degree(const int* links, long long row, int width) {
    int degree = links[row * width];
    if (degree > width - 1) return width - 1;
    if (degree < 0) return 0;
    return degree;
}

// Similarity of the query to one row, computed by the whole warp (lane i reads
// elements i, i + 32, ...: coalesced). Every lane returns the same value (butterfly
// reduction: each addition is commutative, so all lanes add the same pairs).
__device__ float warp_score(const Graph& g, const float* query, int node, bool half, int lane) {
    const int row = g.node_vec != nullptr ? g.node_vec[node] : node;
    if (row < 0 || row >= g.n_rows) return NEG_INF;  // written after the device's copy was taken
    float acc = 0.0f;
    long long base = (long long)row * g.dim;
    if (half) {
        for (int i = lane; i < g.dim; i += 32) {
            float x = half_bits_to_float(g.vectors16[base + i]);
            if (g.metric == METRIC_L2) {
                float d = query[i] - x;
                acc += d * d;
            } else {
                acc += query[i] * x;
            }
        }
    } else {
        for (int i = lane; i < g.dim; i += 32) {
            float x = g.vectors[base + i];
            if (g.metric == METRIC_L2) {
                float d = query[i] - x;
                acc += d * d;
            } else {
                acc += query[i] * x;
            }
        }
    }
    for (int offset = 16; offset > 0; offset >>= 1) acc += __shfl_xor_sync(FULL_MASK, acc, offset);
    return g.metric == METRIC_L2 ? -acc : acc;
}

__device__ __forceinline__ void mark_visited_lane0(Warp& w, int node) {
    atomicOr(&w.visited[node >> 5], 1u << (node & 31));
    if (w.n_touched < w.touched_cap) w.touched[w.n_touched] = node;
    w.n_touched += 1;
}

// Reset the bits set during one layer search: O(touched), or the whole bitmap if the
// touched list overflowed.
__device__ void clear_visited(Warp& w) {
    int n = __shfl_sync(FULL_MASK, w.n_touched, 0);
    if (n <= w.touched_cap) {
        for (int i = w.lane; i < n; i += 32) w.visited[w.touched[i] >> 5] = 0u;
    } else {
        for (long long i = w.lane; i < w.visited_words; i += 32) w.visited[i] = 0u;
    }
    __syncwarp();
    if (w.lane == 0) w.n_touched = 0;
}

// Best-first search of width ef on one layer (beam_search_layer). The n_entries entries
// (ent_key/ent_val, already scored) seed it; results are left in res_key/res_val as a
// min-heap; returns their count (on every lane).
__device__ int layer_search(const Graph& g, Warp& w, int level, int ef, bool live_only, int n_entries, bool half) {
    const int* links = level == 0 ? g.links0 : g.upper_links;
    const int width = level == 0 ? g.width0 : g.width_up;
    const int lane = w.lane;
    int n_cand = 0;
    int n_res = 0;
    if (lane == 0) {
        for (int i = 0; i < n_entries; ++i) {
            int node = w.ent_val[i];
            mark_visited_lane0(w, node);
            n_cand = heap_push(w.cand_key, w.cand_val, n_cand, -w.ent_key[i], node);
            if (!live_only || g.node_state[node] == NODE_LIVE)
                n_res = heap_push_bounded(w.res_key, w.res_val, n_res, ef, w.ent_key[i], node);
        }
    }
    __syncwarp();
    while (true) {
        int row = -1;
        int stop = 0;
        if (lane == 0) {
            if (n_cand == 0 || (n_res == ef && -w.cand_key[0] < w.res_key[0])) {
                stop = 1;
            } else {
                int node = w.cand_val[0];
                n_cand = heap_pop(w.cand_key, w.cand_val, n_cand);
                w.hops += 1;
                row = row_of(g, node, level);
            }
        }
        stop = __shfl_sync(FULL_MASK, stop, 0);
        if (stop) break;
        row = __shfl_sync(FULL_MASK, row, 0);
        if (row < 0) continue;
        const int degree = clamped_degree(links, row, width);
        // neighbor expansion: test-and-set the bitmap, compact the new ones in row order
        int n_block = 0;
        int n_touched = __shfl_sync(FULL_MASK, w.n_touched, 0);
        for (int base = 0; base < degree; base += 32) {
            const int j = base + lane;
            int nb = -1;
            bool valid = false;
            if (j < degree) {
                nb = links[(long long)row * width + 1 + j];
                valid = nb >= 0 && nb < g.n_nodes;
            }
            const int key = valid ? nb : -2 - lane;  // invalid lanes match nobody
            const unsigned peers = __match_any_sync(FULL_MASK, key);
            bool fresh = false;
            if (valid && (__ffs(peers) - 1) == lane) {
                const unsigned bit = 1u << (nb & 31);
                fresh = (atomicOr(&w.visited[nb >> 5], bit) & bit) == 0u;
            }
            const unsigned fresh_mask = __ballot_sync(FULL_MASK, fresh);
            if (fresh) {
                const int pos = n_block + __popc(fresh_mask & ((1u << lane) - 1u));
                w.block[pos] = nb;
                if (n_touched + pos < w.touched_cap) w.touched[n_touched + pos] = nb;
            }
            n_block += __popc(fresh_mask);
            n_touched += __popc(fresh_mask);
        }
        __syncwarp();
        // scoring: one warp-wide dot product per new neighbor
        for (int b = 0; b < n_block; ++b) {
            const float s = warp_score(g, w.query, w.block[b], half, lane);
            if (lane == 0) w.block_score[b] = s;
        }
        __syncwarp();
        if (lane == 0) {
            w.n_touched = n_touched;
            w.scored += n_block;
            // admission, in row order, exactly as the CPU loop
            for (int b = 0; b < n_block; ++b) {
                const int nb = w.block[b];
                const float score = w.block_score[b];
                if (n_res < ef || score > w.res_key[0]) {
                    if (n_cand == w.cand_cap) {
                        const float bound = n_res > 0 ? w.res_key[0] : NEG_INF;
                        n_cand = compact_candidates(w.cand_key, w.cand_val, n_cand, bound);
                        if (n_cand == w.cand_cap) n_cand -= 1;  // all still useful: drop the last leaf
                    }
                    n_cand = heap_push(w.cand_key, w.cand_val, n_cand, -score, nb);
                    if (!live_only || g.node_state[nb] == NODE_LIVE) {
                        if (n_res < ef)
                            n_res = heap_push(w.res_key, w.res_val, n_res, score, nb);
                        else
                            heap_replace_top(w.res_key, w.res_val, n_res, score, nb);
                    }
                }
            }
        }
        __syncwarp();
    }
    clear_visited(w);
    return __shfl_sync(FULL_MASK, n_res, 0);
}

// Stable insertion sort, best first (sort_pool_descending; numba's mergesort for
// n > 64 is stable too, so both give this order).
__device__ void sort_descending_stable(float* scores, int* nodes, int n) {
    for (int i = 1; i < n; ++i) {
        float s = scores[i];
        int v = nodes[i];
        int j = i - 1;
        while (j >= 0 && scores[j] < s) {
            scores[j + 1] = scores[j];
            nodes[j + 1] = nodes[j];
            --j;
        }
        scores[j + 1] = s;
        nodes[j + 1] = v;
    }
}

// write_results + sort_ties_by_id: live nodes only, one entry per item, equal scores by
// ascending id, -1 / -inf padding. Lane 0.
__device__ void write_results(const Graph& g, Warp& w, int n, int k, long long* out_ids, float* out_scores) {
    int written = 0;
    for (int i = 0; i < n && written < k; ++i) {
        const int node = w.ent_val[i];
        if (g.node_state[node] != NODE_LIVE) continue;
        const int item = g.node_item[node];
        bool duplicate = false;
        for (int j = 0; j < written; ++j) {
            if (w.item_seen[j] == item) {
                duplicate = true;
                break;
            }
        }
        if (duplicate) continue;
        w.item_seen[written] = item;
        out_ids[written] = g.item_ids[item];
        out_scores[written] = w.ent_key[i];
        written += 1;
    }
    for (int i = 1; i < written; ++i) {
        const float s = out_scores[i];
        const long long v = out_ids[i];
        int j = i - 1;
        while (j >= 0 && (out_scores[j] < s || (out_scores[j] == s && out_ids[j] > v))) {
            out_scores[j + 1] = out_scores[j];
            out_ids[j + 1] = out_ids[j];
            --j;
        }
        out_scores[j + 1] = s;
        out_ids[j + 1] = v;
    }
    for (int i = written; i < k; ++i) {
        out_ids[i] = -1;
        out_scores[i] = NEG_INF;
    }
}

// Per-warp scratch layout, in 4-byte words (the launcher computes the same size):
//   query[dim] cand_key[cand_cap] cand_val[cand_cap] res_key[beam] res_val[beam]
//   ent_key[beam] ent_val[beam] block[max_degree0] block_score[max_degree0] item_seen[k]
//
// One warp per lane. Without lanes (use_lanes = 0) lane i is query i searched in subgraph
// `graph` with `k` and `ef`. With lanes (a category search: one lane per (query,
// category)), lane i searches subgraph lane_graph[i] (-1: none) for query lane_query[i]
// with beam lane_ef[i] and quota lane_k[i] (`k` is then the largest quota: the stride of
// the outputs, padded past the lane's own). With use_node_vec, node n reads embedding row
// node_vec[n] (category nodes share their item's row), else row n.
extern "C" __global__ void hnsw_search(
    const float* __restrict__ vectors, const unsigned short* __restrict__ vectors16,
    const int* __restrict__ links0, int width0,
    const int* __restrict__ upper_links, int width_up, const int* __restrict__ upper_next,
    const int* __restrict__ node_upper, const int* __restrict__ node_level,
    const unsigned char* __restrict__ node_state, const int* __restrict__ node_item,
    const long long* __restrict__ item_ids, const int* __restrict__ entry_node, int n_nodes, int n_graphs,
    const int* __restrict__ node_vec, int use_node_vec, int n_rows,
    int dim, int metric, int half,
    const float* __restrict__ queries, int n_queries, int graph, int k, int ef,
    int use_lanes, const int* __restrict__ lane_query, const int* __restrict__ lane_graph,
    const int* __restrict__ lane_k, const int* __restrict__ lane_ef, int n_lanes,
    const int* __restrict__ level_ef, int n_level_ef, int beam, int cand_cap,
    unsigned int* __restrict__ visited, long long visited_words, int* __restrict__ touched, int touched_cap,
    float* __restrict__ global_scratch, int scratch_words, int use_shared,
    long long* __restrict__ out_ids, float* __restrict__ out_scores, long long* __restrict__ out_stats) {
    extern __shared__ float shared_scratch[];
    const int warp_in_block = threadIdx.x >> 5;
    const int lane_index = blockIdx.x * (blockDim.x >> 5) + warp_in_block;
    if (lane_index >= (use_lanes ? n_lanes : n_queries)) return;  // whole warps only: blockDim.x is a multiple of 32
    const int q = use_lanes ? lane_query[lane_index] : lane_index;
    const int my_graph = use_lanes ? lane_graph[lane_index] : graph;
    const int my_k = use_lanes ? min(lane_k[lane_index], k) : k;
    const int my_ef = use_lanes ? lane_ef[lane_index] : ef;

    Graph g;
    g.vectors = vectors;
    g.vectors16 = vectors16;
    g.links0 = links0;
    g.upper_links = upper_links;
    g.upper_next = upper_next;
    g.node_upper = node_upper;
    g.node_level = node_level;
    g.node_state = node_state;
    g.node_item = node_item;
    g.node_vec = use_node_vec ? node_vec : nullptr;
    g.item_ids = item_ids;
    g.n_rows = n_rows;
    g.width0 = width0;
    g.width_up = width_up;
    g.n_nodes = n_nodes;
    g.dim = dim;
    g.metric = metric;

    // generic pointers: the same code runs on shared or global scratch
    float* base = use_shared ? shared_scratch + (long long)warp_in_block * scratch_words
                             : global_scratch + (long long)lane_index * scratch_words;
    const int max_degree0 = width0 - 1;
    Warp w;
    w.lane = threadIdx.x & 31;
    float* query = base;
    w.query = query;
    w.cand_key = query + dim;
    w.cand_val = (int*)(w.cand_key + cand_cap);
    w.res_key = (float*)(w.cand_val + cand_cap);
    w.res_val = (int*)(w.res_key + beam);
    w.ent_key = (float*)(w.res_val + beam);
    w.ent_val = (int*)(w.ent_key + beam);
    w.block = w.ent_val + beam;
    w.block_score = (float*)(w.block + max_degree0);
    w.item_seen = (int*)(w.block_score + max_degree0);
    w.visited = visited + (long long)lane_index * visited_words;
    w.visited_words = visited_words;
    w.touched = touched + (long long)lane_index * touched_cap;
    w.touched_cap = touched_cap;
    w.n_touched = 0;
    w.cand_cap = cand_cap;
    w.hops = 0;
    w.scored = 0;

    for (int i = w.lane; i < dim; i += 32) query[i] = queries[(long long)q * dim + i];
    __syncwarp();

    long long* my_ids = out_ids + (long long)lane_index * k;
    float* my_scores = out_scores + (long long)lane_index * k;
    const bool use_half = half != 0;
    int n_res = 0;
    const int entry = (my_graph >= 0 && my_graph < n_graphs) ? entry_node[my_graph] : -1;
    if (entry >= 0) {
        // descend_to_level: greedy (or level_ef-wide) search down to level 1
        const int top = node_level[entry];
        const float entry_score = warp_score(g, query, entry, use_half, w.lane);
        if (w.lane == 0) {
            w.ent_val[0] = entry;
            w.ent_key[0] = entry_score;
            w.scored += 1;
        }
        __syncwarp();
        int n_entries = 1;
        for (int level = top; level > 0; --level) {
            int width = level < n_level_ef ? level_ef[level] : 1;
            if (width < 1) width = 1;
            const int found = layer_search(g, w, level, width, false, n_entries, use_half);
            if (w.lane == 0) heap_drain_descending(w.res_key, w.res_val, found, w.ent_key, w.ent_val);
            __syncwarp();
            n_entries = found;
        }
        // level 0: beam of width ef, live results only
        n_res = layer_search(g, w, 0, my_ef, true, n_entries, use_half);
        if (w.lane == 0) heap_drain_descending(w.res_key, w.res_val, n_res, w.ent_key, w.ent_val);
        __syncwarp();
        if (use_half) {  // rescore_exact: float32 scores, re-sorted
            for (int i = 0; i < n_res; ++i) {
                const float s = warp_score(g, query, w.ent_val[i], false, w.lane);
                if (w.lane == 0) w.ent_key[i] = s;
            }
            __syncwarp();
            if (w.lane == 0) sort_descending_stable(w.ent_key, w.ent_val, n_res);
            __syncwarp();
        }
    }
    if (w.lane == 0) {
        write_results(g, w, n_res, my_k, my_ids, my_scores);
        for (int i = my_k; i < k; ++i) {
            my_ids[i] = -1;
            my_scores[i] = NEG_INF;
        }
        out_stats[2LL * lane_index] = w.hops;
        out_stats[2LL * lane_index + 1] = w.scored;
    }
}

// Gather embedding rows of candidate nodes into a dense [n, dim] matrix on the device
// (the input of a neural scorer: see rtindex/core/gpu/search.py, candidate_rows).
extern "C" __global__ void gather_rows(const float* __restrict__ vectors, int dim, const int* __restrict__ nodes, int n,
                                       float* __restrict__ out) {
    const long long total = (long long)n * dim;
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < total;
         t += (long long)gridDim.x * blockDim.x) {
        const long long r = t / dim;
        const int c = (int)(t - r * dim);
        out[t] = vectors[(long long)nodes[r] * dim + c];
    }
}
