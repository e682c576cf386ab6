"""RocksDB snapshots (installed as ``rtindex.snapshots``): the store (``store``: write,
verify, list, load, keep the last K), the periodic and on-demand snapshotter that copies
the index into shared memory and writes it from a helper process (``snapshotter``,
``writer_process``), and start-up restore (``restore``)."""
