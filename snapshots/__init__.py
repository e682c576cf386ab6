"""RocksDB snapshots (installed as ``rtindex.snapshots``): writer, reader, manifest and
restore. Built in the snapshot issue; nothing here yet."""
