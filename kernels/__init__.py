"""Hot loops of rtindex: numba kernels over plain arrays (``layout.GraphTables``).

Installed as ``rtindex.kernels``. Modules by algorithm step: ``beam_search`` (search),
``select`` (neighbor heuristic), ``insert`` (plan + connect), ``repair`` (delete
consolidation), ``idmap`` (id hash table).
"""
