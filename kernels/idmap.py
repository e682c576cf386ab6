"""External id (int64 >= 0) -> item slot (int32): open addressing with linear probing
and backward-shift deletion (no tombstones, so churn never degrades probing).

keys holds -1 in empty cells; the table size is a power of two.
"""

import numpy as np
from numba import njit

EMPTY = np.int64(-1)


@njit(nogil=True, cache=True)
def _hash(key, mask):
    z = np.uint64(key) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return np.int64(z & np.uint64(mask))


@njit(nogil=True, cache=True)
def _find_slot(keys, key, mask):
    """Position of key, or of the empty cell ending its probe run."""
    pos = _hash(key, mask)
    while keys[pos] != EMPTY and keys[pos] != key:
        pos = (pos + 1) & mask
    return pos


@njit(nogil=True, cache=True)
def idmap_get(keys, vals, ids, out):
    """out[i] = slot of ids[i], or -1 if absent."""
    mask = keys.shape[0] - 1
    for i in range(ids.shape[0]):
        pos = _find_slot(keys, ids[i], mask)
        out[i] = vals[pos] if keys[pos] != EMPTY else -1


@njit(nogil=True, cache=True)
def idmap_put(keys, vals, ids, slots):
    """Insert or overwrite ids[i] -> slots[i]; returns how many keys were new.
    The caller keeps the load factor below 1/2."""
    mask = keys.shape[0] - 1
    added = 0
    for i in range(ids.shape[0]):
        key = ids[i]
        pos = _find_slot(keys, key, mask)
        if keys[pos] == EMPTY:
            added += 1
        keys[pos] = key
        vals[pos] = slots[i]
    return added


@njit(nogil=True, cache=True)
def idmap_remove(keys, vals, ids):
    """Remove ids (absent ones are ignored); returns how many were removed."""
    mask = keys.shape[0] - 1
    removed = 0
    for i in range(ids.shape[0]):
        pos = _find_slot(keys, ids[i], mask)
        if keys[pos] == EMPTY:
            continue
        removed += 1
        # backward-shift: pull later entries of the probe run into the hole
        hole = pos
        nxt = (hole + 1) & mask
        while keys[nxt] != EMPTY:
            home = _hash(keys[nxt], mask)
            # move keys[nxt] into the hole unless its home lies cyclically in (hole, nxt]
            if (nxt > hole and (home <= hole or home > nxt)) or (nxt < hole and (home <= hole and home > nxt)):
                keys[hole] = keys[nxt]
                vals[hole] = vals[nxt]
                hole = nxt
            nxt = (nxt + 1) & mask
        keys[hole] = EMPTY
    return removed


@njit(nogil=True, cache=True)
def idmap_rehash(old_keys, old_vals, new_keys, new_vals):
    mask = new_keys.shape[0] - 1
    for i in range(old_keys.shape[0]):
        key = old_keys[i]
        if key == EMPTY:
            continue
        pos = _hash(key, mask)
        while new_keys[pos] != EMPTY:
            pos = (pos + 1) & mask
        new_keys[pos] = key
        new_vals[pos] = old_vals[i]
